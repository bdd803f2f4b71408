"""Published ports reachable from everywhere a client can be: the node's
loopback, the node's own addresses, another container, the container itself
(hairpin) and the outside world (`ext`); outbound traffic masqueraded."""
from __future__ import annotations

import ipaddress
import os
import time

import pytest

from bridge_helpers import udp_ask
from cni_helpers import BACKENDS, SPEC_VERSIONS, STACKS, with_prev
from harness import EXT_ADDR, NODE_ADDR, NODE_ADDR6


@pytest.fixture
def cni(cni, servers):
    cni.servers = servers
    return cni


def serve(cni, ns: str, *socat_args):
    p = cni.node.popen(["socat", *socat_args], ns=ns, start_new_session=True,
                       stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"))
    cni.servers.append(p)
    return p


def client(cni, ns, host, port, proto="tcp", tries=1) -> str:
    from harness import run
    if proto == "udp":
        return udp_ask(ns, host, port, tries)
    target = f"TCP:[{host}]:{port}" if ":" in host else f"TCP:{host}:{port}"
    for _ in range(tries):
        out = run(["nsenter", f"--net={ns}", "--", "socat", "-T2", "-", target], check=False, input="")
        if out.stdout.strip():
            return out.stdout.strip()
        time.sleep(0.05)
    return ""


PORTS = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
         {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("version", SPEC_VERSIONS)
def test_published_port_reachable_from_everywhere(cni, version, backend, stack):
    node = cni.node
    conf = cni.conf(version=version, backend=backend, stack=stack, portmaps=PORTS)
    c1, c2 = cni.container(), cni.container()
    r1 = cni.call("ADD", conf, c1).ok().json
    r2 = cni.call("ADD", cni.conf(version=version, backend=backend, stack=stack), c2).ok().json
    serve(cni, c1.netns, "TCP6-LISTEN:80,ipv6only=0,fork,reuseaddr", "SYSTEM:echo hello")
    serve(cni, c1.netns, "-U", "UDP4-LISTEN:53,fork,reuseaddr", "SYSTEM:echo pong")  # -U: udp_server
    serve(cni, node.ext_netns, "TCP4-LISTEN:9000,fork,reuseaddr", "SYSTEM:echo $SOCAT_PEERADDR")

    places = {
        "node loopback": (node.netns, "127.0.0.1"),
        "node address": (node.netns, NODE_ADDR),
        "node bridge address": (node.netns, "10.66.0.1"),
        "other container": (c2.netns, NODE_ADDR),
        "container itself (hairpin)": (c1.netns, NODE_ADDR),
        "outside world": (node.ext_netns, NODE_ADDR),
    }
    if stack == "dual":
        places.update({
            "other container v6": (c2.netns, NODE_ADDR6),
            "node address v6": (node.netns, NODE_ADDR6),
            "container itself v6 (hairpin)": (c1.netns, NODE_ADDR6),
            "outside world v6": (node.ext_netns, NODE_ADDR6),
        })
    got = {where: client(cni, ns, host, 8080, tries=20 if i == 0 else 3)
           for i, (where, (ns, host)) in enumerate(places.items())}
    assert got == {where: "hello" for where in places}
    assert client(cni, node.ext_netns, NODE_ADDR, 5353, "udp", tries=3) == "pong"
    assert client(cni, node.netns, "127.0.0.1", 5353, "udp", tries=3) == "pong"
    # outbound: masqueraded to the node's address
    assert client(cni, c1.netns, EXT_ADDR, 9000, tries=20).startswith(NODE_ADDR)

    cni.call("DEL", with_prev(conf, r1), c1).ok()
    assert client(cni, node.ext_netns, NODE_ADDR, 8080) == ""
    rules = node.nft_ruleset() if backend == "nftables" else node.iptables_save()
    assert c1.cid not in rules                                    # DEL removed exactly its own
    # what c2 relies on stays: its masquerade (nftables: its element; iptables: the network's rule)
    assert (f"md/mdtnet/{c2.cid}/eth0" if backend == "nftables" else 'md/mdtnet/" -j MASQUERADE') in rules
    assert client(cni, c2.netns, EXT_ADDR, 9000, tries=3).startswith(NODE_ADDR)
    cni.call("DEL", with_prev(conf, r2), c2).ok()
    assert "md/mdtnet" not in (node.nft_ruleset() if backend == "nftables" else node.iptables_save())


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_who_a_published_port_sees(cni, backend, stack):
    """The client address the container sees: clients on its own bridge that
    come through a published port are masqueraded to the bridge's address
    (their replies must pass the host to be un-DNAT'ed: the hairpin), and so
    are those from the host's 127/8; a client that reaches the container
    directly, the host's own address and the outside world keep theirs."""
    node = cni.node
    conf = cni.conf(backend=backend, stack=stack, portmaps=[{"hostPort": 8081, "containerPort": 81}])
    c1, c2 = cni.container(), cni.container()
    r1 = cni.call("ADD", conf, c1).ok().json
    r2 = cni.call("ADD", cni.conf(backend=backend, stack=stack), c2).ok().json
    serve(cni, c1.netns, "TCP6-LISTEN:81,ipv6only=0,fork,reuseaddr", "SYSTEM:echo $SOCAT_PEERADDR")
    ip1, ip2 = (next(i["address"].split("/")[0] for i in r["ips"] if ":" not in i["address"]) for r in (r1, r2))

    def seen(ns, host, port=8081) -> str:   # socat prints [v6], a v4 client as v4-mapped
        text = client(cni, ns, host, port, tries=20)
        addr = ipaddress.ip_address(text.strip("[]")) if text else None
        return str(getattr(addr, "ipv4_mapped", None) or addr)
    assert seen(c2.netns, NODE_ADDR) == "10.66.0.1"               # same bridge, published
    assert seen(c1.netns, NODE_ADDR) == "10.66.0.1"               # hairpin
    assert seen(node.netns, "127.0.0.1") == "10.66.0.1"           # the host's loopback
    assert seen(c2.netns, ip1, 81) == ip2                         # same bridge, direct
    assert seen(node.netns, NODE_ADDR) == NODE_ADDR               # the host's address
    assert seen(node.ext_netns, NODE_ADDR) == EXT_ADDR            # outside
    if stack == "dual":
        gw6 = "fd00:66::1"
        assert seen(c2.netns, NODE_ADDR6) == gw6
        assert seen(c1.netns, NODE_ADDR6) == gw6
    for c, r in ((c1, r1), (c2, r2)):
        cni.call("DEL", with_prev(conf, r), c).ok()


@pytest.mark.parametrize("backend", BACKENDS)
def test_host_ip_restricts_the_published_address(cni, backend):
    node = cni.node
    conf = cni.conf(backend=backend, portmaps=[{"hostPort": 8088, "containerPort": 80, "hostIP": "10.66.0.1"}])
    c = cni.container()
    r = cni.call("ADD", conf, c).ok().json
    serve(cni, c.netns, "TCP4-LISTEN:80,fork,reuseaddr", "SYSTEM:echo hello")
    assert client(cni, node.netns, "10.66.0.1", 8088, tries=20) == "hello"
    assert client(cni, node.ext_netns, NODE_ADDR, 8088) == ""
    cni.call("DEL", with_prev(conf, r), c).ok()


def test_empty_port_mappings_make_no_port_rules(cni):
    conf = cni.conf(portmaps=[], ipmasq=False)
    c = cni.container()
    r = cni.call("ADD", conf, c).ok().json
    assert "md/" not in cni.node.iptables_save()
    cni.call("DEL", with_prev(conf, r), c).ok()


def test_forward_policy_drop_gets_accept_rules(cni):
    """Where FORWARD drops (a Docker host), the iptables backend adds the
    network's accept rules; the last DEL of the network removes them."""
    node = cni.node
    node.sh("iptables", "-P", "FORWARD", "DROP")
    try:
        conf = cni.conf(portmaps=[{"hostPort": 8086, "containerPort": 80}])
        c = cni.container()
        r = cni.call("ADD", conf, c).ok().json
        assert "-A MINIDOCKER-FORWARD -d 10.66.0.0/24 -o mdtbr0" in node.iptables_save()
        serve(cni, c.netns, "TCP4-LISTEN:80,fork,reuseaddr", "SYSTEM:echo hello")
        assert client(cni, node.ext_netns, NODE_ADDR, 8086, tries=20) == "hello"
        cni.call("CHECK", with_prev(conf, r), c).ok()
        cni.call("DEL", with_prev(conf, r), c).ok()
        assert "MINIDOCKER" not in node.iptables_save()
    finally:
        node.sh("iptables", "-P", "FORWARD", "ACCEPT")
