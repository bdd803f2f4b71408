"""`scripts/bench` (run): container start-to-exit latency beside its peers.

Then `run --rm --network none|host|bridge -p 8080:80 busybox true` for
minidocker, Docker and podman (CNI backend), each set up by the bench in a
throwaway network namespace (peers that cannot start are skipped with a
note), with ratios; and the bridge row with cni-bridge exec'd instead of
called in-process.

Medians over --runs executions (default 20) of
  minidocker run --rm --network none|host busybox true   (built-in runtime,
                                                          and --runtime runc)
beside `runc run` of an equivalent bundle (same busybox rootfs, same
config builder, runc making the namespaces) and
`unshare --fork --pid --mount --uts --ipc --net true`, all in one
invocation, the interpreter's start and the floor of any click command line
(the interpreter starting and importing click: a plain `run` does not); then
the shim's resident memory for a running `-d` container.
Everything happens under a private MINIDOCKER_ROOT/RUN in a temporary
directory that is removed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.table import minidocker, median_ms, print_table, time_cmd

GOAL_RATIO = 1.3   # issue 15: run --rm --network none <= 1.3x runc run
GOAL_SHIM_MB = 15.0


def _runc_bundle(tmp: Path, rootfs: Path) -> Path:
    """A bundle equivalent to a minidocker container: the busybox rootfs and
    config from the same builder; runc creates the network namespace."""
    from minidocker.runtime import oci
    bundle = tmp / "runc-bundle"
    shutil.copytree(rootfs, bundle / "rootfs", symlinks=True)
    spec = oci.build(args=["true"], env=["PATH=/bin:/usr/bin:/sbin:/usr/sbin"], cwd="/",
                     user=oci.User(), hostname="bench", rootfs=str(bundle / "rootfs"),
                     netns_path=None, files={}).to_dict()
    spec["linux"]["namespaces"].append({"type": "network"})
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def _shim_memory(md: str, env: dict) -> dict[str, int]:
    """smaps_rollup (kB, bench/memory.py) of the shim of a running `-d` container."""
    from bench.memory import rollup
    cid = subprocess.run([md, "run", "-d", "--network", "none", "busybox", "sleep", "60"],
                         env=env, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    try:
        info = json.loads(subprocess.run([md, "inspect", cid], env=env, capture_output=True,
                                         text=True, timeout=30, check=True).stdout)[0]
        shim = psutil.Process(info["State"]["Pid"]).parent()
        assert "minidocker.shim" in " ".join(shim.cmdline()), shim.cmdline()
        time.sleep(0.2)
        return rollup(shim.pid) or {}
    finally:
        subprocess.run([md, "rm", "-f", cid], env=env, capture_output=True, timeout=30)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench run", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="executions per measurement (>= 20 for the goal)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: must run as root", file=sys.stderr)
        return 1
    md = minidocker()
    tmp = Path(tempfile.mkdtemp(prefix="minidocker-bench-"))
    env = dict(os.environ, MINIDOCKER_ROOT=str(tmp / "lib"), MINIDOCKER_RUN=str(tmp / "run"))
    runc_root = tmp / "runc-root"
    try:
        # warm up: builds the busybox image, loads caches
        for _ in range(2):
            subprocess.run([md, "run", "--rm", "--network", "none", "busybox", "true"], env=env, check=True,
                           capture_output=True, timeout=60)
        images = json.loads((tmp / "lib/images/repositories.json").read_text())
        # the built-in busybox is one layer: its diff dir is the whole root
        layers = sorted((tmp / "lib/images/layers").glob("*/diff"))
        rootfs = layers[0] if len(layers) == 1 else \
            tmp / "lib/images" / images["busybox:latest"].split(":")[1] / "rootfs"
        bundle = _runc_bundle(tmp, rootfs)
        runc_argv = ["runc", "--root", str(runc_root), "run", "--bundle", str(bundle), "bench"]
        unshare_argv = ["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--net", "true"]
        n = args.runs
        samples = {}
        # interleave the series so drift on the machine hits all of them alike
        plan = {
            "none": [md, "run", "--rm", "--network", "none", "busybox", "true"],
            "host": [md, "run", "--rm", "--network", "host", "busybox", "true"],
            "none-runc": [md, "run", "--rm", "--network", "none", "--runtime", "runc", "busybox", "true"],
            "runc": runc_argv,
            "unshare": unshare_argv,
            # the interpreter alone, and what any click command line costs before it
            # does anything (a plain `run` does not import click)
            "python": [sys.executable, "-c", "pass"],
            "floor": [sys.executable, "-c", "import click"],
        }
        for key in plan:
            samples[key] = []
        for _ in range(n):
            for key, argv_ in plan.items():
                samples[key] += time_cmd(argv_, 1, env=env)
        ms = {k: median_ms(v) for k, v in samples.items()}
        print(f"minidocker run: medians of {n} runs each, one invocation "
              f"(private state in {tmp}, removed afterwards)")
        print_table("container start to exit (`true`)", [
            ("minidocker run --rm --network none", ms["none"], "runc run", ms["runc"]),
            ("minidocker run --rm --network host", ms["host"], "runc run", ms["runc"]),
            ("minidocker run --rm --network none --runtime runc", ms["none-runc"], "runc run", ms["runc"]),
            ("minidocker run --rm --network none", ms["none"], "unshare (5 ns) true", ms["unshare"]),
            ("runc run (for scale)", ms["runc"], "unshare (5 ns) true", ms["unshare"]),
            ("python -c pass (interpreter start)", ms["python"], "runc run", ms["runc"]),
            ("python -c 'import click' (other commands)", ms["floor"], "runc run", ms["runc"]),
        ])
        _peer_rows(md, env, tmp, n)
        mem = _shim_memory(md, env)
        rss = mem.get("Rss", 0) / 1024
        print(f"\nshim resident memory (running -d container): RSS {rss:.1f} MiB, "
              f"PSS {mem.get('Pss', 0) / 1024:.1f} MiB (100 of them beside Docker's: "
              f"`scripts/bench memory`)")
        ratio = ms["none"] / ms["runc"]
        print(f"\ngoal: none <= {GOAL_RATIO:g}x runc run: {ratio:.2f}x -> "
              f"{'met' if ratio <= GOAL_RATIO else 'MISSED'}")
        print(f"goal: shim <= {GOAL_SHIM_MB:.0f} MB resident: {rss:.1f} MiB -> "
              f"{'met' if rss <= GOAL_SHIM_MB else 'MISSED'}")
        return 0
    finally:
        _cleanup(md, env, tmp, runc_root)


GOAL_BRIDGE_VS_DOCKER = 0.33   # issue 15


def _peer_rows(md: str, env: dict, tmp: Path, n: int) -> None:
    """`run --rm` with --network none / host / bridge -p 8080:80 for
    minidocker, Docker and podman (CNI), each inside a throwaway network
    namespace (bench/netns.py), so no bridge or rule lands on this host."""
    from bench.netns import BenchNetns
    from bench.peers import OPERATIONS, measure
    cni_env = dict(env, MINIDOCKER_CNI_CACHE=str(tmp / "cni-cache"), MINIDOCKER_CNI_CONF=str(tmp / "net.d"),
                   CNI_PATH=f"{Path(md).parent}:/usr/lib/cni")
    ours: dict[str, float] = {}
    with BenchNetns() as ns:
        argvs = {label: ns.cmd([md, "run", "--rm", *args, "busybox", "true"]) for label, args in OPERATIONS}
        for argv in argvs.values():
            time_cmd(argv, 1, env=cni_env)  # warm up (the bridge network's record)
        samples: dict[str, list] = {label: [] for label in argvs}
        for _ in range(n):
            for label, argv in argvs.items():
                samples[label] += time_cmd(argv, 1, env=cni_env)
        ours = {label: median_ms(v) for label, v in samples.items()}
        exec_argv = ns.cmd([md, "run", "--rm", "--network", "bridge", "-p", "8080:80", "busybox", "true"])
        ours["exec"] = median_ms(time_cmd(exec_argv, n, env=dict(cni_env, MINIDOCKER_CNI_EXEC="1")))
    rows, notes = measure(n)
    table = []
    for label, _args in OPERATIONS:
        peer_rows = [r for r in rows if r[0] == label]
        table += [(f"{label}", ours[label], peer, ms) for _l, _o, peer, ms in peer_rows] or \
            [(label, ours[label], "(no peer ran)", None)]
    label = "run --rm --network bridge -p 8080:80"
    table.append((label + " [cni-bridge exec'd]", ours["exec"], "minidocker in-process",
                  ours[label]))
    print_table(f"`run --rm ARGS busybox true` beside the peers, in a throwaway netns "
                f"(medians of {n})", table)
    for note in notes:
        print(f"note: {note}")
    docker = next((ms for l, _o, peer, ms in rows if l == label and peer == "docker"), None)
    if docker:
        ratio = ours[label] / docker
        print(f"goal: bridge -p <= {GOAL_BRIDGE_VS_DOCKER}x docker: {ratio:.2f}x -> "
              f"{'met' if ratio <= GOAL_BRIDGE_VS_DOCKER else 'MISSED'}")
    else:
        print(f"goal: bridge -p <= {GOAL_BRIDGE_VS_DOCKER}x docker: docker did not run (see the note)")


def _cleanup(md: str, env: dict, tmp: Path, runc_root: Path) -> None:
    proc = subprocess.run([md, "ps", "-aq"], env=env, capture_output=True, text=True, timeout=30)
    for cid in proc.stdout.split():
        subprocess.run([md, "rm", "-f", cid], env=env, capture_output=True, timeout=30)
    if runc_root.exists():
        subprocess.run(["runc", "--root", str(runc_root), "delete", "--force", "bench"],
                       capture_output=True, timeout=30)
    with open("/proc/self/mountinfo") as fh:
        left = [l.split()[4] for l in fh if str(tmp) in l.split()[4]]
    for mnt in sorted(left, key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=10)
    from bench.soak import remove_cgroup_parent
    for problem in remove_cgroup_parent(Path(env["MINIDOCKER_ROOT"])):
        print(f"bench: cgroup left: {problem}", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)
