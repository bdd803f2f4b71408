"""Dispatch `scripts/bench [SUITE]` to the suite's module."""
import importlib
import sys

SUITES = {
    "run": "bench.run",      # minidocker run vs runc run vs unshare (default)
    "cni": "bench.cni",      # cni-bridge vs reference plugins; executor overhead
    "soak": "bench.soak",    # run/rm cycles, leaks and memory over time
    "scale": "bench.scale",  # per-container run/rm/connection cost, containers 1-20 vs N
    "cluster": "bench.cluster",  # pod network across nodes: convergence, data path, agent
    "trace": "bench.trace",  # trace (a delivered TCP probe) and network diagram
    "images": "bench.images",  # import, load, pull beside docker and podman; shared-base disk use
    "services": "bench.services",  # VIP first-packet latency, add-one-service time, DNS qps
    "memory": "bench.memory",  # PSS of 100 containers' shims beside containerd-shim and conmon
}


def main(argv: list[str]) -> int:
    suite = argv[0] if argv and not argv[0].startswith("-") else "run"
    if suite not in SUITES:
        print(f"bench: unknown suite {suite!r}; choose one of {', '.join(SUITES)}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUITES[suite])
    return module.main(argv[1:] if argv and argv[0] == suite else argv)


sys.exit(main(sys.argv[1:]))
