"""`scripts/bench memory`: what N running containers' supervisors cost in memory.

Starts --containers (default 100) containers, `run -d --network none busybox
sleep 3600`, one after another, with minidocker, Docker 20.10 and podman 4.3,
then sums the memory of each runtime's per-container processes while all N
run: minidocker's shims, Docker's containerd-shim-runc-v2, podman's conmon.
The figure that counts is PSS (proportional set size, from
/proc/PID/smaps_rollup): a page shared by k processes counts 1/k in each, so
the sum counts shared pages (an interpreter's or a Go binary's text) once;
RSS, which counts them in every process, is printed beside it. The daemons
(dockerd, containerd) are a fixed cost, not per container: shown apart.

Each runtime runs in a throwaway network namespace with its state in a
temporary directory (bench/peers.py for the peers, bench/soak.py's `Soak`
for minidocker), and every container started is removed again, also on an
error or Ctrl-C. A peer that cannot start is skipped with the reason.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.netns import BenchNetns, all_pids, cmdline, comm, signals_held, unmount_under
from bench.soak import Soak, remove_cgroup_parent
from bench.table import OneLineParser, root_or_exit

GOAL = 1.0  # ours <= Docker's
SETTLE = 2.0  # seconds after the last start, before measuring
CONTAINER = ["run", "-d", "--network", "none", "busybox", "sleep", "3600"]
FIELDS = ("Rss", "Pss", "Private_Clean", "Private_Dirty")


def rollup(pid: int) -> dict[str, int] | None:
    """The process's /proc/PID/smaps_rollup totals in kB (FIELDS), None if it is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in FIELDS:
                    out[key] = int(rest.split()[0])
    except (OSError, ValueError):
        return None
    return out if len(out) == len(FIELDS) else None


class Usage:
    """The summed memory of one runtime's per-container processes (kB)."""

    def __init__(self, name: str, process: str, containers: int, pids: list[int]):
        self.name, self.process, self.containers = name, process, containers
        found = [r for r in map(rollup, pids) if r]
        self.count = len(found)
        self.total = {k: sum(r[k] for r in found) for k in FIELDS}

    def row(self, docker: "Usage | None") -> str:
        mb = lambda kb: kb / 1024  # noqa: E731
        pss, rss = self.total["Pss"], self.total["Rss"]
        each = pss / self.count if self.count else 0
        ratio = f"{pss / docker.total['Pss']:6.2f}x" if docker and docker.total["Pss"] else "    n/a"
        return (f"{self.name:14} {self.process:26} {self.count:>5} {mb(pss):9.1f} {mb(each):8.2f} "
                f"{mb(rss):9.1f} {mb(self.total['Private_Dirty'] + self.total['Private_Clean']):9.1f} "
                f"{ratio:>7}")


def _matching(needle: str, names: tuple[str, ...]) -> list[int]:
    """Pids whose comm is one of names and whose command line names needle."""
    return [p for p in all_pids() if comm(p) in names and needle in cmdline(p)]


def measure_minidocker(count: int) -> Usage:
    """(long: start, measure and clean up in one place, so that the
    cleanup is sure to follow every start.)"""
    tmp = Path(tempfile.mkdtemp(prefix="mdmemory-"))
    os.chmod(tmp, 0o700)
    try:
        with BenchNetns() as ns:
            soak = Soak(ns, tmp, count)
            try:
                soak.mdrun("run", "--rm", "--network", "none", "busybox", "true")  # builds the image
                for i in range(count):
                    soak.mdrun(*CONTAINER)
                    _progress("minidocker", i + 1, count)
                time.sleep(SETTLE)
                return Usage("minidocker", "shim (python)", count, [p.pid for p in soak.shims()])
            finally:
                with signals_held():
                    _remove_all(soak)
    finally:
        with signals_held():
            unmount_under(str(tmp))
            shutil.rmtree(tmp, ignore_errors=True)


def remove_all(run, force_rm=("rm", "-f")) -> None:
    """`rm -f` every container `ps -a` lists (one a cut-short `run -d` left
    included); run(args) runs the runtime's command line."""
    ids = run(["ps", "-aq"]).stdout.split()
    if ids:
        run([*force_rm, *ids])


