"""`scripts/bench scale`: does one more container cost the same at 500 as at 1?

Starts --containers (default 500) containers one after another, each
`run -d -p <port>:80 busybox httpd -f -p 80` on its own host port, and times
for every one: the `run -d -p`, and new TCP connections through the
published port once the container answers (an HTTP request by curl, its
own `time_total`, so no process start is counted; the median of 3). Then
it removes them one by one with `rm -f`, newest first, timing each.

The goal compares containers 1-20 with the last 20 (<= 1.15x). Timed one
after the other, the two ends are 10-20 minutes apart and the ratio
follows the machine's load rather than the containers (on a shared 2-core
machine a sequential run swung from 0.72x to 6.7x). So minidocker runs on
two nodes (throwaway namespaces, each with a private state root,
bench/soak.py's `Soak`): the big node gets containers 1 to N-20, then the
small node's containers 1-20 and the big node's last 20 start in turn,
and leave in turn, so each ratio compares samples of the same minutes
("side by side"). The big node's own first 20 against its last 20 are
printed too ("sequential"). `rm -f` of the newest container is the one done
with the most containers around, so its "last 20" are the first 20
removals.

Docker runs the same sequence, sequentially (one daemon), in a namespace
of its own (bench/peers.py), when it can be started here; its published
ports go through its rules and, on 127.0.0.1, its userland proxy.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.netns import BenchNetns, unmount_under
from bench.soak import Soak, remove_cgroup_parent

BASE_PORT = 21000
WINDOW = 20
GOAL = 1.15
READY_TIMEOUT = 10.0
DEFAULT_MAX = 250   # of the default bridge's 253 addresses
USER_SUBNET = "10.250.0.0/16"
CONNECTIONS = 3     # new connections timed per container (their median)


def _curl(ns: BenchNetns, port: int) -> float | None:
    """Seconds of one HTTP request to 127.0.0.1:port (curl's own clock), None if no answer."""
    proc = ns.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
                   "--max-time", "3", f"http://127.0.0.1:{port}/"], timeout=10, check=False)
    code, _, total = proc.stdout.strip().partition(" ")
    return float(total) if code not in ("", "000") else None


