"""`scripts/bench services`: the cost of services, per firewall backend.

In a throwaway node namespace (the test suite's harness, so the bench and the
tests build the same thing) with one backend container:
- first-packet latency: TCP connect() from the node to a service's VIP (the
  SYN is DNATed by our rules, the handshake completes with the backend), with
  10, 1,000 and 5,000 services defined, the measured one created last (the
  end of iptables' dispatch list); goal: nftables flat (5,000 <= 1.1x 10);
- adding one service when 1,000 exist: the rule update (in-process, the
  dataplane call) and the whole `minidocker service create` command; goal
  for the update <= 50 ms;
- DNS: queries per second answered and p50/p99 latency, from inside one
  container's network namespace, one query in flight (latency) and 32
  (throughput), for a container name.
The filler services are loaded through the same renderers in one transaction
per backend (creating 5,000 by command would take most of an hour).
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.netns import in_netns
from bench.table import print_table

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from bridge_helpers import TOOLS, load_tools, tools_archive  # noqa: E402
from harness import Node  # noqa: E402

SIZES = (10, 1000, 5000)
#: The one backend: a deep accept queue, so back-to-back connects never
#: find it full (a dropped SYN costs a 1 s retransmission, not our rules).
BACKEND = ["socat", "TCP-LISTEN:80,fork,reuseaddr,backlog=4096", "SYSTEM:true"]


def connect_ms(vip: str, port: int, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # RST: no TIME_WAIT
        t0 = time.perf_counter()
        s.connect((vip, port))
        samples.append((time.perf_counter() - t0) * 1000)
        s.close()
    return samples


def fillers(count: int, backend: str, net, endpoint: dict) -> list[dict]:
    from minidocker.services import store
    services = []
    taken: set[str] = set()
    for i in range(count):
        svc = store.new_record(f"f{i:05d}", net, "ClusterIP", {"bench": f"f{i}"},
                               [{"Protocol": "tcp", "Port": 80, "TargetPort": 80, "NodePort": 0}],
                               "None", backend, [], 0)
        svc["ClusterIP"] = store.allocate_vip(taken)
        taken.add(svc["ClusterIP"])
        svc["Endpoints"] = [endpoint]
        services.append(svc)
    return services


def measure(node: Node, backend: str, size: int, runs: int) -> dict:
    """Latency with `size` services, and the add-one time at that size."""
    from minidocker.network import networks
    from minidocker.services import dataplane, endpoints, lifecycle, store
    os.environ.update(node.env(MINIDOCKER_FIREWALL=backend))
    net = networks.resolve("bridge")

    def load():
        ep = endpoints.select({"Network": net.name, "NetworkID": net.id,
                                         "Selector": {"app": "b"}})[0]
        filler = fillers(size - 1, backend, net, ep)
        with store.lock():
            dataplane.program_new(filler)
            for s in filler:     # with their plans: the next change renders against them
                store.save(s)
        t0 = time.perf_counter()
        lifecycle.create("zz-target", selector=["app=b"], ports=["80"], network="bridge")
        add_ms = (time.perf_counter() - t0) * 1000
        vip = store.get("zz-target")["ClusterIP"]
        connect_ms(vip, 80, 20)   # warm: ARP, the backend's first forks
        lat = connect_ms(vip, 80, runs)
        # the rule update alone: remove and add one more service, in process
        updates = []
        for i in range(5):
            with store.lock():
                services = store.all_services()
                svc = store.new_record(f"zz-extra{i}", net, "ClusterIP", {"app": "b"},
                                       [{"Protocol": "tcp", "Port": 81, "TargetPort": 80,
                                         "NodePort": 0}], "None", backend, services, 0)
                svc["Endpoints"] = [ep]
                t0 = time.perf_counter()
                dataplane.program(svc, services)
                updates.append((time.perf_counter() - t0) * 1000)
                store.save(svc)
        return {"lat": statistics.median(lat), "p90": sorted(lat)[int(len(lat) * 0.9)],
                "add_cmd_inproc": add_ms, "update": statistics.median(updates)}
    out = in_netns(node.netns, load)
    t0 = time.perf_counter()
    node.md("service", "create", "zz-cli", "--selector", "app=b", "--port", "82:80",
            env=node.env(MINIDOCKER_FIREWALL=backend))
    out["add_cli"] = (time.perf_counter() - t0) * 1000
    in_netns(node.netns, lambda: _remove_all())
    return out


def _remove_all() -> None:
    """Every service gone: the records, then the rules with the last one."""
    from minidocker.services import dataplane, store
    with store.lock():
        services = store.all_services()
        for name in sorted({s["Backend"] for s in services}):
            dataplane.unprogram({"Name": "", "Backend": name}, [])
        for s in services:
            store.delete(s["Name"])


def dns_figures(node: Node, cid: str, seconds: float = 3.0) -> dict:
    """qps and latency of queries for a container name, from its netns."""
    from dnslib import DNSRecord
    query = DNSRecord.question("bench-b").pack()

    def body():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("10.77.0.1", 53))
        s.settimeout(2)
        lat = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            s.send(query)
            s.recv(4096)
            lat.append((time.perf_counter() - t0) * 1000)
        answered, window, t0 = 0, 32, time.perf_counter()
        for _ in range(window):
            s.send(query)
        while time.perf_counter() - t0 < seconds:
            s.recv(4096)
            answered += 1
            s.send(query)
        qps = answered / (time.perf_counter() - t0)
        lat.sort()
        return {"p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99)], "qps": qps,
                "qps1": len(lat) / seconds}
    return in_netns(str(node.run_root / "netns" / cid), body)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench services")
    ap.add_argument("--runs", type=int, default=300, help="connects per measurement")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="mdbench-svc-") as tmp:
        node = Node.create(Path(tmp) / "node")
        try:
            load_tools(node, tools_archive(Path(tmp)))
            results = {}
            for backend in ("nftables", "iptables"):
                env = node.env(MINIDOCKER_FIREWALL=backend)
                node.md("run", "-d", "--name", "bk", "--label", "app=b", TOOLS, *BACKEND, env=env)
                for size in sizes:
                    results[backend, size] = measure(node, backend, size, args.runs)
                    print(f"{backend} {size}: {results[backend, size]}", file=sys.stderr)
                node.md("rm", "-f", "bk", env=env)
            node.md("network", "create", "--subnet", "10.77.0.0/24", "dnsnet")
            cid = node.md("run", "-d", "--name", "bench-b", "--network", "dnsnet", TOOLS,
                          "sleep", "300").stdout.strip()
            dns = dns_figures(node, cid)
            node.md("rm", "-f", "bench-b")
            node.md("network", "rm", "dnsnet")
            left = node.leftovers()
        finally:
            node.destroy()
    print("\nservices: TCP connect() to a VIP from the node, median (p90) in microseconds")
    print(f"{'services defined':>18} {'nftables':>18} {'iptables':>18}")
    for size in sizes:
        nft, ipt = results["nftables", size], results["iptables", size]
        print(f"{size:>18} {nft['lat'] * 1000:>9.1f} ({nft['p90'] * 1000:6.1f}) "
              f"{ipt['lat'] * 1000:>9.1f} ({ipt['p90'] * 1000:6.1f})")
    base = results["nftables", sizes[0]]["lat"]
    top = results["nftables", sizes[-1]]["lat"]
    print(f"nftables {sizes[-1]} vs {sizes[0]}: {top / base:.2f}x (goal <= 1.10x); iptables "
          f"{results['iptables', sizes[-1]]['lat'] / results['iptables', sizes[0]]['lat']:.2f}x")
    rows = []
    for size in sizes:
        nft, ipt = results["nftables", size], results["iptables", size]
        rows.append((f"add one service's rules at {size}", nft["update"], "iptables", ipt["update"]))
        rows.append((f"`service create` command at {size}", nft["add_cli"], "iptables", ipt["add_cli"]))
    print_table("services: adding one service (goal: rule update <= 50 ms at 1,000)", rows)
    print(f"\nDNS from one container: {dns['qps']:.0f} qps with 32 in flight, "
          f"{dns['qps1']:.0f} qps one at a time; latency p50 {dns['p50']:.2f} ms, "
          f"p99 {dns['p99']:.2f} ms")
    if left:
        print(f"bench left behind: {left}", file=sys.stderr)
        return 1
    return 0
