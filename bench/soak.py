"""`scripts/bench soak`: run/rm cycles of published containers, looking for leaks.

Each cycle starts --containers (default 20) containers
`run -d -p <port>:80 busybox httpd -f -p 80` on distinct host ports, checks
that every port answers (curl inside the namespace, bounded), removes them
all with `rm -f`, then looks for anything a container left behind: links,
iptables and nft rules naming a container, IPAM leases, mounts under the
private root, pinned namespace files, processes, container records and CNI
cache entries. Cycles repeat for --minutes (default 10). The report: cycles
done, leaks found (the goal is zero) and the resident memory of minidocker's
processes (the shims: there is no daemon) in the first and in the last cycle.

Everything happens in a throwaway network namespace (bench/netns.py) with a
private MINIDOCKER_ROOT/RUN/CNI cache in a temporary directory, removed at
the end; the real host's links and rules are never touched.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.netns import BenchNetns, unmount_under
from bench.table import minidocker

BASE_PORT = 20080
CURL_TIMEOUT = 3
CMD_TIMEOUT = 60


class Soak:
    """One soak run: the namespace, the private roots and the checks."""

    def __init__(self, ns: BenchNetns, tmp: Path, count: int):
        self.ns, self.tmp, self.count = ns, tmp, count
        self.md = minidocker()
        venv = str(Path(sys.executable).parent)
        self.env = {
            "PATH": f"{venv}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "MINIDOCKER_ROOT": str(tmp / "lib"), "MINIDOCKER_RUN": str(tmp / "run"),
            "MINIDOCKER_CNI_CACHE": str(tmp / "cni-cache"), "MINIDOCKER_CNI_CONF": str(tmp / "net.d"),
            "CNI_PATH": f"{venv}:/usr/lib/cni", "LANG": "C.UTF-8",
        }
        self.ports = [BASE_PORT + i for i in range(count)]

    def mdrun(self, *args: str, timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess:
        proc = self.ns.run([self.md, *args], env=self.env, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"minidocker {' '.join(args[:4])}...: {proc.stderr.strip()[-300:]}")
        return proc

    # --- one cycle ----------------------------------------------------------------
    def start_all(self) -> list[str]:
        return [self.mdrun("run", "-d", "-p", f"{port}:80", "busybox", "httpd", "-f", "-p", "80")
                .stdout.strip() for port in self.ports]

    def unanswered(self) -> list[int]:
        """Ports that gave no HTTP answer (any status counts: httpd has no index)."""
        bad = []
        for port in self.ports:
            for _ in range(3):  # httpd may still be binding right after `run -d`
                proc = self.ns.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                    "--max-time", str(CURL_TIMEOUT), f"http://127.0.0.1:{port}/"],
                                   timeout=CURL_TIMEOUT + 5, check=False)
                if proc.stdout.strip() not in ("", "000"):
                    break
                time.sleep(0.2)
            else:
                bad.append(port)
        return bad

    def remove_all(self, ids: list[str]) -> None:
        if ids:
            self.mdrun("rm", "-f", *ids, timeout=CMD_TIMEOUT * 2)

    # --- what may be left -------------------------------------------------------------
    def shims(self) -> list[psutil.Process]:
        """minidocker's processes: the per-container shims of this root."""
        root = self.env["MINIDOCKER_ROOT"]
        out = []
        for proc in psutil.process_iter(["cmdline", "environ"]):
            try:
                cmd = " ".join(proc.info["cmdline"] or [])
                if "minidocker.shim" in cmd and (proc.info["environ"] or {}).get("MINIDOCKER_ROOT") == root:
                    out.append(proc)
            except (psutil.Error, TypeError):
                continue
        return out

    def container_processes(self) -> list[int]:
        """Processes whose root mount is one of our overlays."""
        marker = str(self.tmp) + "/"
        found = []
        for pid in psutil.pids():
            try:
                with open(f"/proc/{pid}/mountinfo") as fh:
                    for line in fh:
                        fields = line.split()
                        if fields[4] == "/":
                            if marker in line:
                                found.append(pid)
                            break
            except OSError:
                continue
        return found

    def rules(self) -> str:
        ipt = "".join(self.ns.run([tool], check=False).stdout
                      for tool in ("iptables-save", "ip6tables-save"))
        nft = self.ns.run(["nft", "list", "ruleset"], check=False).stdout
        return "\n".join(re.sub(r"\[\d+:\d+\]", "", l) for l in (ipt + nft).splitlines()
                         if not l.startswith("#") and "counter packets" not in l)

    def leaks(self, ids: list[str], baseline_rules: str | None) -> list[str]:
        """Everything of the removed containers that is still there."""
        found = []
        links = [l for l in self.ns.run(["ip", "-o", "link", "show"]).stdout.splitlines()]
        names = [l.split(":")[1].strip().split("@")[0] for l in links]
        extra = [n for n in names if n not in ("lo", "minidocker0")]
        if extra:
            found.append(f"links: {extra}")
        rules = self.rules()
        short = [i[:12] for i in ids]
        named = [l for l in rules.splitlines() if any(s in l for s in short)]
        if named:
            found.append(f"rules naming a container: {named[:5]}")
        if baseline_rules is not None and rules != baseline_rules:
            found.append("rules differ from the first cycle's")
        leases = self.tmp / "lib" / "ipam"
        held = [p.name for p in leases.rglob("*") if p.is_file() and p.name != "lock"
                and not p.name.startswith(("last_reserved", "."))] if leases.exists() else []
        if held:
            found.append(f"IPAM leases: {held}")
        mounts = [m for m in _mounts(str(self.tmp))]
        if mounts:
            found.append(f"mounts: {mounts}")
        for label, d in (("pinned netns", self.tmp / "run" / "netns"),
                         ("container records", self.tmp / "lib" / "containers"),
                         ("CNI cache entries", self.tmp / "cni-cache" / "results")):
            left = sorted(os.listdir(d)) if d.is_dir() else []
            if left:
                found.append(f"{label}: {left[:5]}")
        if self.shims():
            found.append(f"shims: {[p.pid for p in self.shims()]}")
        procs = self.container_processes()
        if procs:
            found.append(f"container processes: {procs}")
        return found


