"""The CNI executor's own overhead per plugin call.

A chain of no-op plugins (a tiny /bin/sh script that prints a result) runs
through `CNIExecutor.add` + `delete`; the same binaries are also exec'd bare
(subprocess.run with the same stdin and environment). The difference per call
is what the executor adds: request building, environment, locks, result
parsing and conversion, the cache write/read/delete. Goal: <= 3 ms per call.

    python -m bench.cni_exec [--rounds N] [--chain N]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.table import print_table
from cni.conf import NetworkConfigList
from minidocker.network.cni.executor import CNIExecutor, RuntimeConf
from minidocker.network.cni.invoke import plugin_env

GOAL_MS = 3.0
NOOP = """#!/bin/sh
printf '{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[{"interface":0,"address":"10.0.0.2/24"}]}'
"""


def measure(rounds: int = 20, chain: int = 10) -> dict:
    """Median ms per call: through the executor, bare, and the difference."""
    with tempfile.TemporaryDirectory(prefix="md-cni-bench-") as tmp:
        tmp = Path(tmp)
        bindir = tmp / "bin"
        bindir.mkdir()
        plugin = bindir / "noop"
        plugin.write_text(NOOP)
        plugin.chmod(0o755)
        netns = tmp / "netns"
        netns.write_text("")
        net = NetworkConfigList.from_dict({"cniVersion": "1.0.0", "name": "bench", "plugins": [
            {"type": "noop", "capabilities": {"portMappings": True}} for _ in range(chain)]})
        ex = CNIExecutor(tmp / "net.d", tmp / "cache", [str(bindir)], timeout=30)
        rt = RuntimeConf("benchctr", str(netns), "eth0", [("K", "V")],
                         {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
        stdin = json.dumps(net.plugin_request(0, runtime_config=rt.capability_args)).encode()
        env = plugin_env("ADD", container_id=rt.container_id, netns=rt.netns, ifname=rt.ifname,
                         args=rt.args, path=ex.path)
        calls = 2 * chain
        ours, bare = [], []
        ex.add(net, rt)            # warm caches (imports, page cache)
        ex.delete(net, rt)
        for _ in range(rounds):
            start = time.perf_counter()
            ex.add(net, rt)
            ex.delete(net, rt)
            ours.append((time.perf_counter() - start) / calls)
            start = time.perf_counter()
            for _ in range(calls):
                subprocess.run([str(plugin)], input=stdin, env=env, capture_output=True, check=True)
            bare.append((time.perf_counter() - start) / calls)
        ours_ms = statistics.median(ours) * 1000
        bare_ms = statistics.median(bare) * 1000
        return {"executor_ms": ours_ms, "bare_ms": bare_ms, "overhead_ms": ours_ms - bare_ms,
                "chain": chain, "rounds": rounds}


def rows(rounds: int = 20, chain: int = 10) -> list[tuple[str, float | None, str, float | None]]:
    """Rows for bench.table.print_table: (operation, ours ms, peer, peer ms)."""
    m = measure(rounds, chain)
    ok = "ok" if m["overhead_ms"] <= GOAL_MS else "OVER GOAL"
    return [
        (f"plugin call via executor ({chain}-plugin chain)", m["executor_ms"], "bare exec", m["bare_ms"]),
        (f"executor overhead per call (goal {GOAL_MS:g} ms: {ok})", m["overhead_ms"], "goal", GOAL_MS),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.cni_exec", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--chain", type=int, default=10)
    a = p.parse_args(argv)
    print_table("CNI executor overhead (median per plugin call, ADD+DEL of a no-op chain)",
                rows(a.rounds, a.chain))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
