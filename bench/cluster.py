"""`scripts/bench cluster`: the pod network across nodes, per backend.

A cluster of node namespaces on one underlay with its own etcd (the test
suite's cluster_helpers, so the bench and the tests build the same thing):
- join: `node join` until it returns (routes or overlay to every peer in place);
- convergence: from `node join` returning on a new node to the route to its
  subnet being in place on every peer (netlink monitors in each peer), and
  to every peer node pinging a pod started on the new node right after join
  returned (the pod's start included), at 3 and at 20 nodes;
- data path: TCP throughput (iperf3, 3 s) and request latency (64-byte
  request/response round trips on one connection) between pods on two nodes,
  beside the same between two pods on one node (the peer figure);
- the agent's resident memory and CPU over 10 idle seconds.
Everything lives in namespaces and temporary directories the bench removes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.netns import in_netns
from bench.probes import ECHO_SERVER, IPERF3, IPERF_PORT, gbps, iperf3_client, median_us, round_trips
from bench.table import print_table, root_or_exit

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from bridge_helpers import load_tools, tools_archive  # noqa: E402
from cluster_helpers import ETCD_URL, Cluster  # noqa: E402

GOALS = {"conv3": 1000.0, "conv20": 2000.0, "host-gw": 0.9, "vxlan": 0.7}


def _image(tmp: Path) -> Path:
    """The tests' tools image plus iperf3 and its libraries."""
    return tools_archive(tmp, extra=(IPERF3,))


def _pod(node, name: str, *cmd: str) -> tuple[str, str]:
    """(pod address, its netns path) of a detached container on `pods`."""
    node.md("run", "-d", "--name", name, "--network", "pods", "mdtools:1", *cmd)
    info = json.loads(node.md("inspect", name).stdout)[0]
    return (info["NetworkSettings"]["Networks"]["pods"]["IPAddress"],
            f"/proc/{info['State']['Pid']}/ns/net")


class _RouteWatch:
    """A netlink route monitor in one peer's namespace, on a thread of its
    own: the moment the agent's first route (protocol 77) to a subnet not
    in `known` appears there."""

    def __init__(self, netns: str, known: set[str]):
        from pyroute2 import IPRoute
        self.ipr = in_netns(netns, lambda: IPRoute())     # the socket stays in that namespace
        self.ipr.bind()
        self.known, self.seen = known, None
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        from minidocker.cluster.backends import RTPROT
        while self.seen is None:
            for msg in self.ipr.get():
                if msg.get("event") == "RTM_NEWROUTE" and msg.get("proto") == RTPROT and \
                        f"{msg.get_attr('RTA_DST')}/{msg['dst_len']}" not in self.known:
                    self.seen = time.monotonic()
                    return

    def wait(self, timeout: float = 30.0) -> float:
        self.thread.join(timeout)
        if self.seen is None:
            raise TimeoutError("no route to the new node")
        return self.seen


def _subnet(node) -> str:
    return json.loads(node.md("network", "inspect", "pods").stdout)[0]["IPAM"]["Config"][0]["Subnet"]


def _converge(cluster: Cluster, runs: int) -> tuple[float, float, float]:
    """Medians (ms): `node join` on a new node until it returns; from its
    return to the route to its subnet in place on every peer (netlink
    monitors; negative: they were there before join returned); and from its
    return to every peer node answered by a pod started on the new node
    right after (the pod's start included)."""
    joins, routes, pods = [], [], []
    known = {_subnet(n) for n in cluster.nodes}
    for _ in range(runs):
        new = cluster.add_node()
        peers = [n for n in cluster.nodes if n is not new]
        watches = [_RouteWatch(n.netns, known) for n in peers]
        try:
            t = time.monotonic()
            out = cluster.join(new).stdout
            t0 = time.monotonic()
            got = [w.wait() for w in watches]
        finally:
            for w in watches:
                w.ipr.close()
        joins.append((t0 - t) * 1000)
        routes.append((max(got) - t0) * 1000)
        subnet = out.split("subnet ")[1].split(",")[0]
        ip = subnet.rsplit(".", 1)[0] + ".100"
        procs = [n.popen(["sh", "-c", f"until ping -c1 -W0.05 {ip} >/dev/null 2>&1; do :; done"])
                 for n in peers]
        t1 = time.monotonic()
        new.md("run", "-d", "--name", "target", "--network", "pods", "--ip", ip, "busybox", "sleep", "600")
        for p in procs:
            p.wait(timeout=30)
        pods.append((time.monotonic() - t1) * 1000)
        new.md("rm", "-f", "target")
        new.md("node", "leave")
        new.sh("ip", "link", "del", "ul0", check=False)
        cluster.nodes.remove(new)
        new.destroy()
    return statistics.median(joins), statistics.median(routes), statistics.median(pods)


