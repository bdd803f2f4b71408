"""The firewall's set layout (nftables) and owner index (both backends):
what an attachment's elements are, how a listing and a traced packet are
read back, and DEL/ADD when the kernel and the index disagree (an element
or rule already gone, an index entry missing, the tables flushed, a host
port another attachment maps)."""
from __future__ import annotations

import pytest

from cni.portmap import PortMapping
from cni_bridge.firewall import Attachment, nftables, nftlisting, owners
from cni_helpers import BACKENDS, with_prev


def _att(**kw) -> Attachment:
    base = dict(addrs=[("10.1.0.3", "10.1.0.0/24")], ip_masq=True, bridge="br1",
                port_mappings=[PortMapping(80, 8080), PortMapping(80, 8081), PortMapping(53, 5353, "udp", "127.0.0.1")])
    base.update(kw)
    return Attachment("net1", "c" * 64, "eth0", base.pop("bridge"), **base)


def test_elements_of_an_attachment():
    els = nftables.elements(_att(no_masq_to=["10.244.0.0/16", "10.244.3.0/24", "10.1.0.0/24"],
                                 isolation=True, icc=False))[4]
    # two host ports to one container port share their hairpin element; CIDRs merged
    assert els.count(("pm_masq", "10.1.0.0/24 . 10.1.0.3 . tcp . 80", "")) == 1
    assert [e for e in els if e[0] == "masq_skip"] == [("masq_skip", "10.1.0.3 . 10.1.0.0/24", ""),
                                                       ("masq_skip", "10.1.0.3 . 10.244.0.0/16", "")]
    assert ("ports_any", "tcp . 8080", "10.1.0.3 . 80") in els
    assert ("ports", "127.0.0.1 . udp . 5353", "10.1.0.3 . 53") in els
    assert ("iso", '"br1" . 10.1.0.3', "") in els and ("icc", '"br1" . 10.1.0.3 . "br1"', "") in els
    assert len(els) == len(set(els)) == nftables.NftDriver().count(_att(
        no_masq_to=["10.244.0.0/16", "10.244.3.0/24", "10.1.0.0/24"], isolation=True, icc=False))


def test_listing_and_traced_packets_read_back():
    text = '''table ip minidocker { # handle 3
	map ports_any { # handle 2
		type inet_proto . inet_service : ipv4_addr . inet_service
		elements = { tcp . 8080 comment "md/n/a/eth0" : 10.1.0.3 . 80,
			     udp . 53 comment "md/n/b/eth0" : 10.1.0.4 . 53 }
	}
	set pm_masq { # handle 5
		type ipv4_addr . ipv4_addr . inet_proto . inet_service
		flags interval
		elements = { 10.1.0.0/24 . 10.1.0.3 . tcp . 80 comment "md/n/a/eth0" }
	}
	chain prerouting { # handle 1
		type nat hook prerouting priority dstnat; policy accept;
		fib daddr type local dnat ip to meta l4proto . th dport map @ports_any comment "minidocker" # handle 9
	}
}
'''
    rules, els = nftlisting.parse_table(text)
    assert rules == [("prerouting", "minidocker", 9,
                      'fib daddr type local dnat ip to meta l4proto . th dport map @ports_any comment "minidocker" # handle 9')]
    assert els == [("ports_any", "tcp . 8080", "10.1.0.3 . 80", "md/n/a/eth0"),
                   ("ports_any", "udp . 53", "10.1.0.4 . 53", "md/n/b/eth0"),
                   ("pm_masq", "10.1.0.0/24 . 10.1.0.3 . tcp . 80", "", "md/n/a/eth0")]
    entries = [{"set": s, "key": k, "data": d, "comment": c} for s, k, d, c in els]
    packet = 'iif "uplink0" ip saddr 203.0.113.9 ip daddr 203.0.113.1 ip protocol tcp tcp sport 4000 tcp dport 8080'
    assert nftlisting.matched_element(rules[0][3], packet, entries)["comment"] == "md/n/a/eth0"
    assert nftlisting.matched_element(rules[0][3], packet.replace("8080", "8099"), entries) == {}
    hairpin = "ct status dnat ip saddr . ip daddr . meta l4proto . th dport @pm_masq masquerade"
    assert nftlisting.matched_element(hairpin, "ip saddr 10.1.0.7 ip daddr 10.1.0.3 tcp dport 80",
                                    entries)["set"] == "pm_masq"
    assert nftlisting.matched_element(hairpin, "ip saddr 10.2.0.7 ip daddr 10.1.0.3 tcp dport 80", entries) == {}
    assert nftlisting.describe("ports_any", "tcp . 8080", "fd00::3 . 80") == "dnat to [fd00::3]:80"


