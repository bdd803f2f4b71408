"""Interoperability with the reference plugins in /usr/lib/cni: chained after
`loopback`, chained with `portmap`, the reference `host-local` as delegated
IPAM, and leases shared with host-local in both directions."""
from __future__ import annotations

import os
import shlex
import signal
import time

import pytest

from cni_helpers import REFERENCE_VERSIONS, chain, with_prev
from harness import NODE_ADDR, run


def _clean_reference_portmap(node) -> None:
    """portmap's DEL leaves its shared CNI-HOSTPORT-* chains: the test removes them."""
    for tool in ("iptables", "ip6tables"):
        rules = node.sh(tool, "-t", "nat", "-S", check=False).stdout.splitlines()
        for line in rules:
            if line.startswith("-A ") and "-j CNI-HOSTPORT" in line and not line.split()[1].startswith("CNI-"):
                node.sh(tool, "-t", "nat", *shlex.split(line.replace("-A", "-D", 1)), check=False)
        chains = [l.split()[1] for l in rules if l.startswith("-N CNI-")]
        for ch in chains:
            node.sh(tool, "-t", "nat", "-F", ch, check=False)
        for ch in chains:
            node.sh(tool, "-t", "nat", "-X", ch, check=False)


@pytest.mark.parametrize("version", REFERENCE_VERSIONS)
def test_chained_after_loopback(cni, version):
    c = cni.container()
    lst = {"cniVersion": version, "name": "mdtnet",
           "plugins": [{"type": "loopback"}, cni.conf(version=version)]}
    lo = cni.call("ADD", chain(lst, 0), c, exe=cni.ref("loopback")).ok().json
    res = cni.call("ADD", chain(lst, 1, prev=lo), c).ok().json
    assert res["interfaces"][0]["name"] == "lo"
    assert [i["name"] for i in res["interfaces"]][-1] == "eth0"
    ours = [ip for ip in res["ips"] if ip.get("interface") != 0]
    assert ours and all(ip["interface"] == len(res["interfaces"]) - 1 for ip in ours)
    assert "UP" in c.sh("ip", "link", "show", "lo").stdout
    if version != "0.3.1":
        cni.call("CHECK", chain(lst, 1, prev=res), c).ok()
    cni.call("DEL", chain(lst, 1, prev=res), c).ok()
    cni.call("DEL", chain(lst, 0, prev=res), c, exe=cni.ref("loopback")).ok()
    assert cni.leases() == {}


@pytest.mark.parametrize("version", REFERENCE_VERSIONS)
def test_chained_with_reference_portmap(cni, version):
    """Our bridge (ipMasq) then the reference portmap doing the port maps:
    its DNAT reaches our container from outside."""
    node = cni.node
    c = cni.container()
    pm = [{"hostPort": 8099, "containerPort": 80, "protocol": "tcp"}]
    lst = {"cniVersion": version, "name": "mdtnet",
           "plugins": [cni.conf(version=version),
                       {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}]}
    res = cni.call("ADD", chain(lst, 0), c).ok().json
    res2 = cni.call("ADD", chain(lst, 1, prev=res, runtime={"portMappings": pm}), c,
                    exe=cni.ref("portmap")).ok().json
    assert res2["ips"] == res["ips"]
    srv = node.popen(["socat", "TCP4-LISTEN:80,fork,reuseaddr", "SYSTEM:echo hello"], ns=c.netns,
                     start_new_session=True, stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"))
    try:
        out = ""
        for _ in range(20):
            out = run(["nsenter", f"--net={node.ext_netns}", "--", "socat", "-T2", "-",
                       f"TCP:{NODE_ADDR}:8099"], check=False, input="").stdout.strip()
            if out:
                break
            time.sleep(0.05)
        assert out == "hello"
    finally:
        os.killpg(srv.pid, signal.SIGKILL)
        srv.wait(timeout=5)
    cni.call("DEL", chain(lst, 1, prev=res2, runtime={"portMappings": pm}), c, exe=cni.ref("portmap")).ok()
    cni.call("DEL", chain(lst, 0, prev=res2), c).ok()
    _clean_reference_portmap(node)
    assert cni.leases() == {}


@pytest.mark.parametrize("version", REFERENCE_VERSIONS)
def test_reference_host_local_as_delegated_ipam(cni, version):
    c = cni.container()
    conf = cni.conf(version=version, stack="dual", ipam_type="host-local")
    res = cni.call("ADD", conf, c).ok().json
    assert [ip["address"] for ip in res["ips"]] == ["10.66.0.2/24", "fd00:66::2/64"]
    assert set(cni.leases()) == {"10.66.0.2", "fd00:66::2"}       # written by host-local
    if version != "0.3.1":
        cni.call("CHECK", with_prev(conf, res), c).ok()
    cni.call("DEL", with_prev(conf, res), c).ok()
    assert cni.leases() == {}
    cni.call("DEL", with_prev(conf, res), c).ok()


def test_delegate_released_when_add_fails_later(cni):
    """P12: the delegate's ADD succeeded, then the plugin failed: the delegate
    gets a DEL before the error is returned."""
    c = cni.container()
    cni.node.sh("ip", "link", "add", "mdtbr0", "type", "veth", "peer", "name", "mdtbr0p")
    r = cni.call("ADD", cni.conf(version="1.0.0", ipam_type="host-local"), c)
    assert r.rc == 1 and "not a bridge" in r.msg
    assert cni.leases() == {}
    cni.node.sh("ip", "link", "del", "mdtbr0")


def test_delegate_error_passed_through(cni):
    c = cni.container()
    conf = cni.conf(version="1.0.0", ipam_type="host-local")
    conf["ipam"]["ranges"] = [[{"subnet": "10.66.0.0/24"}]]
    r = cni.call("ADD", conf, c, args="IgnoreUnknown=1;IP=10.99.0.1")
    assert r.rc == 1 and "failed to allocate all requested IPs" in r.msg   # host-local's own message
    assert cni.node.link_names() == {"lo", "uplink0"}


@pytest.mark.parametrize("version", REFERENCE_VERSIONS)
def test_leases_shared_with_host_local(cni, version):
    """A lease we wrote is released by host-local and the other way round;
    round-robin continues across both (last_reserved_ip)."""
    a, b = cni.container(), cni.container()
    conf = cni.conf(version=version)
    ipam_only = {"cniVersion": version, "name": "mdtnet", "ipam": conf["ipam"]}
    hl = cni.ref("host-local")
    ours = cni.call("ADD", conf, a).ok().json
    assert ours["ips"][0]["address"] == "10.66.0.2/24"
    theirs = cni.call("ADD", ipam_only, b, exe=hl).ok().json
    assert theirs["ips"][0]["address"] == "10.66.0.3/24"          # host-local saw our lease
    assert cni.leases()["10.66.0.3"] == f"{b.cid}\r\neth0"
    # host-local's refusal of a duplicate is ours too, and vice versa
    dup = cni.call("ADD", ipam_only, a, exe=hl)
    assert dup.rc == 1 and "duplicate allocation is not allowed" in dup.msg
    # host-local releases our lease; we release host-local's
    cni.call("DEL", ipam_only, a, exe=hl).ok()
    assert set(cni.leases()) == {"10.66.0.3"}
    cni.call("DEL", with_prev(conf, ours), a).ok()              # links and rules; lease already gone
    cni.call("DEL", conf, b).ok()
    assert cni.leases() == {}
    nxt = cni.call("ADD", conf, a).ok().json
    assert nxt["ips"][0]["address"] == "10.66.0.4/24"             # round-robin after host-local's .3
    cni.call("DEL", with_prev(conf, nxt), a).ok()
