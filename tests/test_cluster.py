"""The pod network across nodes: etcd leases, the node agent, host-gw and
vxlan, in a cluster of node namespaces on one underlay (cluster_helpers)."""
from __future__ import annotations

import json
import os
import signal

import pytest

from bridge_helpers import client, ext_server, in_container, load_tools, run_server, stop_server
from cluster_helpers import ETCD_URL, leftovers, node_name, our_routes, peer, settle
from harness import EXT_ADDR, NODE_ADDR, VENV_BIN


def pod_ip(node, ref: str) -> str:
    info = json.loads(node.md("inspect", ref).stdout)[0]
    return info["NetworkSettings"]["Networks"]["pods"]["IPAddress"]


def start_pod(node, tools, name: str) -> str:
    load_tools(node, tools)
    run_server(node, name, "--network", "pods", "-p", "8080:80", tcp="$SOCAT_PEERADDR",
               udp="$SOCAT_PEERADDR")
    return pod_ip(node, name)


@pytest.mark.parametrize("backend,cluster", [("host-gw", "iptables"), ("vxlan", "nftables")],
                         indirect=["cluster"])
def test_pods_reach_each_other_across_nodes(cluster, tools, backend):
    """Both backends, each with one of the firewall backends (masquerade
    only beyond the cluster range is a rule of each)."""
    nodes = [cluster.add_node() for _ in range(3)]
    n1, n2, n3 = nodes
    out = n1.md("cluster", "init", "--etcd", ETCD_URL, "--backend", backend).stdout
    assert "initialised" in out and backend in out
    for n in nodes:
        assert "joined: subnet 10.244." in cluster.join(n).stdout
    subnets = [sub_of(n) for n in nodes]
    assert len(set(subnets)) == 3 and all(s.endswith("/24") for s in subnets)
    # join returned with the peers in place: n3 joined last and n1 already routes to it
    assert any(r.startswith(subnets[2] + " ") for r in our_routes(n1)), our_routes(n1)
    ips = [start_pod(n, tools, f"web{i}") for i, n in enumerate(nodes)]
    for i, a in enumerate(nodes):
        for j in range(len(nodes)):
            if i != j:
                # the server answers with the client's address: the pod's own, not its node's
                assert peer(in_container(a, f"web{i}", ips[j], 80, tries=30)) == ips[i]
                assert peer(in_container(a, f"web{i}", ips[j], 53, "udp", tries=5)) == ips[i]
    # the outside world sees the node's address (masquerade beyond the cluster range)
    rules = n1.nft_ruleset() if cluster.firewall == "nftables" else n1.iptables_save()
    assert "10.244.0.0/16" in rules and ("return" in rules or "RETURN" in rules)
    srv = ext_server(n1)
    try:
        assert peer(in_container(n1, "web0", EXT_ADDR, 9000, tries=20)) == NODE_ADDR
    finally:
        stop_server(srv)
    # a published port on node 2 answers from outside
    assert peer(client(n2.ext_netns, NODE_ADDR, 8080, tries=10)) == EXT_ADDR
    # a fourth node joins and is reachable from every other node's pods
    n4 = cluster.add_node()
    cluster.join(n4)
    nodes.append(n4)
    ips.append(start_pod(n4, tools, "web3"))
    for i, a in enumerate(nodes[:3]):
        assert peer(in_container(a, f"web{i}", ips[3], 80, tries=20)) == ips[i]
    assert peer(in_container(n4, "web3", ips[0], 80, tries=20)) == ips[3]
    rows = json.loads(n1.md("node", "ls", "--format", "json").stdout)
    assert [(r["Name"], r["Health"], r["Backend"]) for r in rows] == \
        [(node_name(n), "Ready", backend) for n in nodes]
    table = n1.md("node", "ls").stdout
    assert table.splitlines()[0].split() == ["NAME", "SUBNET", "PUBLIC", "IP", "BACKEND", "HEALTH"]
    cl = json.loads(n1.md("network", "inspect", "pods").stdout)[0]["Cluster"]
    assert [p["Name"] for p in cl["Peers"]] == [node_name(n) for n in nodes[1:]]
    assert len(cl["Routes"]) == 3
    if backend == "vxlan":
        assert cl["Device"] == "mdvx.1" and len(cl["FDB"]) == 3
    # leaving: containers first (pods is refused while in use), then nothing is left
    refused = n4.md("node", "leave", check=False)
    assert refused.returncode == 1 and "active endpoints" in refused.stderr
    for i, n in enumerate(nodes):
        n.md("rm", "-f", f"web{i}")
    n4.md("node", "leave")
    assert leftovers(n4) == []
    settle(lambda: not [r for r in our_routes(n1) if r.startswith(sub_of_ip(ips[3]) + " ")], timeout=5)
    for n in nodes[:3]:
        n.md("node", "leave")
        assert leftovers(n) == []
    assert cluster.etcd_keys() == ["/minidocker/cluster/config"]


