"""A cluster on one machine: node namespaces (harness.Node, each with its
own state root and `ext`) on an underlay bridge that lives in a namespace of
its own, with etcd started by the test on the underlay and stopped by pid.

underlay ns: bridge `ulbr` 192.0.2.254/24 (etcd listens there) and
198.51.100.254/24 (a router for nodes "on another link").
node k: `ul0` 192.0.2.k/24 (or 198.51.100.k/24 routed through .254).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from harness import SESSION_PREFIX, Node, run
from mdtools import wait_for

UNDERLAY_GW = "192.0.2.254"
ROUTED_GW = "198.51.100.254"
ETCD_URL = f"http://{UNDERLAY_GW}:2379"
ETCD_PREFIX = "/minidocker/cluster/"
RTPROT = "77"


class ClusterNode(Node):
    """A node whose minidocker commands all use one firewall backend."""
    firewall: str = "iptables"
    underlay_ip: str = ""

    def env(self, **extra) -> dict:
        return super().env(**{"MINIDOCKER_FIREWALL": self.firewall, **extra})


class Cluster:
    def __init__(self, root: Path, firewall: str = "iptables"):
        self.firewall = firewall
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ns = f"{SESSION_PREFIX}ul{uuid.uuid4().hex[:4]}"
        self.nodes: list[Node] = []
        self.made = 0
        self.etcd: subprocess.Popen | None = None
        run(["ip", "netns", "add", self.ns])
        self.sh("ip", "link", "set", "lo", "up")
        self.sh("ip", "link", "add", "ulbr", "type", "bridge")
        self.sh("ip", "addr", "add", f"{UNDERLAY_GW}/24", "dev", "ulbr")
        self.sh("ip", "addr", "add", f"{ROUTED_GW}/24", "dev", "ulbr")
        self.sh("ip", "link", "set", "ulbr", "up")
        self.sh("sysctl", "-qw", "net.ipv4.ip_forward=1")

    @property
    def netns(self) -> str:
        return f"/run/netns/{self.ns}"

    def sh(self, *argv, check=True, timeout=30):
        return run(["nsenter", f"--net={self.netns}", "--", *argv], check=check, timeout=timeout)

    # --- etcd ------------------------------------------------------------------------
    def start_etcd(self) -> None:
        data = self.root / "etcd"
        log = open(self.root / "etcd.log", "ab")
        self.etcd = subprocess.Popen(
            ["nsenter", f"--net={self.netns}", "--", "etcd", "--name", "md", "--data-dir", str(data),
             "--listen-client-urls", ETCD_URL, "--advertise-client-urls", ETCD_URL,
             "--listen-peer-urls", "http://127.0.0.1:2380",
             "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
             "--initial-cluster", "md=http://127.0.0.1:2380"],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        wait_for(lambda: self.sh("curl", "-s", "-m", "1", f"{ETCD_URL}/health",
                                 check=False).stdout.count("true") > 0, timeout=20, interval=0.1)

    def stop_etcd(self) -> None:
        if self.etcd is not None:
            os.killpg(self.etcd.pid, signal.SIGKILL)
            self.etcd.wait(timeout=10)
            self.etcd = None

    def etcd_keys(self) -> list[str]:
        """Every key under our prefix (etcd's JSON gateway, as the agent reads it)."""
        import base64
        body = json.dumps({"key": base64.b64encode(ETCD_PREFIX.encode()).decode(),
                           "range_end": base64.b64encode(ETCD_PREFIX[:-1].encode() + b"0").decode(),
                           "keys_only": True})
        out = self.sh("curl", "-s", "-m", "3", "-X", "POST", f"{ETCD_URL}/v3/kv/range", "-d", body).stdout
        return sorted(base64.b64decode(kv["key"]).decode() for kv in json.loads(out).get("kvs", []))

    # --- nodes -----------------------------------------------------------------------
    def add_node(self, routed: bool = False) -> ClusterNode:
        self.made += 1      # never reused: a peer's ARP cache may still hold an old node's MAC
        k = self.made
        node = ClusterNode.create(self.root / f"n{k}")
        node.firewall = self.firewall
        self.nodes.append(node)
        peer = f"ul{k}{uuid.uuid4().hex[:4]}"
        self.sh("ip", "link", "add", peer, "type", "veth", "peer", "name", "ul0", "netns", node.netns)
        self.sh("ip", "link", "set", peer, "master", "ulbr", "up")
        addr = f"198.51.100.{k}" if routed else f"192.0.2.{k}"
        node.sh("ip", "addr", "add", f"{addr}/24", "dev", "ul0")
        node.sh("ip", "link", "set", "ul0", "up")
        other = "192.0.2.0/24" if routed else "198.51.100.0/24"
        node.sh("ip", "route", "add", other, "via", ROUTED_GW if routed else UNDERLAY_GW)
        node.underlay_ip = addr
        return node

    def join(self, node: Node, *extra, check=True):
        return node.md("node", "join", "--etcd", ETCD_URL, "--name", node_name(node),
                       "--public-ip", node.underlay_ip, "--lease-ttl", "4s", *extra, check=check)

    def destroy(self) -> list[str]:
        """Leave every node still in, stop etcd, remove the underlay; what the
        nodes left behind is returned (the leak check)."""
        left = []
        for node in self.nodes:
            ids = node.md("ps", "-aq", check=False).stdout.split()
            if ids:
                node.md("rm", "-f", *ids, check=False)
            node.md("node", "leave", check=False)
            found = leftovers(node)
            if found:
                left.append(f"{node.name}: {found}")
            node.sh("ip", "link", "del", "ul0", check=False)
        self.stop_etcd()
        for node in self.nodes:
            left += [f"{node.name}: {x}" for x in node.leftovers()]
            node.destroy()
        run(["ip", "netns", "del", self.ns], check=False)
        return left


def node_name(node: Node) -> str:
    return f"node{node.root.name[1:]}"


def our_routes(node: Node) -> list[str]:
    return [l for l in node.sh("ip", "route", "show", "proto", RTPROT).stdout.splitlines() if l]


def leftovers(node: Node) -> list[str]:
    """What of the cluster a node holds beyond its underlay link: routes of
    ours, vxlan devices, the pods bridge, permanent FDB/neighbour entries."""
    found = []
    routes = our_routes(node)
    if routes:
        found.append(f"routes: {routes}")
    extra = node.link_names() - {"lo", "uplink0", "ul0"}
    if extra:
        found.append(f"links: {sorted(extra)}")
    neigh = [l for l in node.sh("ip", "neigh", "show", "nud", "permanent").stdout.splitlines() if l]
    if neigh:
        found.append(f"neighbours: {neigh}")
    fdb = [l for l in node.sh("bridge", "fdb", "show").stdout.splitlines() if " dst " in l]
    if fdb:
        found.append(f"fdb: {fdb}")
    return found


def peer(text: str) -> str:
    """A dual-stack server's $SOCAT_PEERADDR as plain IPv4 when v4-mapped."""
    import ipaddress
    text = text.strip().strip("[]")
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return text
    return str(addr.ipv4_mapped or addr) if addr.version == 6 else str(addr)


def settle(predicate, timeout=10.0):
    return wait_for(predicate, timeout=timeout, interval=0.05)


def elapsed(fn) -> float:
    t = time.monotonic()
    fn()
    return time.monotonic() - t
