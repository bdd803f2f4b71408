"""Unit tests of cni-bridge's pure parts: the allocator over the in-memory
store, IPAM option parsing, rule comments and the iptables batches."""
from __future__ import annotations

import pytest

from cni.errors import CNIError
from cni_bridge import firewall
from cni_bridge.firewall import iptables as ipt
from cni_bridge.firewall.plan import shared_plan
from cni_bridge.ipam import Builtin, allocator, config as ipam_config
from cni_bridge.ipam.store import MemoryStore


def _conf(ranges, **ipam):
    return {"name": "n", "ipam": {"type": "cni-bridge", "ranges": ranges, **ipam}}


def _alloc(store, conf, cid, args=()):
    c = ipam_config.parse(conf, list(args))
    return [ip.address for ip in allocator.allocate(c, store, cid, "eth0")]


def test_allocator_round_robin_skips_gateway_and_wraps():
    s = MemoryStore()
    conf = _conf([[{"subnet": "10.0.0.0/29"}]])      # usable .1-.6, gateway .1
    got = [_alloc(s, conf, f"c{i}")[0] for i in range(5)]
    assert got == [f"10.0.0.{i}/29" for i in range(2, 7)]
    with pytest.raises(CNIError) as err:
        _alloc(s, conf, "c9")
    assert err.value.code == 101 and "no IP addresses available in range set" in err.value.msg
    s.release("10.0.0.3")
    assert _alloc(s, conf, "c9") == ["10.0.0.3/29"]    # wrapped around after .6


def test_allocator_multiple_ranges_in_a_set_and_dual_stack():
    s = MemoryStore()
    conf = _conf([[{"subnet": "10.0.0.0/30"}, {"subnet": "10.0.1.0/30"}], [{"subnet": "fd00::/120"}]])
    assert _alloc(s, conf, "a") == ["10.0.0.2/30", "fd00::2/120"]
    assert _alloc(s, conf, "b") == ["10.0.1.2/30", "fd00::3/120"]


def test_allocator_requested_duplicate_and_rollback():
    s = MemoryStore()
    conf = _conf([[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]])
    assert _alloc(s, conf, "a", [("IP", "10.0.0.9")]) == ["10.0.0.9/24", "fd00::2/64"]
    with pytest.raises(CNIError, match="duplicate allocation is not allowed"):
        _alloc(s, conf, "a")
    # the v6 address is taken by someone else: the v4 reservation is rolled back
    s.reserve("x", "eth0", "fd00::7", 1)
    with pytest.raises(CNIError, match="not available"):
        _alloc(s, conf, "b", [("IP", "10.0.0.20,fd00::7")])
    assert "10.0.0.20" not in s.data


def test_args_cni_ips_win_over_cni_args():
    conf = _conf([[{"subnet": "10.0.0.0/24"}]])
    conf["args"] = {"cni": {"ips": ["10.0.0.5"]}}
    assert ipam_config.parse(conf, [("IP", "10.0.0.6")]).requested == ["10.0.0.5"]


def test_ip_ranges_capability_prepended_and_legacy_subnet():
    conf = _conf([[{"subnet": "10.0.0.0/24"}]], subnet="10.9.0.0/24")
    conf["runtimeConfig"] = {"ipRanges": [[{"subnet": "10.8.0.0/24"}]]}
    sets = ipam_config.parse(conf, []).range_sets
    assert [str(rs[0].subnet) for rs in sets] == ["10.8.0.0/24", "10.9.0.0/24", "10.0.0.0/24"]


@pytest.mark.parametrize("rng,msg", [
    ({"subnet": "10.0.0.0/24", "rangeEnd": "10.0.1.1"}, "rangeEnd 10.0.1.1 not in network"),
    ({"subnet": "fd00::/127"}, "too small"),
    ({"subnet": "nope"}, "invalid CIDR"),
])
def test_range_validation(rng, msg):
    with pytest.raises(CNIError, match=msg) as err:
        ipam_config.parse(_conf([[rng]]), [])
    assert err.value.code == 7


def test_builtin_gc_and_status_with_memory_store():
    s = MemoryStore()
    b = Builtin(_conf([[{"subnet": "10.0.0.0/30"}]]), [], "n", store=s)   # one usable address (.2)
    b.status()
    b.add("keep", "eth0")
    with pytest.raises(CNIError) as err:
        b.status()
    assert err.value.code == 50
    assert b.gc({("other", "eth0")}) == ["10.0.0.2"]
    b.status()


def test_owner_comment_is_short_and_parseable():
    c = firewall.owner_comment("net", "a" * 200, "eth0")
    assert len(c) <= 128 and c.startswith("md/net/") and c.endswith("/eth0")
    assert firewall.owner_comment("n" * 100, "cid", "eth0").startswith("md/")
    assert len(firewall.owner_comment("n" * 100, "c" * 100, "weird\"if")) <= 128
    assert firewall.decide(firewall.owner_comment("net", "c", "eth0"), "md/net/", None, {"md/net/c/eth0"}) == "keep"
    assert firewall.decide("md/net/d/eth0", "md/net/", None, {"md/net/c/eth0"}) == "drop"
    assert firewall.decide("md/net/", "md/net/", None, set()) == "net"
    assert firewall.decide("md/other/d/eth0", "md/net/", "md/net/d/eth0", None) == "keep"