def sub_of_ip(ip: str) -> str:
    return ip.rsplit(".", 1)[0] + ".0/24"


def test_agent_killed_lease_expiry_and_etcd_restart(cluster, tools):
    n1, n2, n3 = (cluster.add_node() for _ in range(3))
    n1.md("cluster", "init", "--etcd", ETCD_URL, "--backend", "vxlan")
    for n in (n1, n2, n3):
        cluster.join(n)
    ip1, ip3 = start_pod(n1, tools, "pa"), start_pod(n3, tools, "pc")
    assert peer(in_container(n1, "pa", ip3, 80, tries=30)) == ip1
    s3 = sub_of(n3)
    agent3 = json.loads((n3.run_root / "cluster/agent.json").read_text())["pid"]
    os.kill(agent3, signal.SIGKILL)
    # the data path stays up without its agent...
    assert peer(in_container(n1, "pa", ip3, 80, tries=5)) == ip1
    # ...until the lease expires (4 s): then n3 is gone from its peers
    settle(lambda: not [r for r in our_routes(n1) if r.startswith(s3 + " ")], timeout=15)
    row = {r["Name"]: r for r in json.loads(n1.md("node", "ls", "--format", "json").stdout)}
    assert row[node_name(n3)]["Health"] == "NotReady"
    # a restarted agent takes its old subnet back and converges: no duplicates
    cluster.join(n3)
    assert pod_ip(n3, "pc") == ip3
    assert peer(in_container(n1, "pa", ip3, 80, tries=30)) == ip1
    assert len(our_routes(n3)) == 2 and len(our_routes(n1)) == 2
    routes_before = our_routes(n1)
    # etcd restarted: agents recover and see a node that joins afterwards
    log = n1.run_root / "cluster/agent.log"
    cluster.stop_etcd()
    settle(lambda: "unreachable" in log.read_text(), timeout=10)
    assert peer(in_container(n1, "pa", ip3, 80, tries=5)) == ip1      # last known state kept
    assert sorted(our_routes(n1)) == sorted(routes_before)
    cluster.start_etcd()
    settle(lambda: "reachable again" in log.read_text(), timeout=20)
    n4 = cluster.add_node()
    cluster.join(n4)
    ip4 = start_pod(n4, tools, "pd")
    assert peer(in_container(n1, "pa", ip4, 80, tries=60)) == ip1
    text = log.read_text()
    assert text.count("unreachable") == 1 and text.count("reachable again") == 1, text
    for n, ref in ((n1, "pa"), (n3, "pc"), (n4, "pd")):
        n.md("rm", "-f", ref)


def sub_of(node) -> str:
    return json.loads(node.md("network", "inspect", "pods").stdout)[0]["IPAM"]["Config"][0]["Subnet"]


def test_bad_input_changes_nothing(cluster):
    n1, n2 = cluster.add_node(), cluster.add_node()
    cases = [
        (["cluster", "init", "--etcd", ETCD_URL, "--cluster-cidr", "10.244.0.0/24"], "too small"),
        (["cluster", "init", "--etcd", ETCD_URL, "--node-prefix", "31"], "--node-prefix 31"),
        (["cluster", "init", "--etcd", ETCD_URL, "--backend", "weave"], "accepted: host-gw, vxlan"),
        (["cluster", "init", "--etcd", ETCD_URL, "--cluster-cidr", "10.244.1.0/16"], "host bits"),
        (["cluster", "init", "--etcd", "http://192.0.2.250:2379"], "unreachable"),
        (["cluster", "init", "--etcd", "etcd:2379"], "invalid --etcd"),
        (["cluster", "init", "--etcd", ETCD_URL, "--vni", "0"], "invalid --vni 0"),
        (["cluster", "init", "--etcd", ETCD_URL, "--port", "70000"], "invalid --port 70000"),
        (["node", "join", "--etcd", ETCD_URL], "no cluster configuration"),
    ]
    for argv, words in cases:
        r = n1.md(*argv, check=False)
        assert r.returncode != 0 and words in r.stderr and len(r.stderr.splitlines()) == 1, (argv, r.stderr)
    assert cluster.etcd_keys() == []
    n1.md("cluster", "init", "--etcd", ETCD_URL, "--backend", "host-gw")
    assert "already initialised" in n1.md("cluster", "init", "--etcd", ETCD_URL, "--backend", "host-gw").stdout
    r = n1.md("cluster", "init", "--etcd", ETCD_URL, "--backend", "vxlan", check=False)
    assert r.returncode == 1 and "different cluster configuration" in r.stderr
    join_cases = [
        (["--name", "Bad_Name"], "invalid node name"),
        (["--lease-ttl", "1ms"], "invalid --lease-ttl"),
        (["--public-ip", "192.0.2.99"], "not an address of this node"),
        (["--iface", "nope0"], "no such link"),
        (["--iface", "ul0", "--public-ip", n1.underlay_ip], "not both"),
        (["--etcd", "http://192.0.2.250:2379"], "unreachable"),
    ]
    for extra, words in join_cases:
        argv = ["node", "join", "--etcd", ETCD_URL, "--name", "n1", *extra]
        r = n1.md(*argv, check=False)
        assert r.returncode != 0 and words in r.stderr, (extra, r.stderr)
    # a host route inside the cluster range: refused, naming it
    n1.sh("ip", "route", "add", "10.244.7.0/24", "dev", "ul0")
    r = cluster.join(n1, check=False)
    assert r.returncode == 1 and "10.244.7.0/24 dev ul0" in r.stderr
    n1.sh("ip", "route", "del", "10.244.7.0/24", "dev", "ul0")
    for n in (n1,):
        assert leftovers(n) == [] and not (n.state_root / "cluster/node.json").exists()
    assert cluster.etcd_keys() == ["/minidocker/cluster/config"]
    # host-gw with a peer that is not on this link: the joining node refuses, naming it
    cluster.join(n1)
    far = cluster.add_node(routed=True)
    r = cluster.join(far, check=False)
    assert r.returncode == 1 and f"peer {node_name(n1)} ({n1.underlay_ip})" in r.stderr \
        and "use --backend vxlan" in r.stderr, r.stderr
    assert leftovers(far) == [] and cluster.etcd_keys() == [
        "/minidocker/cluster/config", f"/minidocker/cluster/nodes/{node_name(n1)}",
        f"/minidocker/cluster/reservations/{node_name(n1)}", "/minidocker/cluster/subnets/10.244.0.0-24"]