def test_owner_index(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDOCKER_RUN", str(tmp_path))
    assert owners.empty() and owners.network_empty("md/a/")
    owners.write("md/a/", "md/a/x%y/eth0", {"n": 1})
    owners.write("md/b/", "md/b/z/eth0", {"n": 2})
    assert owners.read("md/a/", "md/a/x%y/eth0") == {"n": 1} and owners.owners("md/a/") == ["md/a/x%y/eth0"]
    assert not owners.empty() and not owners.network_empty("md/a/")
    owners.remove("md/a/", "md/a/x%y/eth0")
    owners.remove("md/a/", "md/a/x%y/eth0")   # already gone: fine
    assert owners.network_empty("md/a/") and owners.read("md/a/", "md/a/x%y/eth0") is None
    owners.remove("md/b/", "md/b/z/eth0")
    assert owners.empty() and not (tmp_path / "cni-bridge" / owners.directory().rsplit("/", 1)[1]).exists()


def _ours(cni, backend) -> str:
    if backend == "nftables":
        return cni.node.nft_ruleset()
    return "\n".join(l for l in cni.node.iptables_save().splitlines() if "md/" in l or "MINIDOCKER" in l)


def _index(cni) -> list:
    return sorted(p.name for p in (cni.node.run_root / "cni-bridge").rglob("*") if p.is_file()
                  and not p.name.endswith(".lock"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_del_and_add_when_kernel_and_index_disagree(cni, backend):
    node = cni.node
    conf = cni.conf(backend=backend, portmaps=[{"hostPort": 8083, "containerPort": 83}])
    a, b, c = cni.container(), cni.container(), cni.container()
    ra = cni.call("ADD", conf, a).ok().json
    rb = cni.call("ADD", cni.conf(backend=backend, portmaps=[{"hostPort": 8084, "containerPort": 84}]), b).ok().json
    assert len(_index(cni)) == 2
    cni.call("CHECK", with_prev(conf, ra), a).ok()
    # iptables: DNAT and masquerade; the published ports' masquerade is the network's, once
    assert _ours(cni, backend).count(f"md/mdtnet/{a.cid}/eth0") == {"iptables": 2, "nftables": 5}[backend]
    if backend == "iptables":
        shared = [l for l in node.iptables_save().splitlines() if l.endswith(("md/mdtnet/ -j MASQUERADE", 'md/mdtnet/" -j MASQUERADE'))]
        assert sum("-m mark --mark 0x2000/0x2000" in l and "-o mdtbr0" in l for l in shared) == 1, shared
        assert sum("-s 127.0.0.0/8 -o mdtbr0" in l for l in shared) == 1, shared
    # a's published port removed behind our back: its DEL still removes the rest
    if backend == "nftables":
        node.sh("nft", "delete", "element", "ip", "minidocker", "ports_any", "{ tcp . 8083 }")
    else:
        line = next(l for l in node.iptables_save().splitlines() if "DNAT" in l and a.cid in l)
        node.sh("iptables", "-t", "nat", *line.replace("-A", "-D", 1).replace('"', "").split())
    cni.call("DEL", with_prev(conf, ra), a).ok()
    assert a.cid not in _ours(cni, backend) and b.cid in _ours(cni, backend)
    # c publishes the host port b has: CNI allows it (the first one wins, as with portmap)
    rc = cni.call("ADD", cni.conf(backend=backend, portmaps=[{"hostPort": 8084, "containerPort": 85}]), c).ok().json
    assert c.cid in _ours(cni, backend)
    # b's index entry lost: its DEL finds its rules by comment
    for p in (node.run_root / "cni-bridge").rglob(f"*{b.cid}*"):
        p.unlink()
    cni.call("DEL", with_prev(conf, rb), b).ok()
    assert b.cid not in _ours(cni, backend) and c.cid in _ours(cni, backend)
    # our tables (nft) or chains (iptables) gone: the next ADD makes them again
    # (a flush that leaves our chains, without their jumps, takes `network reload`)
    if backend == "nftables":
        node.sh("nft", "flush", "ruleset")
    else:
        node.sh("iptables", "-t", "nat", "-F")
        node.sh("iptables", "-t", "nat", "-X")
    ra = cni.call("ADD", conf, a).ok().json
    cni.call("CHECK", with_prev(conf, ra), a).ok()
    cni.call("DEL", with_prev(conf, ra), a).ok()
    cni.call("DEL", with_prev(conf, rc), c).ok()
    cni.call("DEL", with_prev(conf, rc), c).ok()          # again: fine
    assert "md/" not in _ours(cni, backend) and "minidocker" not in node.nft_ruleset()
    assert "MINIDOCKER" not in node.iptables_save() and _index(cni) == []
