"""`scripts/bench cni`: cni-bridge beside the reference plugins, same network.

Each plugin runs as a separate process, exec'd exactly as a runtime does
(CNI_* environment, config on stdin), inside a throwaway network namespace
that plays the host; ADD and DEL are timed separately, alternating ours and
the reference every round; medians and ratios are printed. At the end, the
executor's rows (bench/cni_exec.py, if present) follow.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.table import print_table

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
OURS = str(VENV_BIN / "cni-bridge") if (VENV_BIN / "cni-bridge").exists() else shutil.which("cni-bridge")
REF = "/usr/lib/cni"
GOALS = {"ADD": 1.0, "DEL": 0.8}   # ratio to the reference, per command (issue 15)
VERSION_GOAL_MS = 20.0


class Bench:
    def __init__(self, runs: int):
        self.runs = runs
        self.tag = uuid.uuid4().hex[:8]
        self.tmp = Path(tempfile.mkdtemp(prefix="mdbench-cni-"))
        self.node = f"mdbench-cni-{self.tag}"
        self.sandboxes: list[str] = []
        self.inside = None   # the plugin's InNetns while the bench runs in the node

    # --- namespaces ---------------------------------------------------------
    def __enter__(self):
        subprocess.run(["ip", "netns", "add", self.node], check=True, timeout=30)
        for i in range(2):
            name = f"{self.node}-c{i}"
            subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
            self.sandboxes.append(name)
        from cni_bridge.netns import InNetns
        fd = os.open(f"/run/netns/{self.node}", os.O_RDONLY)
        try:   # children exec'd from here run in the node
            self.inside = InNetns(fd).__enter__()
        finally:
            os.close(fd)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=30)
        return self

    def __exit__(self, *exc):
        if self.inside is not None:
            self.inside.__exit__()
            self.inside = None
        for name in [self.node, *self.sandboxes]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- running plugins ----------------------------------------------------------
    def env(self, command: str, sandbox: str) -> dict:
        return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                "CNI_COMMAND": command, "CNI_CONTAINERID": f"bench-{sandbox}", "CNI_IFNAME": "eth0",
                "CNI_NETNS": f"/run/netns/{sandbox}", "CNI_PATH": f"{VENV_BIN}:{REF}",
                "MINIDOCKER_RUN": str(self.tmp / "run")}

    def call(self, exe: str, command: str, conf: dict, sandbox: str) -> tuple[float, dict | None]:
        data = json.dumps(conf).encode()
        start = time.perf_counter()
        proc = subprocess.run([exe], input=data, env=self.env(command, sandbox), capture_output=True, timeout=60)
        took = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{exe} {command} failed: {proc.stdout.decode()[-400:]} {proc.stderr.decode()[-400:]}")
        return took, (json.loads(proc.stdout) if proc.stdout.strip() else None)

    def chain_add(self, chain: list[tuple[str, dict]], sandbox: str) -> tuple[float, list[tuple[str, dict]]]:
        """ADD every plugin in order (prevResult threaded); returns time and
        the per-plugin DEL configs (reverse order, with the final result)."""
        total, prev, sent = 0.0, None, []
        for exe, conf in chain:
            c = dict(conf)
            if prev is not None:
                c["prevResult"] = prev
            took, prev = self.call(exe, "ADD", c, sandbox)
            total += took
            sent.append((exe, conf))
        return total, [(exe, {**conf, "prevResult": prev}) for exe, conf in reversed(sent)]

    def chain_del(self, dels: list[tuple[str, dict]], sandbox: str) -> float:
        return sum(self.call(exe, "DEL", conf, sandbox)[0] for exe, conf in dels)

    def measure(self, chains: dict[str, list[tuple[str, dict]]]) -> dict[str, tuple[float, float]]:
        """name -> (median ADD ms, median DEL ms); rounds alternate the chains."""
        samples = {name: ([], []) for name in chains}
        for name, chain in chains.items():      # warm-up (page cache, .pyc, chains)
            _t, dels = self.chain_add(chain, self.sandboxes[0])
            self.chain_del(dels, self.sandboxes[0])
        for i in range(self.runs):
            for name, chain in chains.items():
                sb = self.sandboxes[i % len(self.sandboxes)]
                t_add, dels = self.chain_add(chain, sb)
                t_del = self.chain_del(dels, sb)
                samples[name][0].append(t_add)
                samples[name][1].append(t_del)
        return {n: (statistics.median(a) * 1000, statistics.median(d) * 1000) for n, (a, d) in samples.items()}

    def version_ms(self, *exes: str) -> list[float]:
        """Median VERSION time of each exe, the exes alternating every round
        (a load spike on a shared machine hits both alike)."""
        times: list[list[float]] = [[] for _ in exes]
        for _ in range(self.runs):
            for i, exe in enumerate(exes):
                start = time.perf_counter()
                subprocess.run([exe], input=b'{"cniVersion":"1.0.0"}', env={"CNI_COMMAND": "VERSION"},
                               capture_output=True, timeout=30)
                times[i].append(time.perf_counter() - start)
        return [statistics.median(t) * 1000 for t in times]


def _net(tmp: Path, *, ptype: str, bridge: str, dual: bool, backend: str = "iptables") -> dict:
    ranges = [[{"subnet": "10.123.0.0/24"}]] + ([[{"subnet": "fd00:123::/64"}]] if dual else [])
    conf = {"cniVersion": "1.0.0", "name": f"bench-{bridge}", "type": ptype, "bridge": bridge,
            "isGateway": True, "isDefaultGateway": True, "ipMasq": True,
            "ipam": {"type": "cni-bridge" if ptype == "cni-bridge" else "host-local", "dataDir": str(tmp / "ipam"), "ranges": ranges}}
    if ptype == "cni-bridge":
        conf["firewallBackend"] = backend
    return conf


def goal_lines(rows) -> list[str]:
    """Each row's ratio beside its goal: met or MISSED."""
    out = []
    for op, ours, _peer, theirs in rows:
        if op.startswith("VERSION"):
            goal, got, unit = VERSION_GOAL_MS, ours, " ms"
        else:
            goal, got, unit = GOALS[op.split(" ", 1)[0]], ours / theirs, "x"
        out.append(f"  {op:46} {got:.2f}{unit} (goal <= {goal:g}{unit}): {'met' if got <= goal else 'MISSED'}")
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench cni")
    ap.add_argument("--runs", type=int, default=20, help="rounds per case (default 20)")
    opts = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench cni: needs root (network namespaces)", file=sys.stderr)
        return 2
    if not OURS:
        print("bench cni: cni-bridge is not installed (scripts/bootstrap)", file=sys.stderr)
        return 2
    pm = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    rows = []
    with Bench(opts.runs) as b:
        bridge = f"{REF}/bridge"
        portmap_conf = {"cniVersion": "1.0.0", "type": "portmap", "snat": True,
                        "runtimeConfig": {"portMappings": pm}}
        cases = [
            ("ipMasq, IPv4", False, False),
            ("ipMasq, dual stack", True, False),
            ("ipMasq + port map, IPv4", False, True),
            ("ipMasq + port map, dual stack", True, True),
        ]
        for label, dual, ports in cases:
            ref = [(bridge, _net(b.tmp, ptype="bridge", bridge="mdbref0", dual=dual))]
            if ports:
                ref.append((f"{REF}/portmap", {**portmap_conf, "name": "bench-mdbref0"}))
            chains = {"ref": ref}
            for backend in ("iptables", "nftables"):
                ours = _net(b.tmp, ptype="cni-bridge", bridge="mdbours0", dual=dual, backend=backend)
                if ports:
                    ours["runtimeConfig"] = {"portMappings": pm}
                chains[backend] = [(OURS, ours)]
            got = b.measure(chains)
            peer = "bridge+host-local" + ("+portmap" if ports else "")
            for backend in ("iptables", "nftables"):
                rows.append((f"ADD {label} ({backend})", got[backend][0], peer, got["ref"][0]))
                rows.append((f"DEL {label} ({backend})", got[backend][1], peer, got["ref"][1]))
        ours_ms, ref_ms = b.version_ms(OURS, bridge)
        rows.append(("VERSION (start-up alone)", ours_ms, "bridge", ref_ms))
    print_table(f"cni-bridge vs reference plugins 1.1.1 (medians of {opts.runs}; "
                "goal ADD <= 1x, DEL <= 0.8x, VERSION <= 20 ms)", rows)
    print(f"\ngoals (load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}):")
    for line in goal_lines(rows):
        print(line)
    exec_mod = Path(__file__).with_name("cni_exec.py")
    if exec_mod.exists():
        spec = importlib.util.spec_from_file_location("bench.cni_exec", exec_mod)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        extra = mod.rows()
        if extra:
            print_table("CNI executor", extra)
    return 0