def _latency(netns: str, ip: str) -> float:
    """Median µs of a 64-byte request/response on one TCP connection."""
    return median_us(round_trips(netns, ip))


def _throughput(node, client: str, ip: str) -> float:
    out = node.md("exec", client, *iperf3_client(ip, IPERF_PORT, 3), timeout=60).stdout
    return gbps(out)


def _datapath(cluster: Cluster) -> dict:
    n1, n2 = cluster.nodes[0], cluster.nodes[1]
    srv = f"iperf3 -s -D; {' '.join(ECHO_SERVER)}"
    ip_far, _ = _pod(n2, "far", "sh", "-c", srv)
    ip_near, _ = _pod(n1, "near", "sh", "-c", srv)
    _, client_ns = _pod(n1, "client", "sleep", "3600")
    time.sleep(0.5)
    out = {"gbps_far": _throughput(n1, "client", ip_far), "gbps_near": _throughput(n1, "client", ip_near),
           "us_far": _latency(client_ns, ip_far), "us_near": _latency(client_ns, ip_near)}
    for n, ref in ((n2, "far"), (n1, "near"), (n1, "client")):
        n.md("rm", "-f", ref)
    return out


def _agent_idle(node) -> tuple[float, float]:
    pid = json.loads((node.run_root / "cluster/agent.json").read_text())["pid"]
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    time.sleep(10)
    after = proc.cpu_times()
    cpu = (after.user + after.system - before.user - before.system) / 10 * 100
    return proc.memory_info().rss / 1e6, cpu


def run_backend(backend: str, runs: int, image: Path, tmp: Path) -> dict:
    cluster = Cluster(tmp / backend)
    res = {}
    try:
        cluster.start_etcd()
        first = cluster.add_node()
        first.md("cluster", "init", "--etcd", ETCD_URL, "--backend", backend)
        for node in (first, cluster.add_node(), cluster.add_node()):
            cluster.join(node)
        res["join3"], res["conv3"], res["pod3"] = _converge(cluster, runs)
        for n in cluster.nodes[:2]:
            load_tools(n, image)
        res.update(_datapath(cluster))
        res["rss"], res["cpu"] = _agent_idle(cluster.nodes[0])
        while len(cluster.nodes) < 19:
            cluster.join(cluster.add_node())
        res["join20"], res["conv20"], res["pod20"] = _converge(cluster, runs)
    finally:
        left = cluster.destroy()
    if left:
        print(f"bench cluster: left behind: {left}", file=sys.stderr)
    return res


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench cluster", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="convergence samples per cluster size")
    opts = ap.parse_args(argv)
    root_or_exit("cluster")
    with tempfile.TemporaryDirectory(prefix="mdbench-cluster-") as d:
        tmp = Path(d)
        image = _image(tmp / "image")
        results = {b: run_backend(b, opts.runs, image, tmp) for b in ("host-gw", "vxlan")}
    for b, r in results.items():
        print_table(f"cluster, {b}: medians", [
            ("node join, 4th node", r["join3"], "", None),
            ("node join, 20th node", r["join20"], "", None),
            ("routes on every peer after join, 3 peers", r["conv3"], "", None),
            ("routes on every peer after join, 19 peers", r["conv20"], "", None),
            (f"pod answering 3 peers (goal <= {GOALS['conv3']:.0f} ms)", r["pod3"], "", None),
            (f"pod answering 19 peers (goal <= {GOALS['conv20']:.0f} ms)", r["pod20"], "", None),
        ])
        ratio = r["gbps_far"] / r["gbps_near"]
        print(f"TCP throughput pod to pod: across nodes {r['gbps_far']:.2f} Gbit/s, same node "
              f"{r['gbps_near']:.2f} Gbit/s, ratio {ratio:.2f}x (goal >= {GOALS[b]}x)")
        print(f"request latency pod to pod: across nodes {r['us_far']:.1f} us, same node "
              f"{r['us_near']:.1f} us, ratio {r['us_far'] / r['us_near']:.2f}x")
        print(f"agent idle: RSS {r['rss']:.1f} MB, CPU {r['cpu']:.2f}% over 10 s")
    return 0
