"""Helpers for the bridge-networking tests: an image with socat (TCP and UDP
servers in containers), clients in the node and in `ext`, and a check that
nothing of a container's network is left."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from harness import Node, run
from mdtools import busybox_tree, docker_save

TOOLS = "mdtools:1"
EXPOSED = {"80/tcp": {}, "53/udp": {}}


def _add_binary(root: Path, binary: str) -> None:
    """binary and its shared libraries (ldd), as regular files (no absolute
    symlinks: the image loader refuses them)."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=10, check=True).stdout
    files = [binary]
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            files.append(parts[2])
        elif parts and parts[0].startswith("/"):
            files.append(parts[0])
    for f in files:
        dest = root / f.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.path.realpath(f), dest)
        os.chmod(dest, 0o755)


def tools_archive(dest: Path, extra: tuple[str, ...] = ()) -> Path:
    """A `docker save` archive of busybox + socat (+ the `extra` binaries and
    their libraries: the benches add iperf3), exposing 80/tcp and 53/udp."""
    archive = dest / "mdtools.tar"
    if archive.exists():
        return archive
    root = busybox_tree(dest / "rootfs")
    busybox = root / "bin/busybox"
    for applet in ("nc", "ping", "ip", "hostname", "wget", "httpd", "sleep", "cat", "timeout"):
        link = root / "bin" / applet
        if not link.exists():
            os.symlink("busybox", link)
    assert busybox.exists()
    for binary in (shutil.which("socat"), *extra):
        _add_binary(root, binary)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for entry in sorted(root.iterdir()):
            tar.add(entry, arcname=entry.name)
    archive.write_bytes(docker_save([raw.getvalue()], {"Cmd": ["sh"], "ExposedPorts": EXPOSED}, [TOOLS]))
    return archive


def load_tools(node: Node, archive: Path) -> None:
    node.md("load", "-i", archive)


# --- servers in containers, clients anywhere ------------------------------------

def tcp_server(reply: str) -> list[str]:
    """socat argv for a dual-stack TCP echo-once server on port 80."""
    return ["socat", "TCP6-LISTEN:80,ipv6only=0,fork,reuseaddr", f"SYSTEM:echo {reply}"]


def udp_server(reply: str) -> list[str]:
    """A forked child per peer on a socket connected to that peer, sending
    `reply` and reading nothing (-U). Without -U the child first writes the
    request to `echo`, which never reads it; when echo has already exited,
    that write fails (EPIPE) and the child exits before it sends the reply:
    1 reply in 10 was lost at load 4-5 (the flaky UDP checks of
    test_published_ports_answer_everywhere). (With UDP-RECVFROM the children
    share the listening socket, and one still winding down swallows other
    peers' datagrams for seconds. Clients still ask up to 3 times: a
    datagram from another peer that comes before the forking parent has
    bound its next socket goes to the last peer's child, or nowhere.)"""
    return ["socat", "-U", "UDP6-LISTEN:53,ipv6only=0,fork,reuseaddr", f"SYSTEM:echo {reply}"]


def run_server(node: Node, name: str, *opts: str, tcp="hello", udp=None, env=None) -> str:
    """A detached container serving TCP 80 (and UDP 53 when udp is given)."""
    cmd = " & ".join(" ".join(f"'{a}'" for a in argv)
                     for argv in [tcp_server(tcp)] + ([udp_server(udp)] if udp else []))
    cid = node.md("run", "-d", "--name", name, *opts, TOOLS, "sh", "-c", cmd + " & wait",
                  env=env).stdout.strip()
    return cid


def _target(host: str, port: int, proto: str) -> str:
    addr = f"[{host}]" if ":" in host else host
    return f"{proto.upper()}:{addr}:{port}" + (",connect-timeout=2" if proto == "tcp" else "")


def _ask(send, host: str, port: int, proto: str, tries: int) -> str:
    """A socat client's answer from host:port, tried `tries` times ("" if nothing);
    `send(argv, input)` runs the client where the caller wants it."""
    target = _target(host, port, proto)
    # UDP: stdin's EOF starts socat's close (-t, 0.5 s by default), and no
    # EOF comes back: the client always waits -T after the reply. 2 s covers
    # a reply slowed by load; namespace clients use udp_ask (no wait).
    wait = ["-T2"] if proto == "tcp" else ["-T2", "-t2"]
    for i in range(tries):
        out = send(["socat", *wait, "-", target], "ping\n" if proto == "udp" else "")
        if out.stdout.strip():
            return out.stdout.strip()
        if i + 1 < tries:
            time.sleep(0.1)
    return ""


UDP_ASK = """import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[3]))
if int(sys.argv[4]):
    s.bind(("", int(sys.argv[4])))
s.sendto(b"ping\\n", (sys.argv[1], int(sys.argv[2])))
try:
    print(s.recv(512).decode().strip())
except OSError:
    pass
"""


def udp_ask(ns: str, host: str, port: int, tries: int = 1, timeout: float = 3.0, sport: int = 0) -> str:
    """One datagram from namespace `ns`, the first answer ("" if none within
    timeout): returns as soon as it comes, unlike socat, which has no EOF to
    end on. `sport`: from that source port (one conntrack entry for all
    tries) instead of a new random one each time."""
    for i in range(tries):
        out = run(["nsenter", f"--net={ns}", "--", sys.executable, "-c", UDP_ASK, host, str(port),
                   str(timeout), str(sport)], check=False, timeout=timeout + 20).stdout.strip()
        if out:
            return out
    return ""


def client(ns: str, host: str, port: int, proto: str = "tcp", tries: int = 1) -> str:
    """What a client in namespace `ns` reads from host:port ("" if nothing)."""
    if proto == "udp":
        return udp_ask(ns, host, port, tries)
    return _ask(lambda argv, data: run(["nsenter", f"--net={ns}", "--", *argv], check=False,
                                       input=data, timeout=20), host, port, proto, tries)


def in_container(node: Node, ref: str, host: str, port: int, proto: str = "tcp", tries: int = 1) -> str:
    """The same client run inside a container (exec socat)."""
    return _ask(lambda argv, data: node.md("exec", "-i", ref, *argv, check=False, input=data,
                                           timeout=20), host, port, proto, tries)


def inspect(node: Node, ref: str) -> dict:
    return json.loads(node.md("inspect", ref).stdout)[0]


def ext_server(node: Node, port: int = 9000):
    """An upstream TCP server in `ext` that answers with the client's address."""
    return node.popen(["socat", f"TCP4-LISTEN:{port},fork,reuseaddr", "SYSTEM:echo $SOCAT_PEERADDR"],
                      ns=node.ext_netns, start_new_session=True, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)


def stop_server(proc) -> None:
    import signal
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=5)


def network_traces(node: Node, cid: str) -> list[str]:
    """What of container cid's network the node still holds: veth (alias),
    rules (comment), leases (files naming it), netns pin, CNI cache entry."""
    found = []
    for link in node.links():
        if cid in (link.get("ifalias") or ""):
            found.append(f"link {link['ifname']}")
    rules = node.iptables_save() + node.nft_ruleset()
    if cid in rules:
        found.append("firewall rules")
    ipam = node.state_root / "ipam"
    if ipam.is_dir():
        for p in ipam.rglob("*"):
            if p.is_file() and cid in p.read_text(errors="replace"):
                found.append(f"lease {p.name}")
    if (node.run_root / "netns" / cid).exists():
        found.append("pinned netns")
    cache = node.cni_cache / "results"
    if cache.is_dir() and any(cid in p.name for p in cache.iterdir()):
        found.append("cni cache entry")
    return found