def _remove_all(soak) -> None:
    """Every container of the private root, then whatever survived that."""
    remove_all(lambda args: soak.ns.run([soak.md, *args], env=soak.env, timeout=600, check=False))
    for proc in soak.shims():
        proc.kill()
    for pid in soak.container_processes():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for problem in remove_cgroup_parent(Path(soak.env["MINIDOCKER_ROOT"])):
        print(f"bench memory: cgroup left: {problem}", file=sys.stderr)


def measure_peer(cls, count: int, process: str, names: tuple[str, ...],
                 notes: list[str]) -> tuple[Usage | None, Usage | None]:
    """The peer's per-container processes and, for Docker, its daemons."""
    from bench.peers import PeerUnavailable
    try:
        with BenchNetns() as ns, cls(ns) as peer:
            try:
                for i in range(count):
                    peer.run(CONTAINER)
                    _progress(cls.name, i + 1, count)
                time.sleep(SETTLE)
                usage = Usage(cls.name, process, count, _matching(str(peer.tmp), names))
                daemons = _matching(str(peer.tmp), ("dockerd", "containerd"))
                fixed = Usage(cls.name, "daemons (fixed cost)", 0, daemons) if daemons else None
                return usage, fixed
            finally:
                with signals_held():
                    remove_all(lambda args: peer.run(args, check=False, timeout=600), peer.force_rm)
    except PeerUnavailable as exc:
        notes.append(f"{cls.name}: skipped ({exc})")
    except RuntimeError as exc:  # a `run -d` failed: the peer is torn down already
        notes.append(f"{cls.name}: failed ({exc})")
    return None, None


def _progress(name: str, done: int, count: int) -> None:
    if done % 25 == 0 or done == count:
        print(f"  {name}: {done}/{count} containers", file=sys.stderr, flush=True)


def report(rows: list[Usage], fixed: list[Usage], count: int) -> None:
    docker = next((u for u in rows if u.name == "docker"), None)
    print(f"\nmemory of {count} running containers' per-container processes "
          f"(`{' '.join(CONTAINER)}`), MiB")
    header = (f"{'runtime':14} {'process':26} {'count':>5} {'PSS':>9} {'PSS each':>8} "
              f"{'RSS':>9} {'USS':>9} {'PSS/docker':>7}")
    print(header)
    print("-" * len(header))
    for u in rows + fixed:
        print(u.row(docker if u in rows else None))
    for u in rows:
        if u.count != u.containers:
            print(f"note: {u.name}: {u.count} {u.process} processes for {u.containers} containers")
    ours = next((u for u in rows if u.name == "minidocker"), None)
    if ours and docker and docker.total["Pss"]:
        ratio = ours.total["Pss"] / docker.total["Pss"]
        print(f"\ngoal: shims' PSS <= {GOAL:g}x Docker's: {ratio:.2f}x -> "
              f"{'met' if ratio <= GOAL else 'MISSED'}")
    else:
        print(f"\ngoal: shims' PSS <= {GOAL:g}x Docker's: Docker did not run (see the note)")


def main(argv: list[str]) -> int:
    ap = OneLineParser("memory", description=__doc__.split("\n\n")[0])
    ap.add_argument("--containers", type=int, default=100, help="how many (default 100)")
    ap.add_argument("--no-docker", action="store_true", help="skip Docker")
    ap.add_argument("--no-podman", action="store_true", help="skip podman")
    args = ap.parse_args(argv)
    root_or_exit("memory")
    if not 1 <= args.containers <= 1000:
        print(f"bench memory: --containers {args.containers}: give 1 to 1000", file=sys.stderr)
        return 2
    from bench.peers import Docker, Podman
    started = time.monotonic()
    notes: list[str] = []
    rows, fixed = [measure_minidocker(args.containers)], []
    peers = [(Docker, "containerd-shim-runc-v2", ("containerd-shim",), args.no_docker),
             (Podman, "conmon", ("conmon",), args.no_podman)]
    for cls, process, names, skip in peers:
        if skip:
            continue
        usage, daemons = measure_peer(cls, args.containers, process, names, notes)
        rows += [usage] if usage else []
        fixed += [daemons] if daemons else []
    report(rows, fixed, args.containers)
    for n in notes:
        print(f"note: {n}")
    print(f"\n({time.monotonic() - started:.0f}s; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end)")
    return 0
