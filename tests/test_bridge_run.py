"""`run` on the default bridge: published TCP and UDP ports from everywhere a
client can be, masquerade, every -p form and `port`, refused input that
leaves nothing behind, and teardown on stop / exit / --rm / rm."""
from __future__ import annotations

import json

import pytest

from bridge_helpers import (TOOLS, client, ext_server, in_container, inspect, network_traces,
                            run_server, stop_server, udp_ask)
from harness import EXT_ADDR, NODE_ADDR, UPLINK


@pytest.mark.parametrize("backend,cni_exec", [("iptables", "0"), ("nftables", "0"), ("iptables", "1")],
                         ids=["iptables", "nftables", "iptables-exec"])
def test_published_ports_answer_everywhere(tnode, backend, cni_exec):
    """cni_exec=1: the plugin exec'd from CNI_PATH instead of called in-process."""
    node = tnode
    env = node.env(MINIDOCKER_FIREWALL=backend, MINIDOCKER_CNI_EXEC=cni_exec)
    cid = run_server(node, "web", "-p", "8080:80", "-p", "5353:53/udp", udp="pong", env=env)
    node.md("run", "-d", "--name", "other", TOOLS, "sleep", "300", env=env)
    upstream = ext_server(node)
    try:
        assert client(node.netns, "127.0.0.1", 8080, tries=30) == "hello"
        places = {"node loopback": "127.0.0.1", "node address": NODE_ADDR}
        for where, host in places.items():
            assert client(node.netns, host, 8080, tries=3) == "hello", where
            assert client(node.netns, host, 5353, "udp", tries=3) == "pong", where
        assert client(node.ext_netns, NODE_ADDR, 8080, tries=3) == "hello"
        assert client(node.ext_netns, NODE_ADDR, 5353, "udp", tries=3) == "pong"
        for ref in ("other", "web"):  # another container, and the publisher itself (hairpin)
            assert in_container(node, ref, NODE_ADDR, 8080, tries=3) == "hello", ref
            assert in_container(node, ref, NODE_ADDR, 5353, "udp", tries=3) == "pong", ref
        # outbound: the upstream server sees the node's address
        assert in_container(node, "other", EXT_ADDR, 9000, tries=20) == NODE_ADDR
        rules = node.nft_ruleset() if backend == "nftables" else node.iptables_save()
        assert f"md/bridge/{cid}/eth0" in rules
    finally:
        stop_server(upstream)
    node.md("rm", "-f", "web", env=env)
    assert network_traces(node, cid) == []
    assert client(node.ext_netns, NODE_ADDR, 8080) == ""
    assert "minidocker0" in node.link_names()  # the other container still uses it
    node.md("rm", "-f", "other", env=env)
    assert node.link_names() == {"lo", UPLINK}  # the bridge went with its last endpoint


def test_udp_flow_seen_before_publishing_is_forwarded_after(tnode):
    """A UDP flow that reached the host port before it was published has a
    conntrack entry without NAT (UNREPLIED); the DNAT rule would never see
    it again, and every datagram renews it (30 s): ADD deletes such entries
    once its rules are in."""
    node = tnode
    run_server(node, "web", "-p", "8080:80")   # rules in the node: its conntrack is on
    flows = {"127.0.0.1": 40053, NODE_ADDR: 40054}   # client address -> its fixed source port
    for host, sport in flows.items():
        assert udp_ask(node.netns, host, 5353, timeout=0.3, sport=sport) == ""   # nothing listens yet
    stale = node.sh("conntrack", "-L", "-p", "udp", "--dport", "5353").stdout
    assert stale.count("[UNREPLIED]") == 2 and "10.210." not in stale, stale
    run_server(node, "dns", "-p", "5353:53/udp", udp="pong")
    for host, sport in flows.items():
        assert udp_ask(node.netns, host, 5353, tries=3, sport=sport) == "pong", \
            (host, node.sh("conntrack", "-L", "-p", "udp", check=False).stdout)
    node.md("rm", "-f", "dns", "web")


