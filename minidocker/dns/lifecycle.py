"""When a network's DNS server runs, and where containers find it.

Daemonless: attach and detach call follow(net); the server is started with
the network's first endpoint, stopped with its last, and started again by
any attach/detach that finds it dead. Its pid file (run root, dns/<id>.pid)
holds the pid and the process's start time, so a reused pid is never taken
for it.

Where: the bridge's gateway address, port 53, as podman's aardvark-dns
(Docker's 127.0.0.11 needs a DNAT inside every container's namespace; the
gateway is already each container's way out, and exists exactly while the
network has containers). Served: native user networks, as Docker's embedded
DNS (the default bridge keeps the host's resolvers and has no names).
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from minidocker import paths, records, state
from minidocker.errors import MinidockerError
from minidocker.network import networks, store

START_TIMEOUT = 15
#: The containers' search domain, answered locally (podman's is dns.podman):
#: resolvers that try the search list first (busybox) find names through it.
DOMAIN = "dns.minidocker"


def address(net: networks.Network) -> str:
    """The server's address ("" when the network is not served)."""
    if net.from_file or not net.names_containers:
        return ""
    return next((c.gateway for c in net.ipam if c.gateway and ":" not in c.gateway), "")


def _pidfile(net) -> str:
    return os.path.join(paths.dns_dir(), f"{net.id}.pid")


def _lock(net):
    return state.locked(Path(paths.dns_dir()) / f"{net.id}.lock")


def running(net) -> int:
    """The live server's pid, 0 when there is none."""
    try:
        with open(_pidfile(net)) as fh:
            pid, start = (int(x) for x in fh.read().split()[:2])
    except (OSError, ValueError):
        return 0
    return pid if start and records.start_time(pid) == start else 0


def _start(net, addr: str) -> None:
    import subprocess
    state.ensure_dir(paths.dns_dir())
    argv = [sys.executable, "-I", "-m", "minidocker.dns.server", net.id, addr, _pidfile(net)]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, timeout=START_TIMEOUT,
                              close_fds=True, start_new_session=True, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MinidockerError(f"cannot start the DNS server of network {net.name}: {exc}") from None
    if proc.returncode:
        raise MinidockerError(" ".join(proc.stderr.split()) or
                              f"the DNS server of network {net.name} exited {proc.returncode}")


def _stop(net) -> None:
    pid = running(net)
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 5
        while records.start_time(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
    try:
        os.unlink(_pidfile(net))
    except FileNotFoundError:
        pass


def follow(net: networks.Network) -> None:
    """Run the server while the network has endpoints, not after."""
    addr = address(net)
    if not addr:
        return
    with _lock(net):
        if store.has_endpoints(net):
            if not running(net):
                _start(net, addr)
        else:
            _stop(net)


def reap() -> list[str]:
    """`system prune`: stop the servers of networks left without endpoints
    (endpoint records removed by GC, not by detach); the names of those networks."""
    base = Path(paths.dns_dir())
    gone = []
    for entry in sorted(os.listdir(base)) if base.is_dir() else []:
        if entry.endswith(".pid"):
            net = networks.by_id(entry[:-4]) or networks.Network(name=entry[:-4], id=entry[:-4])
            with _lock(net):
                if not store.has_endpoints(net):
                    _stop(net)
                    gone.append(net.name)
    return gone


def point_resolv_conf(record: dict, net: networks.Network) -> None:
    """The container's resolv.conf names its network's server (unless --dns
    chose others): written before the container runs, bind-mounted after."""
    addr = address(net)
    if not addr or (record.get("HostConfig") or {}).get("Dns"):
        return
    path = Path(paths.container_dir(record["Id"])) / "resolv.conf"
    try:
        with open(path) as fh:
            lines = [l.split() for l in fh.read().splitlines()]
    except OSError:
        lines = []
    search = [DOMAIN] + [d for l in lines if l[:1] == ["search"] for d in l[1:] if d != DOMAIN]
    options = [" ".join(l) for l in lines if l[:1] == ["options"]]
    with open(path, "w") as fh:   # in place: the same inode stays bind-mounted
        fh.write(f"nameserver {addr}\nsearch {' '.join(search)}\n"
                 + "".join(o + "\n" for o in options))
