"""`scripts/bench datapath`: TCP throughput and request latency through
minidocker's network, beside the bare kernel path and Docker's, in one invocation.

Paths (each measured on four hosts, bench/datapath_hosts.py):
- container -> container on one bridge;
- host -> container through a published port, to the host's own address
  and to localhost;
- outside -> container through a published port (from the node's `ext`);
- container -> outside (masqueraded; the bare host only routes).
Throughput: one iperf3 TCP test of --seconds per run (the receiver's
figure). Latency: --rounds 64-byte request/response exchanges on one TCP
connection against socat's echo, median and p99 over all runs. Runs
interleave the hosts path by path, so load from other work falls on all
alike. The bare host is the same path with no runtime in it (veth
pairs and routes; the published-port rows go straight to the server, no
DNAT). The floor host is the same path through the kernel objects any
bridge network needs (a bridge, masquerade, DNAT; one rule each, by hand):
bare -> floor is what the kernel charges for them, floor -> minidocker what
minidocker adds. Docker's localhost row is its userland proxy (docker-proxy); its
kernel path is the host-address row, which minidocker's published ports are
held to. Everything runs in throwaway namespaces and temporary directories,
removed at the end, also on an error or Ctrl-C. With --profile every
throughput test is recorded with perf (bench/kprofile.py): CPU per GB moved
on each host, and the share of minidocker's that the bridge, br_netfilter,
conntrack, rule evaluation and the hook core take, the parts a bare routed
path does not have.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import kprofile
from bench.datapath_hosts import CLI, EXT, HOST, PUBLISHED_ECHO, PUBLISHED_IPERF, Bare, DockerHost, Floor, Minidocker
from bench.netns import unmount_under
from bench.peers import PeerUnavailable
from bench.probes import ECHO_PORT, IPERF3, IPERF_PORT, percentile, round_trips
from bench.table import OneLineParser, print_columns, root_or_exit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bridge_helpers import tools_archive  # noqa: E402
from harness import EXT_ADDR, NODE_ADDR  # noqa: E402

#: path -> (label, where its client runs)
PATHS = {
    "bridge": ("container -> container, one bridge", CLI),
    "host": ("host -> published port, host address", HOST),
    "localhost": ("host -> published port, localhost", HOST),
    "outside": ("outside -> published port", EXT),
    "egress": ("container -> outside", CLI),
}
PUBLISHED = ("host", "localhost", "outside")
#: Docker's kernel path for each published row (its localhost is docker-proxy).
DOCKER_KERNEL = {"host": "host", "localhost": "host", "outside": "outside"}
#: the hosts, in the tables' column order (bench/datapath_hosts.py)
HOSTS = ("bare", "floor", "minidocker", "docker")
BARE_GOAL = 0.95        # throughput, x the bare path
DOCKER_MARGIN = 0.05    # published ports: within 5% of Docker's kernel path
TOOLS = ("iperf3", "socat", "nsenter", "ip", "ss", "ldd")


def target(host, path: str) -> tuple[str, str, int, int]:
    """(where the client runs, address, iperf3 port, echo port) of a path on a host."""
    where = PATHS[path][1]
    if path == "egress":
        return where, EXT_ADDR, IPERF_PORT, ECHO_PORT
    if path == "bridge" or not host.published:
        return where, host.srv_ip, IPERF_PORT, ECHO_PORT
    return where, "127.0.0.1" if path == "localhost" else NODE_ADDR, PUBLISHED_IPERF, PUBLISHED_ECHO


class Results:
    """Samples per (path, host): Gbit/s per run, seconds per round trip."""

    def __init__(self, profile: bool = False):
        self.gbps: dict[tuple[str, str], list[float]] = {}
        self.rtts: dict[tuple[str, str], list[float]] = {}
        self.profiles: dict[tuple[str, str], list[kprofile.Profile]] | None = {} if profile else None
        self.notes: list[str] = []

    def probe(self, host, path: str, seconds: float, rounds: int) -> None:
        where, addr, iperf_port, echo_port = target(host, path)
        key = (path, host.name)
        try:
            with contextlib.ExitStack() as stack:
                recorded = (stack.enter_context(kprofile.recording("iperf3"))
                            if self.profiles is not None else None)
                rate = host.iperf(where, addr, iperf_port, seconds)
            self.gbps.setdefault(key, []).append(rate)
            if recorded is not None:
                self.profiles.setdefault(key, []).append(
                    kprofile.Profile(*recorded, gigabytes=rate * seconds / 8))
            self.rtts.setdefault(key, []).extend(round_trips(host.netns[where], addr, echo_port, rounds))
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            self.notes.append(f"{host.name}, {PATHS[path][0]}: {str(exc)[-200:]}")

    def cpu_per_gb(self, path: str, name: str) -> float | None:
        """Median CPU ms per GB the test's processes spent (--profile)."""
        xs = [p.cpu_ms_per_gb() for p in (self.profiles or {}).get((path, name), [])]
        xs = [x for x in xs if x]
        return statistics.median(xs) if xs else None

    def shares(self, path: str, name: str) -> dict[str, float]:
        """Each family's share (%) of the test's samples over all runs (--profile)."""
        runs = (self.profiles or {}).get((path, name), [])
        total = sum(p.samples for p in runs)
        return {f: 100 * sum(p.families[f] for p in runs) / total
                for f, _ in kprofile.FAMILIES} if total else {}

    def throughput(self, path: str, name: str) -> float | None:
        xs = self.gbps.get((path, name))
        return statistics.median(xs) if xs else None

    def spread(self) -> str:
        """How much the runs of one path and host differ: the noise the ratios sit in."""
        by_host: dict[str, list[float]] = {}
        for (_path, name), xs in self.gbps.items():
            if len(xs) > 1 and min(xs) > 0:
                by_host.setdefault(name, []).append(max(xs) / min(xs))
        return ", ".join(f"{name} {statistics.median(r):.2f}x" for name, r in by_host.items()) or "n/a"

    def latency(self, path: str, name: str) -> tuple[float, float] | None:
        """(p50, p99) in microseconds."""
        xs = self.rtts.get((path, name))
        return (statistics.median(xs) * 1e6, percentile(xs, 99) * 1e6) if xs else None