def test_teardown_on_stop_exit_rm_and_autoremove(tnode):
    node = tnode
    cid = run_server(node, "srv", "-p", "8081:80")
    ep = inspect(node, "srv")["NetworkSettings"]
    assert ep["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8081"},
                                      {"HostIp": "::", "HostPort": "8081"}]}
    assert client(node.netns, NODE_ADDR, 8081, tries=30) == "hello"
    index = node.state_root / "ports" / "tcp-8081"
    assert [p.name.split(".")[1] for p in index.iterdir()] == [cid]  # the host-port index
    node.md("stop", "-t", "1", "srv")
    assert network_traces(node, cid) == []
    assert inspect(node, "srv")["NetworkSettings"]["Ports"] == {}
    assert not index.exists()  # a stopped container holds no host port
    other = run_server(node, "taker", "-p", "8081:80")  # so another may take it
    proc = node.md("start", "srv", check=False)  # and then srv's start is refused
    assert proc.returncode != 0 and "taker" in proc.stderr, proc.stderr
    assert [p.name.split(".")[1] for p in index.iterdir()] == [other]
    node.md("rm", "-f", "taker")
    assert not index.exists()
    node.md("start", "srv")  # attached again, same port
    assert client(node.netns, NODE_ADDR, 8081, tries=30) == "hello"
    assert [p.name.split(".")[1] for p in index.iterdir()] == [cid]
    node.md("restart", "-t", "1", "srv")  # stop and start: the index follows
    assert [p.name.split(".")[1] for p in index.iterdir()] == [cid]
    node.md("rm", "-f", "srv")
    assert network_traces(node, cid) == []
    assert not index.exists()

    done = node.md("run", "--name", "quick", "-p", "8082:80", TOOLS, "true")  # exits by itself
    assert done.returncode == 0
    cid = inspect(node, "quick")["Id"]
    assert network_traces(node, cid) == []
    node.md("rm", "quick")

    out = node.md("run", "--rm", "-p", "8083:80", TOOLS, "sh", "-c", "ip -4 -o addr show eth0")
    assert "inet 10.210." in out.stdout
    assert node.md("ps", "-aq").stdout.strip() == ""
    assert node.link_names() == {"lo", UPLINK}
    assert not list((node.state_root / "ipam").rglob("10.*"))  # no lease left


def test_publish_forms_and_port_command(tnode):
    node = tnode
    lo, hi = map(int, node.sh("cat", "/proc/sys/net/ipv4/ip_local_port_range").stdout.split())
    run_server(node, "forms", "-p", "127.0.0.1:8084:80", "-p", "8090-8091:80-81",
               "-p", "80/udp", "-p", "0.0.0.0::80", "-p", "9100-9110:80")
    out = node.md("port", "forms").stdout.splitlines()
    ports = inspect(node, "forms")["NetworkSettings"]["Ports"]
    assert {"HostIp": "127.0.0.1", "HostPort": "8084"} in ports["80/tcp"]
    assert {"HostIp": "0.0.0.0", "HostPort": "8090"} in ports["80/tcp"]
    assert {"HostIp": "0.0.0.0", "HostPort": "8091"} in ports["81/tcp"]
    hostports = {int(b["HostPort"]) for b in ports["80/tcp"]}
    assert any(9100 <= p <= 9110 for p in hostports)          # first free of the host range
    assert any(lo <= p <= hi for p in hostports)              # 0.0.0.0::80: from the local range
    assert all(lo <= int(b["HostPort"]) <= hi for b in ports["80/udp"])
    assert "80/tcp -> 127.0.0.1:8084" in out and "81/tcp -> 0.0.0.0:8091" in out
    assert node.md("port", "forms", "81").stdout.split() == ["0.0.0.0:8091", "[::]:8091"]
    # 127.0.0.1 is reachable from the node's loopback, not from outside
    assert client(node.netns, "127.0.0.1", 8084, tries=30) == "hello"
    assert client(node.ext_netns, NODE_ADDR, 8084) == ""
    assert client(node.ext_netns, NODE_ADDR, 8090, tries=3) == "hello"
    # -P: the image's ExposedPorts on random host ports
    run_server(node, "all", "-P")
    ports = inspect(node, "all")["NetworkSettings"]["Ports"]
    assert set(ports) == {"80/tcp", "53/udp"}
    port = int(ports["80/tcp"][0]["HostPort"])
    assert lo <= port <= hi
    assert client(node.ext_netns, NODE_ADDR, port, tries=30) == "hello"
    node.md("rm", "-f", "forms", "all")


def _refused(node, *args, expect: str, env=None):
    before = node.md("ps", "-aq").stdout.split()
    proc = node.md("run", *args, check=False, env=env)
    assert proc.returncode == 125, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert expect in lines[0], lines[0]
    assert node.md("ps", "-aq").stdout.split() == before  # no container record
    return lines[0]


