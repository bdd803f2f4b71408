"""`scripts/bench trace`: how long `minidocker trace` takes to answer for a
delivered TCP probe (the goal: under 1 s), and what `network diagram`
costs, in a throwaway network namespace (bench/netns.py) with one busybox
httpd container behind `-p 8080:80`.

Medians over --runs executions of
  minidocker trace --to 127.0.0.1:8080            (the output path)
  minidocker trace --from web --to <bridge gw>:8080  (prerouting, hairpin)
  minidocker network diagram --format json | text
Private state under a temporary directory, removed afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from bench.table import median_ms, minidocker, print_table, root_or_exit, time_cmd

GOAL_TRACE_MS = 1000.0


def main(argv: list[str]) -> int:
    from bench.netns import BenchNetns, unmount_under
    parser = argparse.ArgumentParser(prog="scripts/bench trace", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="executions per measurement")
    args = parser.parse_args(argv)
    root_or_exit("trace")
    md = minidocker()
    tmp = Path(tempfile.mkdtemp(prefix="minidocker-bench-trace-"))
    env = dict(os.environ, MINIDOCKER_ROOT=str(tmp / "lib"), MINIDOCKER_RUN=str(tmp / "run"),
               MINIDOCKER_CNI_CACHE=str(tmp / "cni-cache"), MINIDOCKER_CNI_CONF=str(tmp / "net.d"))
    try:
        with BenchNetns() as ns:
            ns.run([md, "run", "-d", "--name", "web", "-p", "8080:80", "busybox", "httpd", "-f", "-p", "80"],
                   env=env)
            model = json.loads(ns.run([md, "network", "diagram", "--format", "json", "bridge"], env=env).stdout)
            gateway = model["networks"][0]["bridge"]["addresses"][0].split("/")[0]
            plan = {
                "local": [md, "trace", "--to", "127.0.0.1:8080"],
                "hairpin": [md, "trace", "--from", "web", "--to", f"{gateway}:8080"],
                "json": [md, "network", "diagram", "--format", "json"],
                "text": [md, "network", "diagram", "--format", "text"],
            }
            for key in ("local", "hairpin"):
                out = ns.run(plan[key], env=env).stdout
                if "delivered to" not in out:
                    raise RuntimeError(f"{key} trace was not delivered:\n{out}")
            samples: dict[str, list[float]] = {k: [] for k in plan}
            for _ in range(args.runs):
                for key, cmd in plan.items():
                    samples[key] += time_cmd(ns.cmd(cmd), 1, env=env)
            ms = {k: median_ms(v) for k, v in samples.items()}
            ns.run([md, "rm", "-f", "web"], env=env, check=False)
        print_table(f"seeing the wiring, in a throwaway netns (medians of {args.runs})", [
            ("trace --to 127.0.0.1:8080 (delivered, output)", ms["local"], "goal", GOAL_TRACE_MS),
            ("trace --from web --to gw:8080 (hairpin)", ms["hairpin"], "goal", GOAL_TRACE_MS),
            ("network diagram --format json", ms["json"], "trace (local)", ms["local"]),
            ("network diagram --format text", ms["text"], "trace (local)", ms["local"]),
        ])
        worst = max(ms["local"], ms["hairpin"])
        print(f"goal: a delivered TCP trace answers in < {GOAL_TRACE_MS:.0f} ms: {worst:.0f} ms -> "
              f"{'met' if worst < GOAL_TRACE_MS else 'MISSED'}")
        return 0
    finally:   # the namespace is gone (and its processes with it): no teardown outside it
        unmount_under(str(tmp))
        shutil.rmtree(tmp, ignore_errors=True)