SAVE = """*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:MINIDOCKER - [0:0]
:MINIDOCKER-POSTROUTING - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment minidocker -j MINIDOCKER
-A OUTPUT -m addrtype --dst-type LOCAL -m comment --comment minidocker -j MINIDOCKER
-A POSTROUTING -m comment --comment minidocker -j MINIDOCKER-POSTROUTING
-A MINIDOCKER -p tcp -m tcp --dport 80 -m comment --comment "md/net/a/eth0" -j DNAT --to-destination 10.0.0.2:80
-A MINIDOCKER-POSTROUTING -s 10.0.0.3/32 ! -d 10.0.0.0/24 -m comment --comment "md/net/b/eth0" -j MASQUERADE
COMMIT
"""


def test_iptables_delete_batch_keeps_others_and_chains():
    batch = ipt.IptablesDriver._del_batch(ipt.Saved(SAVE), "md/net/", "md/net/a/eth0", None)
    assert batch == ("*nat\n-D MINIDOCKER -p tcp -m tcp --dport 80 -m comment --comment \"md/net/a/eth0\" "
                     "-j DNAT --to-destination 10.0.0.2:80\nCOMMIT\n")


def test_iptables_delete_batch_removes_chains_with_the_last_rule():
    saved = ipt.Saved(SAVE)
    batch = ipt.IptablesDriver._del_batch(saved, "md/net/", None, set())     # GC, nothing valid
    assert "-X MINIDOCKER\n" in batch and "-X MINIDOCKER-POSTROUTING" in batch
    assert "-D PREROUTING -m addrtype" in batch and "-D POSTROUTING -m comment" in batch


def test_iptables_add_batch_creates_only_what_is_missing():
    att = firewall.Attachment("net", "c", "eth0", "br0", addrs=[("10.0.0.4", "10.0.0.0/24")], ip_masq=True)
    # no rule of its own (it publishes nothing): its masquerade is the network's
    assert [r for rule in firewall.plan(att) for r in ipt.render(rule, att.comment)] == []
    shared = [r for rule in shared_plan(att) for r in ipt.render(rule, "md/net/")]
    assert "-N" not in ipt.IptablesDriver._add_batch(ipt.Saved(SAVE), [], shared)
    fresh = ipt.IptablesDriver._add_batch(ipt.Saved("*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n"), [], shared)
    assert "-N MINIDOCKER-POSTROUTING" in fresh and "-A POSTROUTING -m comment" in fresh
    assert '-s 10.0.0.0/24 ! -d 10.0.0.0/24 -m comment --comment "md/net/" -j MASQUERADE' in fresh


def test_status_without_firewall_tools(monkeypatch):
    from cni.env import PluginArgs
    from cni_bridge import plugin, proc

    def missing(name):
        raise CNIError(100, f"{name} not found in PATH")
    monkeypatch.setattr(proc, "which", missing)
    conf = {"cniVersion": "1.1.0", "name": "n", "type": "cni-bridge", "ipMasq": True,
            "firewallBackend": "nftables", "ipam": {"ranges": [[{"subnet": "10.0.0.0/24"}]]}}
    with pytest.raises(CNIError) as err:
        plugin.cmd_status(PluginArgs(command="STATUS"), conf)
    assert err.value.code == 50 and "nft not found" in err.value.msg


@pytest.mark.parametrize("value,named", [("10.244.0.0/16", "nonMasqueradeCIDRs"), ([7], "7"),
                                         (["10.244.0.0/33"], "10.244.0.0/33"), (["nope"], "nope")])
def test_non_masquerade_cidrs_bad_values(value, named):
    from cni.env import PluginArgs
    from cni_bridge import config as bconfig
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "cni-bridge", "ipMasq": True,
            "nonMasqueradeCIDRs": value, "ipam": {"type": "cni-bridge"}}
    with pytest.raises(CNIError) as err:
        bconfig.parse(conf, PluginArgs.__new__(PluginArgs), with_env=False)
    assert named in str(err.value.msg)


def test_non_masquerade_cidrs_in_the_plan():
    att = firewall.Attachment(network="n", container_id="c", ifname="eth0", bridge="b",
                              addrs=[("10.244.1.2", "10.244.1.0/24")], ip_masq=True,
                              no_masq_to=["10.244.0.0/16"])
    rules = firewall.plan(att)
    assert rules.index(("masq_skip", 4, "10.244.1.2", "10.244.0.0/16")) < rules.index(
        ("masq", 4, "10.244.1.2", "10.244.1.0/24"))
    # the network's (iptables): published ports' masquerade first, then the exemption, then the rest
    assert [r[0] for r in shared_plan(att)] == ["pm_masq_net", "pm_local_net", "masq_skip_net", "masq_net"]


def test_iptables_tools_are_started_early_only_when_a_batch_will_come():
    """A known network (no read under way) and no published port: nothing of
    its own to commit, so no iptables-restore is spawned (and reaped) for it."""
    from cni_bridge.firewall.plan import Early
    drv, known, first = ipt.IptablesDriver(), Early(None), Early(None, {4: object()})
    assert drv.commit_tools((4,), known, publishes=False) == []
    assert drv.commit_tools((4,), known, publishes=True) == [["iptables-restore", "--noflush"]]
    assert drv.commit_tools((4, 6), first, publishes=False) == [["iptables-restore", "--noflush"],
                                                               ["ip6tables-restore", "--noflush"]]