def test_bad_input_is_refused_and_nothing_is_created(tnode):
    node = tnode
    for bad, expect in [("80:80:80:80", "'80:80:80:80'"), ("abc", "'abc'"), ("70000", "70000"),
                        ("80/sctp", "'sctp'"), ("1-3:1-2", "differ in length"),
                        ("[::1:80", "IPv6")]:
        _refused(node, "-p", bad, TOOLS, "true", expect=expect)
    _refused(node, "--network", "nosuch", TOOLS, "true", expect="'nosuch'")
    _refused(node, "--dns", "1.2.3", TOOLS, "true", expect="'1.2.3'")
    _refused(node, "--add-host", "db", TOOLS, "true", expect="'db'")
    _refused(node, "--add-host", "db:nowhere", TOOLS, "true", expect="'nowhere'")
    _refused(node, "--ip", "10.99.0.5", TOOLS, "true", expect="10.99.0.5 is outside")
    _refused(node, "--ip", "banana", TOOLS, "true", expect="'banana'")
    _refused(node, "--network-alias", "x", TOOLS, "true", expect="user-defined networks")
    _refused(node, "--network", "container:nosuch", TOOLS, "true", expect="'nosuch'")
    _refused(node, "-p", "8080:80", "--network", "container:nosuch", TOOLS, "true",
             expect="port publishing")
    assert node.link_names() == {"lo", UPLINK}
    assert "MINIDOCKER" not in node.iptables_save()

    # a port published by a container, and one a host process holds
    run_server(node, "holder", "-p", "8080:80", "--ip", "10.210.0.50")
    _refused(node, "-p", "8080:80", TOOLS, "true", expect="host port 8080/tcp on 0.0.0.0 is already "
             "in use by container holder")
    _refused(node, "-p", "127.0.0.1:8080:80", TOOLS, "true", expect="container holder")
    _refused(node, "--ip", "10.210.0.50", TOOLS, "true", expect="already in use by container holder")
    _refused(node, "--ip", "10.210.0.1", TOOLS, "true", expect="gateway")
    listener = node.popen(["socat", "TCP4-LISTEN:8070,reuseaddr", "-"], start_new_session=True)
    try:
        assert any(l["ifname"] == "lo" for l in node.links())
        import time
        for _ in range(50):
            if "8070" in node.sh("ss", "-Hltn").stdout:
                break
            time.sleep(0.05)
        _refused(node, "-p", "8070:80", TOOLS, "true",
                 expect="host port 8070/tcp on 0.0.0.0 is already in use by a process on this host")
    finally:
        stop_server(listener)
    _refused(node, "-p", "192.0.2.9:8071:80", TOOLS, "true", expect="not an address of this host")
    node.md("rm", "-f", "holder")


def test_dns_add_host_and_container_mode(tnode):
    node = tnode
    out = node.md("run", "--rm", "--dns", "192.0.2.53", "--add-host", "db:192.0.2.7",
                  "--add-host", "v6:::1", TOOLS, "sh", "-c", "cat /etc/resolv.conf /etc/hosts").stdout
    assert "nameserver 192.0.2.53" in out
    assert "192.0.2.7\tdb" in out and "::1\tv6" in out
    run_server(node, "base")
    # container:<id> shares base's namespace: its loopback is base's
    out = node.md("run", "--rm", "--network", "container:base", TOOLS, "socat", "-T2", "-",
                  "TCP:127.0.0.1:80").stdout
    assert out.strip() == "hello"
    node.md("stop", "-t", "0", "base")
    _refused(node, "--network", "container:base", TOOLS, "true", expect="is not running")
    node.md("rm", "base")


def test_concurrent_runs_never_share_a_host_port(tnode):
    """Random host ports are chosen under a lock held until the endpoint is
    recorded; of two runs asking for the same fixed port exactly one wins."""
    node = tnode
    from harness import MINIDOCKER
    procs = [node.popen([MINIDOCKER, "run", "-d", "-p", "80", TOOLS, "sleep", "60"]) for _ in range(4)]
    procs += [node.popen([MINIDOCKER, "run", "-d", "-p", "8095:80", TOOLS, "sleep", "60"]) for _ in range(2)]
    results = [(p.wait(timeout=60), p.stderr.read()) for p in procs]
    assert [rc for rc, _ in results[:4]] == [0, 0, 0, 0], results
    fixed = sorted(rc for rc, _ in results[4:])
    assert fixed == [0, 125], results
    assert "8095/tcp" in results[4][1] + results[5][1]
    ports = []
    for cid in node.md("ps", "-q").stdout.split():
        for bindings in inspect(node, cid)["NetworkSettings"]["Ports"].values():
            ports += [b["HostPort"] for b in bindings if b["HostIp"] == "0.0.0.0"]
    assert len(ports) == 5 and len(set(ports)) == 5, ports
    ips = [inspect(node, cid)["NetworkSettings"]["IPAddress"] for cid in node.md("ps", "-q").stdout.split()]
    assert len(set(ips)) == 5
    node.md("rm", "-f", *node.md("ps", "-aq").stdout.split())
    assert node.link_names() == {"lo", UPLINK}


def test_default_network_skips_subnets_the_host_routes(tnode):
    """The `bridge` network is made on first use from the default pool,
    skipping a subnet that overlaps a route of the host."""
    node = tnode
    node.sh("ip", "route", "add", "10.210.0.0/23", "via", EXT_ADDR)
    try:
        out = node.md("run", "--rm", TOOLS, "ip", "-4", "-o", "addr", "show", "eth0").stdout
        assert " 10.210.2." in out, out
        net = json.loads(node.md("network", "inspect", "bridge").stdout)[0]
        assert net["IPAM"]["Config"][0]["Subnet"] == "10.210.2.0/24"
    finally:
        node.sh("ip", "route", "del", "10.210.0.0/23")
