"""Services in a cluster of namespace nodes: the service in etcd, every node
agent programming it from the pods of every node (kube-proxy's place), so the
VIP spreads over pods on both nodes, a node port answers on every node even
when the pod is elsewhere, a stopped pod gets nothing more, and `service rm`
and `node leave` leave no rule behind (the cluster fixture's leak check)."""
from __future__ import annotations

import collections
import json

import pytest

from bridge_helpers import TOOLS, client, load_tools, tcp_server
from cluster_helpers import ETCD_URL, node_name, settle
from harness import NODE_ADDR
from test_services import requests


def endpoints(node, name: str) -> list[str]:
    proc = node.md("service", "inspect", name, check=False)
    if proc.returncode:
        return []
    return sorted(f"{e['Name']}@{e['Node']}" for e in json.loads(proc.stdout)[0]["Endpoints"])


@pytest.mark.parametrize("cluster", ["iptables", "nftables"], indirect=True)
def test_service_across_nodes(cluster, tools):
    n1, n2 = cluster.add_node(), cluster.add_node()   # every command of theirs on one backend
    n1.md("cluster", "init", "--etcd", ETCD_URL, "--backend", "host-gw")
    for n in (n1, n2):
        cluster.join(n)          # the agent inherits the backend: it programs the services
        load_tools(n, tools)
    for n, name in ((n1, "web1"), (n2, "web2")):
        n.md("run", "-d", "--name", name, "--network", "pods", "--label", "app=web", TOOLS,
             *tcp_server(name))
    n1.md("run", "-d", "--name", "cl", "--network", "pods", TOOLS, "sleep", "300")
    vip = n1.md("service", "create", "web", "--network", "pods", "--selector", "app=web",
                "--port", "80", "--type", "NodePort", "--node-port", "30080",
                ).stdout.strip()
    want = [f"web1@{node_name(n1)}", f"web2@{node_name(n2)}"]
    for n in (n1, n2):   # every agent programs it, with the pods of both nodes
        settle(lambda n=n: endpoints(n, "web") == want, timeout=15)
    counts = collections.Counter(requests(lambda *a, **k: n1.md(*a, **k), "cl", vip, 80, 40))
    assert set(counts) == {"web1", "web2"}, counts
    for n in (n1, n2):   # a node port on every node, whichever node the pod is on
        seen = {client(n.ext_netns, NODE_ADDR, 30080, tries=3) for _ in range(12)}
        assert seen == {"web1", "web2"}, (n.name, seen)
    n2.md("stop", "-t", "0", "web2")
    settle(lambda: endpoints(n1, "web") == [want[0]], timeout=15)
    seen = {client(n1.ext_netns, NODE_ADDR, 30080, tries=3) for _ in range(10)}
    assert seen == {"web1"}, seen
    proc = n2.md("service", "create", "web", "--network", "pods", "--selector", "a=b", "--port", "80",
                 check=False)
    assert proc.returncode != 0 and "already in use" in proc.stderr
    n2.md("service", "rm", "web")
    settle(lambda: n1.md("service", "ls", "-q").stdout.split() == [], timeout=15)
    assert "svc/web" not in n1.iptables_save() + n1.nft_ruleset()
