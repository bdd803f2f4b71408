"""cni-bridge's minidocker options, per firewall backend and spec version:
`isolation` (no traffic between two isolated networks' bridges, published
ports still reachable), `internal` (nothing in or out beyond the bridge) and
`icc: false` (no container-to-container traffic on the bridge); DEL takes
every rule along, CHECK counts them."""
from __future__ import annotations


import pytest

from cni_helpers import BACKENDS, with_prev
from harness import EXT_ADDR, NODE_ADDR, run


def _conf(cni, name, bridge, subnet, backend, version, **extra):
    conf = cni.conf(version=version, backend=backend, name=name, bridge=bridge, ipam_type="cni-bridge",
                    **extra)
    conf["ipam"]["ranges"] = [[{"subnet": subnet}]]
    return conf


def serve(cni, servers, ns, reply, port=80):
    servers.append(cni.node.popen(["socat", f"TCP4-LISTEN:{port},fork,reuseaddr", f"SYSTEM:echo {reply}"],
                                  ns=ns, start_new_session=True))


def get(ns, host, port, tries=1) -> str:
    for _ in range(tries):
        out = run(["nsenter", f"--net={ns}", "--", "socat", "-T1", "-", f"TCP:{host}:{port},connect-timeout=1"],
                  check=False, timeout=10)
        if out.stdout.strip():
            return out.stdout.strip()
    return ""


def _chain_rules(ruleset: str, chain: str) -> list[str]:
    """The rules of our table's chain in `nft list ruleset`'s text."""
    lines = ruleset.split(f"chain {chain} {{", 1)[1].split("}", 1)[0].strip().splitlines()
    return [l.strip() for l in lines if l.strip() and not l.strip().startswith("type ")]


def _ip(result) -> str:
    return result["ips"][0]["address"].split("/")[0]