def first_connection(ns: BenchNetns, port: int) -> float | None:
    """Wait until the port answers, then the median of CONNECTIONS new
    connections (one sample of a sub-millisecond step is mostly noise)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while _curl(ns, port) is None:
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)
    samples = [x for x in (_curl(ns, port) for _ in range(CONNECTIONS)) if x is not None]
    return statistics.median(samples) if samples else None


def _med(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) * 1000 if xs else None


class Series:
    """Per-container samples of one runtime: run, connect, rm (seconds)."""

    def __init__(self, name: str):
        self.name = name
        self.run: list[float] = []
        self.connect: list[float | None] = []
        self.rm: list[float] = []   # in removal order: newest (most containers) first

    def rows(self) -> list[tuple[str, float | None, float | None]]:
        """(operation, median of containers 1-20, median of the last 20)."""
        n = len(self.run)
        return [("run -d -p", _med(self.run[:WINDOW]), _med(self.run[-WINDOW:])),
                ("new connection via published port", _med(self.connect[:WINDOW]),
                 _med(self.connect[-WINDOW:])),
                ("rm -f", _med(self.rm[-WINDOW:]), _med(self.rm[:WINDOW]))][: 3 if n else 0]


class SideBySide(Series):
    """Containers 1-20 on a node of their own against the last 20 of the
    big node, each step taken in turn on one then the other: both halves
    of a ratio see the same load at the same minute."""

    def __init__(self, name: str, small: Series, big: Series):
        super().__init__(name)
        self.small, self.big = small, big

    def rows(self) -> list[tuple[str, float | None, float | None]]:
        s, b = self.small, self.big
        return [("run -d -p", _med(s.run), _med(b.run[-WINDOW:])),
                ("new connection via published port", _med(s.connect), _med(b.connect[-WINDOW:])),
                ("rm -f", _med(s.rm), _med(b.rm[:WINDOW]))]


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


class Node:
    """One minidocker node: a throwaway namespace with a private state
    root (bench/soak.py's `Soak`), its containers and their samples."""

    def __init__(self, ns: BenchNetns, tmp: Path, backend: str, net: list[str], series: Series):
        self.ns, self.net, self.series = ns, net, series
        tmp.mkdir(mode=0o700)
        self.dir = tmp
        self.soak = Soak(ns, tmp, 0)
        self.soak.env["MINIDOCKER_FIREWALL"] = backend
        self.ids: list[str] = []
        self.port = BASE_PORT

    def prepare(self) -> None:
        self.soak.mdrun("run", "--rm", "--network", "none", "busybox", "true")  # builds the image
        if self.net:
            self.soak.mdrun("network", "create", "--subnet", USER_SUBNET, self.net[1])

    def start_one(self) -> None:
        port, self.port = self.port, self.port + 1
        secs, proc = timed(lambda: self.soak.mdrun("run", "-d", *self.net, "-p", f"{port}:80", "busybox",
                                                   "httpd", "-f", "-p", "80"))
        self.ids.append(proc.stdout.strip())
        self.series.run.append(secs)
        self.series.connect.append(first_connection(self.ns, port))

    def remove_one(self) -> None:
        secs, _ = timed(lambda: self.soak.mdrun("rm", "-f", self.ids[-1]))
        self.ids.pop()
        self.series.rm.append(secs)

    def clean(self) -> list[str]:
        """Remove every container of the node's state root, also one whose
        `run` never printed its id (killed by a timeout), then its network;
        a shim still there is killed, with its container's processes, which
        leaves their mounts: those are unmounted and returned (what the
        runtime leaked)."""
        soak = self.soak
        listed = subprocess.run(self.ns.cmd([soak.md, "ps", "-aq"]), env=soak.env, capture_output=True,
                                text=True, timeout=120).stdout.split()
        ids = list(dict.fromkeys(self.ids + listed))
        if ids:
            subprocess.run(self.ns.cmd([soak.md, "rm", "-f", *ids]), env=soak.env,
                           capture_output=True, timeout=900)
        if self.net:
            subprocess.run(self.ns.cmd([soak.md, "network", "rm", self.net[1]]), env=soak.env,
                           capture_output=True, timeout=60)
        for proc in soak.shims():
            proc.kill()
        for pid in soak.container_processes():   # a killed shim's container outlives it
            os.kill(pid, signal.SIGKILL)
        return unmount_under(str(self.dir))


def run_minidocker(count: int, backend: str, tmp: Path, notes: list[str]) -> list[Series]:
    """(long: one sequence, set-up to clean-up, in two namespaces.) The big
    node gets containers 1 to count-20 one after another; then the small
    node's containers 1-20 and the big node's last 20 start in turn, and
    leave in turn (newest first), so the side-by-side ratio compares
    samples of the same minutes. The big node's own first 20 give the
    sequential ratio, which drifts with the machine's load. The default
    bridge (a /24, as Docker's is a /16) holds DEFAULT_MAX containers;
    more go on a user network with a /16, whose containers find each other
    by name through its DNS server (an attach rewrites only its own hosts
    file); both nodes use the same kind of network."""
    net = ["--network", "scale"] if count > DEFAULT_MAX else []
    label = f"minidocker ({backend})" + (" user /16" if net else "")
    big = Series(label + " sequential")
    small = Series(label + " first 20")
    with BenchNetns() as big_ns, BenchNetns() as small_ns:
        nodes = [Node(big_ns, tmp / "big", backend, net, big), Node(small_ns, tmp / "small", backend, net, small)]
        b, s = nodes
        try:
            for node in nodes:
                node.prepare()
            pairs = min(WINDOW, count)
            for i in range(count - pairs):
                b.start_one()
                _progress(label, i + 1, count)
            for i in range(pairs):   # in turn; who goes first alternates
                for node in (nodes if i % 2 else nodes[::-1]):
                    node.start_one()
                _progress(label, count - pairs + i + 1, count)
            for i in range(pairs):
                for node in (nodes if i % 2 else nodes[::-1]):
                    node.remove_one()
            while b.ids:
                b.remove_one()
        finally:
            for node in nodes:
                notes.extend(f"left behind: mount {m}" for m in node.clean())
    return [SideBySide(label + " side by side", small, big), big]


def run_docker(count: int, notes: list[str]) -> Series | None:
    from bench.peers import Docker, PeerUnavailable
    series = Series("docker 20.10 sequential")
    try:
        with BenchNetns() as ns, Docker(ns) as docker:
            ids: list[str] = []
            try:
                for i in range(count):
                    port = BASE_PORT + i
                    secs, proc = timed(lambda: docker.run(["run", "-d", "-p", f"{port}:80", "busybox",
                                                           "httpd", "-f", "-p", "80"]))
                    ids.append(proc.stdout.strip())
                    series.run.append(secs)
                    series.connect.append(first_connection(ns, port))
                    _progress(series.name, i + 1, count)
                while ids:
                    secs, _ = timed(lambda: docker.run(["rm", "-f", ids[-1]]))
                    ids.pop()
                    series.rm.append(secs)
            finally:
                if ids:
                    docker.run(["rm", "-f", *ids], check=False, timeout=600)
    except PeerUnavailable as exc:
        notes.append(f"docker: skipped ({exc})")
        return None
    return series


def _progress(name: str, done: int, count: int) -> None:
    if done % 50 == 0 or done == count:
        print(f"  {name}: {done}/{count} containers", file=sys.stderr, flush=True)


def report(all_series: list[Series], count: int) -> None:
    first = f"1-{min(WINDOW, count)}"
    last = f"{max(count - WINDOW + 1, 1)}-{count}"
    print(f"\nper-container cost, medians (ms): containers {first} vs {last}; goal <= {GOAL}x")
    width = max(len(s.name) for s in all_series) if all_series else 7
    header = f"{'runtime':{width}} {'operation':36} {first:>9} {last:>9} {'ratio':>7}  goal"
    print(header)
    print("-" * len(header))
    for s in all_series:
        for op, lo, hi in s.rows():
            r = f"{hi / lo:6.2f}x" if lo and hi else "    n/a"
            ok = "" if not (lo and hi) else ("ok" if hi / lo <= GOAL else "MISSED")
            f = lambda v: f"{v:9.1f}" if v is not None else "      n/a"  # noqa: E731
            print(f"{s.name:{width}} {op:36} {f(lo)} {f(hi)} {r:>7}  {ok}")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--containers", type=int, default=500, help="how many (default 500)")
    ap.add_argument("--backend", choices=["iptables", "nftables"], action="append",
                    help="minidocker's firewall backend (repeatable; default both)")
    ap.add_argument("--no-docker", action="store_true", help="skip Docker's curve")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench scale: run as root (namespaces, mounts, rules)", file=sys.stderr)
        return 2
    if args.containers < 1 or args.containers > 20000:
        print(f"bench scale: --containers {args.containers}: give 1 to 20000", file=sys.stderr)
        return 2
    for tool in ("curl", "nsenter", "ip"):
        if not shutil.which(tool):
            print(f"bench scale: {tool} is missing", file=sys.stderr)
            return 2
    started, load = time.monotonic(), os.getloadavg()[0]
    out, notes = [], []
    for backend in args.backend or ["iptables", "nftables"]:
        tmp = Path(tempfile.mkdtemp(prefix="mdscale-"))
        os.chmod(tmp, 0o700)
        try:
            out.extend(run_minidocker(args.containers, backend, tmp, notes))
        finally:
            notes.extend(f"left behind: mount {m}" for m in unmount_under(str(tmp)))
            for node in ("big", "small"):
                for problem in remove_cgroup_parent(tmp / node / "lib"):   # Soak's state root
                    notes.append(f"left behind: {problem}")
            shutil.rmtree(tmp, ignore_errors=True)
    if not args.no_docker:
        docker = run_docker(args.containers, notes)
        if docker:
            out.append(docker)
    report(out, args.containers)
    for n in notes:
        print(f"note: {n}")
    print(f"\n({time.monotonic() - started:.0f}s; load average {load:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end)")
    return 0
