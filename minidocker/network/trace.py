"""`minidocker trace`: one real probe (a TCP connection attempt or a UDP
datagram) sent from the source's network namespace while the kernel traces
it. This module owns the short-lived tracing table `inet
minidocker-trace-<pid>`: at the front of prerouting and output (priority
-350, before raw, conntrack and NAT) it sets `meta nftrace` on the probe's
own flow only (source address and port, destination address and port), so
other traffic and other traces do not mix in; `nft -a monitor` reports
every chain the packet then crosses, the iptables backend's included
(Debian's iptables is iptables-nft). The table is added after the monitor
starts and deleted before it stops, and these two events bracket the
trace; it goes on every exit path (error, timeout, Ctrl-C, SIGTERM, SIGHUP), and
a table left by a killed trace (its pid gone) is removed by the next trace;
the monitor dies with the trace.
tracepath.py turns the events into words.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import select
import signal
import socket
import subprocess
import time

from minidocker import records
from minidocker.errors import MinidockerError, NotFound
from minidocker.network import kernel, tracepath, wiring

TABLE_PREFIX = "minidocker-trace-"
PROTOS = ("tcp", "udp")
NFT_TIMEOUT = 10
MONITOR_WAIT = 2.0
STOPS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


class Endpoint:
    """One end of the probe: an address and port, the namespace it is sent
    from (source) and what it is, in words."""

    def __init__(self, addr: str = "", port: int = 0, netns: str = "", what: str = "", container: dict | None = None):
        self.addr, self.port, self.netns, self.what, self.container = addr, port, netns, what, container

    def view(self) -> dict:
        return {"address": self.addr, "port": self.port, "namespace": self.netns or "host",
                "what": self.what, "container": self.container}


def _endpoints(model: dict) -> list[tuple[dict, dict]]:
    return [(n, e) for n in model["networks"] for e in n["endpoints"]]


def _running(ref: str, flag: str) -> dict:
    try:
        rec = records.find(ref)
    except NotFound:
        raise MinidockerError(f"{flag} {ref!r}: no such container (accepted: host, a container "
                              "name or id, or an address)") from None
    rec = records.refresh(rec)
    if not rec["State"].get("Running"):
        raise MinidockerError(f"{flag} {ref!r}: container {rec['Name'].lstrip('/')} is not running")
    return rec


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def source(model: dict, live: wiring.Live, ref: str) -> Endpoint:
    """--from: host, a running container, or an address held in a namespace
    wired to this one by a veth (a container, or a neighbour such as a
    client outside the node)."""
    if ref == "host":
        return Endpoint(what="the host")
    if not _is_ip(ref):
        rec = _running(ref, "--from")
        name = rec["Name"].lstrip("/")
        return Endpoint(netns=(rec.get("NetworkSettings") or {}).get("SandboxKey", ""),
                        what=f"container {name}", container={"id": rec["Id"], "name": name})
    for _n, e in _endpoints(model):
        if ref in (e["ipv4"], e["ipv6"]) and not e["stale"]:
            c = e["container"]
            return Endpoint(addr=ref, netns=e["namespace"], what=f"container {c['name']}",
                            container={"id": c["id"], "name": c["name"]})
    if live.host.holding(ref):
        return Endpoint(addr=ref, what="the host")
    wired = live.host.veth_peer_nsids()
    for path in _named_namespaces():   # wired to this one first: that check is the cheap one
        if live.host.netnsid_of(path) in wired and live.ns(path).holding(ref):
            return Endpoint(addr=ref, netns=path, what=f"{ref} in namespace {os.path.basename(path)}")
    raise MinidockerError(f"--from {ref!r}: no namespace wired to this host holds that address "
                          "(accepted: host, a container name or id, or an address in a namespace "
                          "linked to this host by a veth)")


def _named_namespaces() -> list[str]:
    """`ip netns` namespaces: where a neighbour of this host may live."""
    base = "/run/netns"
    try:
        return [os.path.join(base, n) for n in sorted(os.listdir(base))]
    except OSError:
        return []


def destination(model: dict, ref: str, src: Endpoint) -> Endpoint:
    """--to IP:PORT, [IPv6]:PORT or CONTAINER:PORT."""
    host, sep, port = ref.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise MinidockerError(f"--to {ref!r}: expected IP:PORT, [IPv6]:PORT or CONTAINER:PORT "
                              "with a port from 1 to 65535")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if _is_ip(host):
        return Endpoint(addr=host, port=int(port), what=host)
    rec = _running(host, "--to")
    name = rec["Name"].lstrip("/")
    eps = [(n, e) for n, e in _endpoints(model) if e["container"]["id"] == rec["Id"] and e["ipv4"]]
    shared = [(n, e) for n, e in eps if src.container and any(
        o["container"]["id"] == src.container["id"] for o in n["endpoints"])]
    if not eps:
        raise MinidockerError(f"--to {ref!r}: container {name} has no address on a network")
    _n, e = (shared or eps)[0]
    return Endpoint(addr=e["ipv4"], port=int(port), what=f"{name}:{port}",
                    container={"id": rec["Id"], "name": name})


# --- the tracing table ------------------------------------------------------------------

def _nft(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True,
                              timeout=NFT_TIMEOUT, check=False)
    except FileNotFoundError:
        raise MinidockerError("trace needs nft (Debian package nftables)") from None


def sweep() -> list[str]:
    """Delete tracing tables whose trace is gone (killed before its cleanup)."""
    gone = []
    for line in _nft("list", "tables").stdout.splitlines():
        name = line.split()[-1] if line.startswith("table inet ") else ""
        pid = name[len(TABLE_PREFIX):] if name.startswith(TABLE_PREFIX) else ""
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _nft("delete", "table", "inet", name)
            gone.append(name)
    return gone


def _table_batch(table: str, match: str) -> str:
    hooks = [f"add chain inet {table} {hook} {{ type filter hook {hook} priority -350; policy accept; }}\n"
             f"add rule inet {table} {hook} {match} meta nftrace set 1\n" for hook in ("prerouting", "output")]
    return f"add table inet {table}\n" + "".join(hooks)


def _die_with_parent() -> None:
    """In the monitor's child: killed with the trace, even a SIGKILLed one;
    the signals the trace blocks while starting it are the child's again
    (a blocked mask is inherited, and SIGTERM must stop the monitor)."""
    from minidocker import syscalls
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)


class Monitor:
    """`nft -a monitor` as a child: its lines read unbuffered, each wait
    bounded by a deadline."""

    def __init__(self):
        self.proc = subprocess.Popen(["nft", "-a", "monitor"], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        self.buf, self.lines = b"", []

    def until(self, marker: str, timeout: float) -> bool:
        """Read lines until one contains `marker`; False on timeout."""
        fd, deadline = self.proc.stdout.fileno(), time.monotonic() + timeout
        start = len(self.lines)
        while True:
            if any(marker in l for l in self.lines[start:]):
                return True
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return False
            chunk = os.read(fd, 65536)
            if not chunk:
                return False
            self.buf += chunk
            *done, self.buf = self.buf.split(b"\n")
            self.lines += [d.decode(errors="replace") for d in done]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=2)
        self.proc.stdout.close()


# --- the probe -------------------------------------------------------------------------

def _socket(src: Endpoint, dst: Endpoint, proto: str) -> socket.socket:
    """The probe's socket, made in the source's namespace and bound to the
    address its route to the destination uses, so the flow is known before
    the first packet."""
    fam = socket.AF_INET6 if ":" in dst.addr else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    router, sock = kernel.in_namespace(src.netns, lambda: (socket.socket(fam, socket.SOCK_DGRAM),
                                                            socket.socket(fam, kind)))
    try:
        with router:
            router.connect((dst.addr, dst.port))
            src.addr = router.getsockname()[0]
        sock.bind((src.addr, 0))
        src.port = sock.getsockname()[1]
    except OSError as exc:
        sock.close()
        raise MinidockerError(f"--to {dst.addr}:{dst.port}: no route from {src.what} ({exc.strerror})") from None
    return sock


def _probe(sock: socket.socket, dst: Endpoint, proto: str, timeout: float) -> str:
    """connected | refused | timeout | unreachable (TCP); answered | refused
    | timeout | unreachable (UDP)."""
    sock.setblocking(False)
    codes = {errno.ECONNREFUSED: "refused", errno.EHOSTUNREACH: "unreachable",
             errno.ENETUNREACH: "unreachable", errno.ETIMEDOUT: "timeout"}
    if proto == "tcp":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        err = sock.connect_ex((dst.addr, dst.port))
        if err not in (0, errno.EINPROGRESS):
            return codes.get(err, os.strerror(err))
        if not select.select([], [sock], [], timeout)[1]:
            return "timeout"
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return "connected" if err == 0 else codes.get(err, os.strerror(err))
    sock.connect((dst.addr, dst.port))
    sock.send(b"minidocker trace\n")
    if not select.select([sock], [], [], timeout)[0]:
        return "timeout"
    try:
        sock.recv(2048)
        return "answered"
    except OSError as exc:
        return codes.get(exc.errno, exc.strerror)


def _synced(monitor: Monitor, table: str) -> None:
    """Wait until the monitor reports our table's events: it may subscribe
    after the table was added, so a marker chain is added until one shows."""
    if monitor.until(f"add table inet {table}", 0.3):
        return
    for n in range(int(MONITOR_WAIT / 0.2)):
        _nft("add", "chain", "inet", table, f"sync{n}")
        if monitor.until(f"add chain inet {table} sync", 0.2):
            return
    raise MinidockerError("nft monitor did not start in time: nothing was traced")


def _raise_on_term(signum, _frame):
    raise SystemExit(128 + signum)


def run(src_ref: str, dst_ref: str, proto: str = "tcp", timeout: float = 1.0) -> dict:
    """The whole trace: resolve both ends, trace one probe, explain it.
    (long: the tracing table's whole life in one try/finally, so that no
    exit path can skip its removal)"""
    if proto not in PROTOS:
        raise MinidockerError(f"--proto {proto!r}: accepted are tcp, udp")
    if not 0 < timeout <= 60:
        raise MinidockerError(f"--timeout {timeout}: accepted are 0 < seconds <= 60")
    live = wiring.Live()
    model = wiring.build(live=live, cluster=False)
    src = source(model, live, src_ref)
    dst = destination(model, dst_ref, src)
    sweep()
    table = f"{TABLE_PREFIX}{os.getpid()}"
    # Ctrl-C too, explicitly: a process started with SIGINT ignored (a
    # background job of a non-interactive shell) gets no KeyboardInterrupt
    # from Python, and the table would then outlive an interrupted trace.
    old = {sig: signal.signal(sig, _raise_on_term) for sig in (signal.SIGTERM, signal.SIGHUP)}
    old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    sock = monitor = None
    added = False
    try:
        sock = _socket(src, dst, proto)
        l3 = "ip6" if ":" in dst.addr else "ip"
        match = (f"{l3} saddr {src.addr} {l3} daddr {dst.addr} meta l4proto {proto} "
                 f"th sport {src.port} th dport {dst.port}"
                 + (" tcp flags & (syn | ack) == syn" if proto == "tcp" else ""))  # the first packet only
        signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)   # no window where the child has no owner
        try:
            monitor = Monitor()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
        added = True
        res = _nft("-f", "-", stdin=_table_batch(table, match))
        if res.returncode != 0:
            raise MinidockerError(f"cannot add the tracing table: {res.stderr.strip()[:200]}")
        _synced(monitor, table)
        started = time.monotonic()
        result = _probe(sock, dst, proto, timeout)
        elapsed = time.monotonic() - started
        sock.close()
        sock = None
        _nft("delete", "table", "inet", table)
        added = False
        monitor.until(f"delete table inet {table}", MONITOR_WAIT)
        events = tracepath.events(monitor.lines, table, src.addr, src.port)
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)   # a second Ctrl-C cannot cut the cleanup short
        try:
            if sock is not None:
                sock.close()
            if added:
                _nft("delete", "table", "inet", table)
            if monitor is not None:
                monitor.stop()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
    return tracepath.explain(model, live.rules, events, src.view(), dst.view(), proto,
                             {"result": result, "ms": round(elapsed * 1000, 1), "timeout": timeout,
                              "flow": f"{src.addr}:{src.port} -> {dst.addr}:{dst.port}/{proto}",
                              "table": f"inet {table}"})