@pytest.mark.parametrize("version", ["0.4.0", "1.1.0"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_isolated_networks_reach_only_published_ports(cni, servers, backend, version):
    node = cni.node
    a = _conf(cni, "neta", "mdtbra", "10.67.0.0/24", backend, version, isolation=True)
    b = _conf(cni, "netb", "mdtbrb", "10.68.0.0/24", backend, version, isolation=True,
              runtimeConfig={"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
    a1, a2, b1 = cni.container(), cni.container(), cni.container()
    ra1 = cni.call("ADD", a, a1).ok().json
    ra2 = cni.call("ADD", a, a2).ok().json
    rb1 = cni.call("ADD", b, b1).ok().json
    serve(cni, servers, a2.netns, "a2")
    serve(cni, servers, b1.netns, "b1")
    assert get(a1.netns, _ip(ra2), 80, tries=20) == "a2"        # same network
    assert get(a1.netns, _ip(rb1), 80, tries=2) == ""           # the other network: dropped
    assert get(a1.netns, NODE_ADDR, 8080, tries=20) == "b1"     # its published port: DNAT'ed, allowed
    assert get(node.netns, _ip(rb1), 80, tries=5) == "b1"       # the host reaches both
    if backend == "iptables":
        # no rule per container: each network's isolation is one rule, in
        # MINIDOCKER-POLICY, which only packets of new connections enter
        saved = node.iptables_save().splitlines()
        fwd = [l for l in saved if l.startswith("-A MINIDOCKER-FORWARD ")]
        assert "! --ctstate RELATED,ESTABLISHED" in fwd[0] and fwd[0].endswith("-j MINIDOCKER-POLICY")
        assert not [l for l in saved for r in (ra1, ra2, rb1) if _ip(r) + "/32" in l]
        policy = [l for l in saved if l.startswith("-A MINIDOCKER-POLICY ")]
        assert [(l.split()[3], l.split()[5]) for l in policy] == [("10.67.0.0/24", "mdtbra"),
                                                                  ("10.68.0.0/24", "mdtbrb")], policy
    else:
        # the same in nftables: an established flow's packets leave the
        # forward chain at its first rule, before any set is looked up
        fwd = _chain_rules(node.nft_ruleset(), "forward")
        assert fwd[0].startswith("ct state established,related return"), fwd
        assert all("@" in r for r in fwd[1:]), fwd
    cni.call("CHECK", with_prev(b, rb1), b1).ok()
    cni.call("DEL", with_prev(b, rb1), b1).ok()
    rules = node.nft_ruleset() if backend == "nftables" else node.iptables_save()
    assert "md/netb/" not in rules and "mdtbrb" not in rules    # netb's rules went with it
    assert "md/neta/" in rules
    cni.call("DEL", with_prev(a, ra1), a1).ok()
    cni.call("DEL", with_prev(a, ra2), a2).ok()
    rules = node.nft_ruleset() if backend == "nftables" else node.iptables_save()
    assert "md/" not in rules and "MINIDOCKER" not in rules and "table ip minidocker" not in rules


@pytest.mark.parametrize("backend", BACKENDS)
def test_internal_network_has_no_way_out(cni, servers, backend):
    node = cni.node
    conf = _conf(cni, "netint", "mdtbri", "10.69.0.0/24", backend, "1.1.0", internal=True, ipmasq=False)
    c1, c2 = cni.container(), cni.container()
    r1 = cni.call("ADD", conf, c1).ok().json
    r2 = cni.call("ADD", conf, c2).ok().json
    serve(cni, servers, node.ext_netns, "outside", 9000)
    serve(cni, servers, c2.netns, "c2")
    assert get(c1.netns, _ip(r2), 80, tries=20) == "c2"        # inside the network: fine
    assert get(c1.netns, EXT_ADDR, 9000, tries=2) == ""         # out: dropped
    node.sh("ip", "route", "add", "10.69.0.0/24", "via", NODE_ADDR, check=False)
    node.ext_sh("ip", "route", "add", "10.69.0.0/24", "via", NODE_ADDR)
    assert get(node.ext_netns, _ip(r2), 80, tries=2) == ""      # in from elsewhere: dropped
    cni.call("CHECK", with_prev(conf, r1), c1).ok()
    for c, r in ((c1, r1), (c2, r2)):
        cni.call("DEL", with_prev(conf, r), c).ok()
    assert "md/" not in node.iptables_save() + node.nft_ruleset()


@pytest.mark.parametrize("backend", BACKENDS)
def test_icc_off_drops_container_to_container_but_not_published_ports(cni, servers, backend):
    node = cni.node
    pm = {"portMappings": [{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]}
    conf = _conf(cni, "neticc", "mdtbrc", "10.70.0.0/24", backend, "1.1.0", icc=False)
    c1, c2 = cni.container(), cni.container()
    r1 = cni.call("ADD", conf, c1).ok().json
    r2 = cni.call("ADD", dict(conf, runtimeConfig=pm), c2).ok().json
    serve(cni, servers, c2.netns, "c2")
    assert get(node.netns, _ip(r2), 80, tries=20) == "c2"       # the host: fine
    assert get(c1.netns, _ip(r2), 80, tries=2) == ""            # neighbour: dropped
    assert get(c1.netns, NODE_ADDR, 8081, tries=20) == "c2"     # its published port: fine
    cni.call("DEL", with_prev(conf, r1), c1).ok()
    cni.call("DEL", with_prev(dict(conf, runtimeConfig=pm), r2), c2).ok()
    assert "md/" not in node.iptables_save() + node.nft_ruleset()


def test_option_values_are_checked(cni):
    c = cni.container()
    for key, value in (("isolation", "yes"), ("internal", 1), ("icc", "false")):
        reply = cni.call("ADD", dict(cni.conf(), **{key: value}), c)
        assert reply.rc != 0 and reply.code == 7 and key in reply.msg, reply
    assert "md/" not in cni.node.iptables_save()