def measure(hosts, paths: list[str], runs: int, seconds: float, rounds: int,
            profile: bool = False) -> Results:
    res = Results(profile)
    for run in range(runs):
        for path in paths:
            # each run starts with the next host: none is always first after a pause
            for host in hosts[run % len(hosts):] + hosts[:run % len(hosts)]:
                res.probe(host, path, seconds, rounds)
        print(f"  run {run + 1}/{runs} done (load average {os.getloadavg()[0]:.1f})",
              file=sys.stderr, flush=True)
    return res


def _ratio(a, b) -> float | None:
    return a / b if a and b else None


def _x(r: float | None) -> str:
    return f"{r:.2f}x" if r is not None else "n/a"


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("ok" if ok else "MISSED")


def _rows(paths: list[str], figure, scalar, cell, goals) -> list[list[str]]:
    """One table's rows: figure(path, host) is a host's figure, scalar(figure)
    the number compared, cell(figure) its text, goals(path, vs bare, vs
    Docker's kernel path, the floor vs bare) the goal column."""
    rows = []
    for path in paths:
        bare, floor, ours, docker = (figure(path, name) for name in HOSTS)
        kernel = figure(DOCKER_KERNEL.get(path, path), "docker")
        vs_bare, vs_docker = _ratio(scalar(ours), scalar(bare)), _ratio(scalar(ours), scalar(kernel))
        floor_vs_bare = _ratio(scalar(floor), scalar(bare))
        proxy = " (proxy)" if path == "localhost" and docker is not None else ""
        rows.append([PATHS[path][0], cell(bare), cell(floor), cell(ours), cell(docker) + proxy,
                     _x(vs_bare), _x(_ratio(scalar(ours), scalar(floor))), _x(vs_docker),
                     goals(path, vs_bare, vs_docker, floor_vs_bare)])
    return rows


def _throughput_goals(path: str, vs_bare, vs_docker, floor_vs_bare) -> str:
    goals = [f">= {BARE_GOAL}x bare {_verdict(None if vs_bare is None else vs_bare >= BARE_GOAL)}"]
    if vs_bare is not None and vs_bare < BARE_GOAL and floor_vs_bare is not None:
        goals[0] += f" (floor {floor_vs_bare:.2f}x)"
    if path in PUBLISHED:
        ok = None if vs_docker is None else vs_docker >= 1 - DOCKER_MARGIN
        goals.append(f">= {1 - DOCKER_MARGIN:.2f}x docker {_verdict(ok)}")
    return "; ".join(goals)


def _latency_goals(path: str, _vs_bare, vs_docker, _floor_vs_bare) -> str:
    if path not in PUBLISHED:
        return ""
    ok = None if vs_docker is None else vs_docker <= 1 + DOCKER_MARGIN
    return f"<= {1 + DOCKER_MARGIN:.2f}x docker {_verdict(ok)}"


def report(res: Results, paths: list[str], args) -> None:
    runs = f"median of {args.runs} run{'s' if args.runs > 1 else ''}"
    print_columns(f"TCP throughput, Gbit/s (iperf3, {args.seconds:g} s per run, {runs})",
                  ["path", *HOSTS, "md/bare", "md/floor", "md/docker", "goals"],
                  _rows(paths, res.throughput, lambda v: v,
                        lambda v: f"{v:.2f}" if v is not None else "n/a", _throughput_goals))
    print_columns(f"request latency, us p50 / p99 ({args.rounds} x 64-byte request/response "
                  f"on one connection per run, all runs)",
                  ["path", *HOSTS, "md/bare", "md/floor", "md/docker", "goal"],
                  _rows(paths, res.latency, lambda v: v and v[0],
                        lambda v: f"{v[0]:.0f} / {v[1]:.0f}" if v else "n/a", _latency_goals))
    if res.profiles is not None:
        report_profile(res, paths)
    print("\nmd/docker compares with Docker's kernel path: for localhost that is its host-address "
          "row,\nas Docker's own localhost goes through docker-proxy (shown as \"(proxy)\").")
    if args.runs > 1:
        print(f"throughput spread (slowest run to fastest, the median over paths): {res.spread()}")
    for note in res.notes:
        print(f"note: {note}")