CGROUP_MOUNTS = "/sys/fs/cgroup"


def remove_cgroup_parent(state_root: Path) -> list[str]:
    """A private state root's cgroup parent (minidocker-<crc32>, which
    minidocker keeps between containers) and anything left in it; what
    could not be removed."""
    from minidocker import paths
    from minidocker.runtime import cgroups
    parent = cgroups.dirs(paths.default_cgroup_parent(state_root))
    problems = []
    for controller, path in parent.items():
        try:
            children = [e.path for e in os.scandir(path) if e.is_dir()] if os.path.isdir(path) else []
            for child in children:
                cgroups.remove({controller: child})
            cgroups.remove({controller: path})
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror}")
    # runc (`--runtime runc`, the `runc run` rows) also makes the parent in
    # the hierarchies minidocker does not use (blkio, cpuset, name=systemd,
    # the v2 one): empty directories, removed bottom-up
    name = paths.default_cgroup_parent(state_root)
    for hierarchy in os.scandir(CGROUP_MOUNTS) if os.path.isdir(CGROUP_MOUNTS) else ():
        top = os.path.join(hierarchy.path, name)
        for path in [d for d, _, _ in os.walk(top, topdown=False)]:
            try:
                os.rmdir(path)
            except OSError as exc:
                problems.append(f"{path}: {exc.strerror}")
    return problems


def _mounts(root: str) -> list[str]:
    with open("/proc/self/mountinfo") as fh:
        return [line.split()[4] for line in fh if line.split()[4].startswith(root + "/")]


def _rss_mb(procs: list[psutil.Process]) -> tuple[float, float]:
    """Total and mean RSS (MB) of procs."""
    sizes = []
    for p in procs:
        try:
            sizes.append(p.memory_info().rss / 1e6)
        except psutil.Error:
            continue
    return (sum(sizes), sum(sizes) / len(sizes)) if sizes else (0.0, 0.0)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long to cycle (default 10)")
    ap.add_argument("--containers", type=int, default=20, help="containers per cycle (default 20)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench soak: run as root (namespaces, mounts, rules)", file=sys.stderr)
        return 2
    for tool in ("curl", "nsenter", "ip"):
        if not shutil.which(tool):
            print(f"bench soak: {tool} is missing", file=sys.stderr)
            return 2
    tmp = Path(tempfile.mkdtemp(prefix="mdsoak-"))
    os.chmod(tmp, 0o700)
    cycles, leak_cycles, silent, all_leaks = 0, 0, 0, []
    rss_first = rss_last = (0.0, 0.0)
    shims_first = shims_last = 0
    ids: list[str] = []
    soak = None
    try:
        with BenchNetns() as ns:
            soak = Soak(ns, tmp, args.containers)
            soak.mdrun("run", "--rm", "--network", "none", "busybox", "true")  # builds the image
            deadline = time.monotonic() + args.minutes * 60
            baseline_rules = None
            started = time.monotonic()
            while cycles == 0 or time.monotonic() < deadline:
                ids = soak.start_all()
                shims = soak.shims()
                if cycles == 0:
                    rss_first, shims_first = _rss_mb(shims), len(shims)
                rss_last, shims_last = _rss_mb(shims), len(shims)
                silent += len(soak.unanswered())
                soak.remove_all(ids)
                found = soak.leaks(ids, baseline_rules)
                if baseline_rules is None:
                    baseline_rules = soak.rules()
                ids = []
                cycles += 1
                if found:
                    leak_cycles += 1
                    all_leaks.append((cycles, found))
                    print(f"cycle {cycles}: LEAKS {found}", file=sys.stderr)
                print(f"cycle {cycles}: {args.containers} containers, "
                      f"{time.monotonic() - started:.0f}s elapsed", flush=True)
    finally:
        if soak is not None and ids:
            subprocess.run(soak.ns.cmd([soak.md, "rm", "-f", *ids]), env=soak.env,
                           capture_output=True, timeout=CMD_TIMEOUT * 2)
        if soak is not None:
            for proc in soak.shims():
                try:
                    proc.kill()
                except psutil.Error:
                    pass
        unmount_under(str(tmp))
        cgroups_left = remove_cgroup_parent(tmp / "lib")
        shutil.rmtree(tmp, ignore_errors=True)
    for problem in cgroups_left:
        print(f"bench soak: cgroup left: {problem}", file=sys.stderr)
    leaks = sum(len(f) for _, f in all_leaks)
    print(f"\nsoak: {cycles} cycles of {args.containers} containers with published ports "
          f"in {args.minutes:g} min")
    print(f"  ports that did not answer: {silent}")
    print(f"  leaks found: {leaks} (in {leak_cycles} cycles)")
    print(f"  shims (minidocker's processes; no daemon), first cycle: {shims_first}, "
          f"RSS {rss_first[0]:.1f} MB total, {rss_first[1]:.1f} MB each")
    print(f"  shims, last cycle: {shims_last}, RSS {rss_last[0]:.1f} MB total, "
          f"{rss_last[1]:.1f} MB each")
    return 0 if cycles and not leaks and not silent else 1