def test_readme_cluster_lines_with_a_clean_environment(cluster):
    """`cluster init` and `node join/ls/leave` as the README shows them, with
    env -i and only PATH and the two state roots."""
    n1 = cluster.add_node()
    env = ["env", "-i", f"PATH={VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
           f"MINIDOCKER_ROOT={n1.state_root}", f"MINIDOCKER_RUN={n1.run_root}"]
    for argv in (["minidocker", "cluster", "init", "--etcd", ETCD_URL, "--backend", "vxlan"],
                 ["minidocker", "node", "join", "--etcd", ETCD_URL, "--iface", "ul0"],
                 ["minidocker", "node", "ls"],
                 ["minidocker", "run", "--rm", "--network", "pods", "busybox", "ip", "-4", "addr", "show", "eth0"],
                 ["minidocker", "node", "leave"]):
        r = n1.run([*env, *argv], env={}, check=False)
        assert r.returncode == 0, (argv, r.stderr)
        if argv[1:3] == ["node", "ls"]:
            assert "Ready" in r.stdout
        if argv[1] == "run":
            assert "inet 10.244.0." in r.stdout
    assert leftovers(n1) == []


def test_agent_in_the_foreground(cluster):
    """`node agent` with join's flags, as systemd would run it: it joins,
    serves until TERM, and leaves the data path for `node leave`."""
    import subprocess
    n1, n2 = cluster.add_node(), cluster.add_node()
    n1.md("cluster", "init", "--etcd", ETCD_URL, "--backend", "host-gw")
    cluster.join(n1)
    proc = n2.popen([str(VENV_BIN / "minidocker"), "node", "agent", "--etcd", ETCD_URL, "--name", "fg",
                     "--public-ip", n2.underlay_ip, "--lease-ttl", "4s"], stdout=subprocess.DEVNULL)
    try:
        settle(lambda: any(r.startswith("10.244.1.0/24 ") for r in our_routes(n1)), timeout=20)
        settle(lambda: any(r.startswith("10.244.0.0/24 via " + n1.underlay_ip) for r in our_routes(n2)),
               timeout=20)    # n2's own first reconcile follows its lease (and network) by a moment
        assert "fg" in n1.md("node", "ls").stdout
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "agent stopped" in err, err
    assert our_routes(n2)                      # the data path stays up without the agent
    n2.md("node", "leave")
    assert leftovers(n2) == []


def test_cluster_range_full(cluster):
    """Two /25 subnets in a /24: the third node is refused, naming the range,
    and left as it was."""
    n1, n2, n3 = (cluster.add_node() for _ in range(3))
    n1.md("cluster", "init", "--etcd", ETCD_URL, "--cluster-cidr", "10.244.0.0/24", "--node-prefix", "25",
          "--backend", "host-gw")
    cluster.join(n1)
    cluster.join(n2)
    r = cluster.join(n3, check=False)
    assert r.returncode == 1 and "no free /25 left in cluster range 10.244.0.0/24" in r.stderr, r.stderr
    assert leftovers(n3) == [] and not (n3.state_root / "cluster/node.json").exists()
    assert node_name(n3) not in n1.md("node", "ls").stdout
    leases = cluster.sh("curl", "-s", "-X", "POST", f"{ETCD_URL}/v3/lease/leases", "-d", "{}").stdout
    assert len(json.loads(leases).get("leases", [])) == 2, leases      # n1's and n2's only