def report_profile(res: Results, paths: list[str]) -> None:
    """--profile: CPU per GB moved, and what minidocker's path spends in the
    families a container network adds (self time; the bare path's are ~0)."""
    families = [f for f, _ in kprofile.FAMILIES]

    def cell(v):
        return f"{v:.0f}" if v is not None else "n/a"
    rows = []
    for path in paths:
        bare, floor, ours, docker = (res.cpu_per_gb(path, n) for n in HOSTS)
        share = res.shares(path, "minidocker")
        rows.append([PATHS[path][0], cell(bare), cell(floor), cell(ours), cell(docker),
                     _x(_ratio(ours, bare)), _x(_ratio(ours, floor)),
                     " / ".join(f"{share.get(f, 0):.1f}" for f in families),
                     f"{sum(share.values()):.1f}" if share else "n/a"])
    print_columns("CPU per GB moved, ms (perf, samples of iperf3 incl. softirq work in its context; "
                  "median of runs), and minidocker's self time per family, % of its samples",
                  ["path", *HOSTS, "md/bare", "md/floor", " / ".join(families), "sum %"],
                  rows)


def _arguments(argv: list[str]) -> argparse.Namespace:
    ap = OneLineParser("datapath", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="iperf3 test length (default 3)")
    ap.add_argument("--runs", type=int, default=3, help="runs of every path (default 3)")
    ap.add_argument("--rounds", type=int, default=2000, help="latency exchanges per run (default 2000)")
    ap.add_argument("--path", choices=list(PATHS), action="append",
                    help="only this path (repeatable; localhost brings host, Docker's kernel path)")
    ap.add_argument("--backend", choices=["iptables", "nftables"], default="iptables",
                    help="minidocker's firewall backend (default iptables)")
    ap.add_argument("--no-docker", action="store_true", help="leave Docker out")
    ap.add_argument("--profile", action="store_true",
                    help="record each throughput test with perf: CPU per GB and where it goes")
    args = ap.parse_args(argv)
    for name, value, low, high in (("--seconds", args.seconds, 0.1, 600), ("--runs", args.runs, 1, 100),
                                   ("--rounds", args.rounds, 10, 1_000_000)):
        if not low <= value <= high:
            ap.exit(2, f"bench datapath: {name} {value:g}: give {low:g} to {high:g}\n")
    return args


def main(argv: list[str]) -> int:
    args = _arguments(argv)
    root_or_exit("datapath")
    missing = [t for t in TOOLS + ((kprofile.PERF,) if args.profile else ()) if not shutil.which(t)]
    if missing:
        print(f"bench datapath: {', '.join(missing)} missing (scripts/bootstrap installs them)",
              file=sys.stderr)
        return 2
    # localhost is compared with Docker's kernel path, the host-address row
    wanted = set(args.path or PATHS) | {DOCKER_KERNEL[p] for p in args.path or () if p in DOCKER_KERNEL}
    paths = [p for p in PATHS if p in wanted]
    # Ctrl-C unwinds (and so cleans up) also when the bench was started with
    # SIGINT ignored, as a background job of a non-interactive shell is.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    print(f"machine: {os.cpu_count()} cores, Linux {platform.release()}, "
          f"load average {os.getloadavg()[0]:.1f} at the start")
    tmp = Path(tempfile.mkdtemp(prefix="mdbench-datapath-"))
    os.chmod(tmp, 0o700)
    try:
        archive = tools_archive(tmp / "image", extra=(IPERF3,))
        res = _run(args, paths, tmp, archive)
    except KeyboardInterrupt:
        print("bench datapath: interrupted; everything it made is removed", file=sys.stderr)
        return 130
    finally:
        unmount_under(str(tmp))
        shutil.rmtree(tmp, ignore_errors=True)
    report(res, paths, args)
    print(f"\n({time.monotonic() - started:.0f}s; load average {os.getloadavg()[0]:.1f} at the end)")
    return 0


def _run(args, paths: list[str], tmp: Path, archive: Path) -> Results:
    """Set the hosts up, measure, tear them down."""
    notes = []
    with contextlib.ExitStack() as stack:
        hosts = [stack.enter_context(Bare()), stack.enter_context(Floor()),
                 stack.enter_context(Minidocker(tmp / "minidocker", archive, args.backend))]
        if not args.no_docker:
            try:
                hosts.append(stack.enter_context(DockerHost(archive)))
            except PeerUnavailable as exc:
                notes.append(f"docker: skipped ({exc})")
        print(f"measuring {len(paths)} path(s) on {', '.join(h.name for h in hosts)}; throwaway "
              f"namespaces: {' '.join(n for h in hosts for n in h.namespaces)}", flush=True)
        res = measure(hosts, paths, args.runs, args.seconds, args.rounds, args.profile)
    res.notes[:0] = notes
    return res
