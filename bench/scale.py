"""`scripts/bench scale`: does one more container cost the same at 500 as at 1?

Starts --containers (default 500) containers one after another, each
`run -d -p <port>:80 busybox httpd -f -p 80` on its own host port, and times
for every one: the `run -d -p`, and one new TCP connection (an HTTP request
by curl, its own `time_total`, so no process start is counted) through the
published port once the container answers. Then it removes them one by one
with `rm -f`, newest first, timing each. The report compares the first 20
(few containers exist) with the last 20 (--containers exist): the ratio of
the medians beside the goal (<= 1.15x). `rm -f` of the newest container is
the one done with the most containers around, so its "last 20" are the
first 20 removals.

Docker runs the same sequence in a namespace of its own (bench/peers.py),
when it can be started here; its published ports go through its rules and,
on 127.0.0.1, its userland proxy. minidocker runs in a throwaway namespace
with a private state root (bench/soak.py's `Soak`), removed at the end.
"""
from __future__ import annotations

import argparse
import os
import shutil
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


def _curl(ns: BenchNetns, port: int) -> float | None:
    """Seconds of one HTTP request to 127.0.0.1:port (curl's own clock), None if no answer."""
    proc = ns.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
                   "--max-time", "3", f"http://127.0.0.1:{port}/"], timeout=10, check=False)
    code, _, total = proc.stdout.strip().partition(" ")
    return float(total) if code not in ("", "000") else None


def first_connection(ns: BenchNetns, port: int) -> float | None:
    """Wait until the port answers, then time one new connection."""
    deadline = time.monotonic() + READY_TIMEOUT
    while _curl(ns, port) is None:
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)
    return _curl(ns, port)


class Series:
    """Per-container samples of one runtime: run, connect, rm (seconds)."""

    def __init__(self, name: str):
        self.name = name
        self.run: list[float] = []
        self.connect: list[float] = []
        self.rm: list[float] = []   # in removal order: newest (most containers) first

    def rows(self) -> list[tuple[str, float | None, float | None]]:
        """(operation, median of containers 1-20, median of the last 20)."""
        def med(xs):
            xs = [x for x in xs if x is not None]
            return statistics.median(xs) * 1000 if xs else None
        n = len(self.run)
        return [("run -d -p", med(self.run[:WINDOW]), med(self.run[-WINDOW:])),
                ("new connection via published port", med(self.connect[:WINDOW]),
                 med(self.connect[-WINDOW:])),
                ("rm -f", med(self.rm[-WINDOW:]), med(self.rm[:WINDOW]))][: 3 if n else 0]


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run_minidocker(count: int, backend: str, tmp: Path) -> Series:
    """(long: one sequence, set-up to clean-up, in its namespace.) The
    default bridge (a /24, as Docker's is a /16) holds DEFAULT_MAX
    containers; more go on a user network with a /16, whose containers
    find each other by name through its DNS server (an attach rewrites
    only its own hosts file)."""
    series = Series(f"minidocker ({backend})")
    ids: list[str] = []
    with BenchNetns() as ns:
        soak = Soak(ns, tmp, count)
        soak.env["MINIDOCKER_FIREWALL"] = backend
        net = ["--network", "scale"] if count > DEFAULT_MAX else []
        if net:
            series.name += " user /16"
        try:
            soak.mdrun("run", "--rm", "--network", "none", "busybox", "true")  # builds the image
            if net:
                soak.mdrun("network", "create", "--subnet", "10.250.0.0/16", "scale")
            for i in range(count):
                port = BASE_PORT + i
                secs, proc = timed(lambda: soak.mdrun("run", "-d", *net, "-p", f"{port}:80", "busybox",
                                                      "httpd", "-f", "-p", "80"))
                ids.append(proc.stdout.strip())
                series.run.append(secs)
                series.connect.append(first_connection(ns, port))
                _progress(series.name, i + 1, count)
            while ids:
                secs, _ = timed(lambda: soak.mdrun("rm", "-f", ids[-1]))
                ids.pop()
                series.rm.append(secs)
        finally:
            if ids:
                subprocess.run(ns.cmd([soak.md, "rm", "-f", *ids]), env=soak.env,
                               capture_output=True, timeout=600)
            if net:
                subprocess.run(ns.cmd([soak.md, "network", "rm", "scale"]), env=soak.env,
                               capture_output=True, timeout=60)
            for proc in soak.shims():
                proc.kill()
    return series


def run_docker(count: int, notes: list[str]) -> Series | None:
    from bench.peers import Docker, PeerUnavailable
    series = Series("docker 20.10")
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
    header = f"{'runtime':22} {'operation':36} {first:>9} {last:>9} {'ratio':>7}  goal"
    print(header)
    print("-" * len(header))
    for s in all_series:
        for op, lo, hi in s.rows():
            r = f"{hi / lo:6.2f}x" if lo and hi else "    n/a"
            ok = "" if not (lo and hi) else ("ok" if hi / lo <= GOAL else "MISSED")
            f = lambda v: f"{v:9.1f}" if v is not None else "      n/a"  # noqa: E731
            print(f"{s.name:22} {op:36} {f(lo)} {f(hi)} {r:>7}  {ok}")


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
    started = time.monotonic()
    out, notes = [], []
    for backend in args.backend or ["iptables", "nftables"]:
        tmp = Path(tempfile.mkdtemp(prefix="mdscale-"))
        os.chmod(tmp, 0o700)
        try:
            out.append(run_minidocker(args.containers, backend, tmp))
        finally:
            unmount_under(str(tmp))
            for problem in remove_cgroup_parent(tmp / "lib"):   # Soak's state root
                notes.append(f"left behind: {problem}")
            shutil.rmtree(tmp, ignore_errors=True)
    if not args.no_docker:
        docker = run_docker(args.containers, notes)
        if docker:
            out.append(docker)
    report(out, args.containers)
    for n in notes:
        print(f"note: {n}")
    print(f"\n({time.monotonic() - started:.0f}s; load average {os.getloadavg()[0]:.1f} at the end)")
    return 0
