"""cni-bridge run as a runtime runs it: ADD / CHECK / DEL / VERSION / GC /
STATUS, once per spec version, firewall backend and address stack."""
from __future__ import annotations

import json

import pytest

from cni_helpers import BACKENDS, SPEC_VERSIONS, STACKS, with_prev


def _rules(cni, backend) -> str:
    if backend == "nftables":
        return cni.node.nft_ruleset()
    return cni.node.iptables_save()


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("version", SPEC_VERSIONS)
def test_lifecycle(cni, version, backend, stack):
    """ADD -> result in the config's version; links, addresses, routes,
    rules and lease exist; CHECK passes; DEL removes exactly that; DEL again ok."""
    c = cni.container()
    conf = cni.conf(version=version, backend=backend, stack=stack,
                    portmaps=[{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}])
    res = cni.call("ADD", conf, c).ok().json
    assert res["cniVersion"] == version
    names = [i["name"] for i in res["interfaces"]]
    assert names[0] == "mdtbr0" and names[1].startswith("veth") and names[2] == "eth0"
    assert res["interfaces"][2]["sandbox"] == c.netns
    fams = 2 if stack == "dual" else 1
    assert len(res["ips"]) == fams
    for ip in res["ips"]:
        assert ip["interface"] == 2
        assert ("version" in ip) == (version < "1.0.0")
    assert res["ips"][0]["address"] == "10.66.0.2/24" and res["ips"][0]["gateway"] == "10.66.0.1"
    if stack == "dual":
        assert res["ips"][1]["address"] == "fd00:66::2/64"
    assert {r["dst"] for r in res["routes"]} == ({"0.0.0.0/0", "::/0"} if stack == "dual" else {"0.0.0.0/0"})

    # what the node and the container now hold
    assert names[1] in cni.node.link_names()
    addrs = c.sh("ip", "-j", "addr", "show", "eth0").stdout
    assert "10.66.0.2" in addrs
    assert "default via 10.66.0.1" in c.sh("ip", "route").stdout
    if stack == "dual":
        assert "fd00:66::2" in addrs
        assert "default via fd00:66::1" in c.sh("ip", "-6", "route").stdout
    assert set(cni.leases()) == ({"10.66.0.2", "fd00:66::2"} if stack == "dual" else {"10.66.0.2"})
    assert cni.leases()["10.66.0.2"] == f"{c.cid}\r\neth0"
    rules = _rules(cni, backend)
    assert f"md/mdtnet/{c.cid}/eth0" in rules
    c.sh("ping", "-c1", "-W2", "10.66.0.1")

    prev = with_prev(conf, res)
    if version >= "0.4.0":
        chk = cni.call("CHECK", prev, c).ok()
        assert chk.stdout.strip() == ""
    else:
        chk = cni.call("CHECK", prev, c)
        assert chk.rc == 1 and chk.code == 1

    cni.call("DEL", prev, c).ok()
    assert cni.leases() == {}
    assert names[1] not in cni.node.link_names()
    assert "md/mdtnet" not in _rules(cni, backend)
    assert "minidocker" not in _rules(cni, backend).lower()
    assert "eth0" not in c.sh("ip", "link").stdout
    cni.call("DEL", prev, c).ok()          # twice
    cni.call("DEL", conf, c).ok()          # without prevResult


@pytest.mark.parametrize("version", SPEC_VERSIONS)
def test_version(cni, version):
    r = cni.call("VERSION", {"cniVersion": version}).ok().json
    assert r["cniVersion"] == version
    assert {"0.3.1", "0.4.0", "1.0.0", "1.1.0"} <= set(r["supportedVersions"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_del_idempotent_when_things_are_gone(cni, backend):
    """DEL succeeds with the namespace gone, the interface gone, the lease
    gone, and without CNI_NETNS; it still releases the lease and the rules."""
    conf = cni.conf(backend=backend, portmaps=[{"hostPort": 8081, "containerPort": 81}])
    a, b, d = cni.container(), cni.container(), cni.container()
    ra = cni.call("ADD", conf, a).ok().json
    rb = cni.call("ADD", conf, b).ok().json
    rd = cni.call("ADD", conf, d).ok().json
    # a: namespace gone
    cni.node.sh("true")
    import subprocess
    subprocess.run(["ip", "netns", "del", a.name], check=True)
    cni.call("DEL", with_prev(conf, ra), a).ok()
    # b: interface gone (deleted inside the container), no netns variable
    b.sh("ip", "link", "del", "eth0")
    cni.call("DEL", with_prev(conf, rb), b, drop=("CNI_NETNS",)).ok()
    # d: lease gone before DEL
    (cni.data_dir / "mdtnet" / "10.66.0.4").unlink()
    cni.call("DEL", with_prev(conf, rd), d).ok()
    assert cni.leases() == {}
    assert "md/mdtnet" not in _rules(cni, backend)
    assert {l for l in cni.node.link_names() if l.startswith("veth")} == set()
    cni.containers.remove(a)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("what", ["link", "address", "route", "rule", "masquerade", "scaffold", "lease",
                                  "container-link"])
def test_check_reports_missing(cni, backend, what):
    c = cni.container()
    conf = cni.conf(backend=backend, portmaps=[{"hostPort": 8082, "containerPort": 82}])
    res = cni.call("ADD", conf, c).ok().json
    prev = with_prev(conf, res)
    cni.call("CHECK", prev, c).ok()
    host = res["interfaces"][1]["name"]
    if what == "link":
        cni.node.sh("ip", "link", "set", host, "nomaster")
    elif what == "container-link":
        c.sh("ip", "link", "set", "eth0", "name", "other0")
    elif what == "address":
        c.sh("ip", "addr", "del", "10.66.0.2/24", "dev", "eth0")
    elif what == "route":
        c.sh("ip", "route", "del", "default")
    elif what == "rule":
        if backend == "iptables":
            line = next(l for l in cni.node.iptables_save().splitlines() if "DNAT" in l and "md/" in l)
            cni.node.sh("iptables", "-t", "nat", *line.replace("-A", "-D", 1).replace('"', "").split())
        else:   # the published port's element in the DNAT map
            cni.node.sh("nft", "delete", "element", "ip", "minidocker", "ports_any", "{ tcp . 8082 }")
    elif what == "masquerade":   # iptables: the network's rule; nftables: the container's element
        if backend == "iptables":
            line = next(l for l in cni.node.iptables_save().splitlines() if 'md/mdtnet/" -j MASQUERADE' in l
                        and "! -d" in l)
            cni.node.sh("iptables", "-t", "nat", *line.replace("-A", "-D", 1).replace('"', "").split())
        else:
            cni.node.sh("nft", "delete", "element", "ip", "minidocker", "masq", "{ 10.66.0.2 }")
    elif what == "scaffold":   # the rule every container's port goes through, or our jump
        if backend == "iptables":
            cni.node.sh("iptables", "-t", "nat", "-D", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL",
                        "-m", "comment", "--comment", "minidocker", "-j", "MINIDOCKER")
        else:
            out = cni.node.sh("nft", "-a", "list", "chain", "ip", "minidocker", "prerouting").stdout
            handle = next(l.rsplit(" ", 1)[1] for l in out.splitlines() if "@ports_any" in l)
            cni.node.sh("nft", "delete", "rule", "ip", "minidocker", "prerouting", "handle", handle)
    elif what == "lease":
        (cni.data_dir / "mdtnet" / "10.66.0.2").unlink()
    r = cni.call("CHECK", prev, c)
    assert r.rc == 1 and r.code == 100, r
    if what == "masquerade" and backend == "iptables":
        assert r.msg == "the firewall rules of network mdtnet are missing (iptables): " \
                        "`minidocker network reload` puts them back", r
    if what == "container-link":
        c.sh("ip", "link", "set", "other0", "name", "eth0")
    cni.call("DEL", prev, c).ok()


@pytest.mark.parametrize("backend", BACKENDS)
def test_gc_releases_what_is_not_valid(cni, backend):
    conf = cni.conf(backend=backend, portmaps=[{"hostPort": 8083, "containerPort": 83}])
    keep, gone = cni.container(), cni.container()
    rk = cni.call("ADD", conf, keep).ok().json
    cni.call("ADD", conf, gone).ok()
    # a runtime that lost track of `gone`: GC with only `keep` valid
    gc = dict(conf)
    gc["cni.dev/valid-attachments"] = [{"containerID": keep.cid, "ifname": "eth0"}]
    r = cni.call("GC", gc).ok()
    assert r.stdout.strip() == ""
    assert set(cni.leases()) == {"10.66.0.2"}
    rules = _rules(cni, backend)
    assert f"md/mdtnet/{keep.cid}/eth0" in rules and gone.cid not in rules
    assert "eth0" not in gone.sh("ip", "link").stdout
    cni.call("CHECK", with_prev(conf, rk), keep).ok()
    # the 1.1.0 tag's key is accepted too; an empty valid set releases all
    gc2 = dict(conf)
    gc2.pop("cni.dev/valid-attachments", None)
    gc2["cni.dev/attachments"] = []
    cni.call("GC", gc2).ok()
    assert cni.leases() == {}
    assert "md/mdtnet" not in _rules(cni, backend)
    cni.call("DEL", with_prev(conf, rk), keep).ok()


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"])
def test_gc_and_status_need_1_1_0(cni, version):
    conf = cni.conf(version=version)
    for cmd in ("GC", "STATUS"):
        r = cni.call(cmd, conf)
        assert r.rc == 1 and r.code == 1, r


def test_status(cni):
    conf = cni.conf()
    assert cni.call("STATUS", conf).ok().stdout.strip() == ""
    # a pool with room for one address: ready, then exhausted (50)
    small = cni.conf()
    small["ipam"]["ranges"] = [[{"subnet": "10.66.0.0/24", "rangeStart": "10.66.0.10", "rangeEnd": "10.66.0.10"}]]
    cni.call("STATUS", small).ok()
    c = cni.container()
    res = cni.call("ADD", small, c).ok().json
    r = cni.call("STATUS", small)
    assert r.rc == 1 and r.code == 50 and "no IP addresses available" in r.msg
    cni.call("DEL", with_prev(small, res), c).ok()


def test_prev_result_any_version_passed_through(cni):
    """A 0.3.1 prevResult under a 1.1.0 config: kept, converted, extended."""
    c = cni.container()
    prev = {"cniVersion": "0.3.1", "interfaces": [{"name": "lo", "sandbox": c.netns}],
            "ips": [{"version": "4", "address": "127.0.0.1/8", "interface": 0}], "dns": {}}
    conf = with_prev(cni.conf(), prev)
    res = cni.call("ADD", conf, c).ok().json
    assert res["cniVersion"] == "1.1.0"
    assert [i["name"] for i in res["interfaces"]][0] == "lo"
    assert res["ips"][0]["address"] == "127.0.0.1/8" and "version" not in res["ips"][0]
    assert res["ips"][1]["interface"] == 3
    cni.call("DEL", with_prev(cni.conf(), res), c).ok()


@pytest.mark.parametrize("stack", STACKS)
def test_container_interface_sends_no_ipv6_chatter(cni, stack):
    """The bridge floods a container's IPv6 multicast (router solicitations,
    repeated for an hour; MLD; DAD) to every port: without an IPv6 address
    the interface has IPv6 off, with one it solicits no router."""
    c = cni.container()
    conf = cni.conf(stack=stack)
    res = cni.call("ADD", conf, c).ok().json
    try:
        sysctl = lambda key: c.sh("cat", f"/proc/sys/net/ipv6/conf/eth0/{key}").stdout.strip()  # noqa: E731
        addrs = c.sh("ip", "-6", "addr", "show", "dev", "eth0").stdout
        if stack == "v4":
            assert sysctl("disable_ipv6") == "1" and "inet6" not in addrs
            # nothing reached the bridge port from the container: no DAD, MLD or solicitation
            veth = res["interfaces"][1]["name"]
            stats = json.loads(cni.node.sh("ip", "-s", "-j", "link", "show", veth).stdout)[0]["stats64"]
            assert stats["rx"]["packets"] == 0, stats
        else:
            assert sysctl("disable_ipv6") == "0" and sysctl("router_solicitations") == "0"
            assert "fd00:66::2" in addrs
        c.sh("ping", "-c1", "-W2", "10.66.0.1")
    finally:
        cni.call("DEL", with_prev(conf, res), c).ok()


def test_options_mac_mtu_promisc_force_address(cni):
    c = cni.container()
    conf = cni.conf(mtu=1400, hairpinMode=False, promiscMode=True, runtimeConfig={"mac": "0a:58:0a:42:00:99"})
    res = cni.call("ADD", conf, c, args="MAC=0a:58:0a:42:00:01").ok().json
    assert res["interfaces"][2]["mac"] == "0a:58:0a:42:00:99"          # runtimeConfig wins
    assert res["interfaces"][2]["mtu"] == 1400
    link = json.loads(c.sh("ip", "-j", "link", "show", "eth0").stdout)[0]
    assert link["mtu"] == 1400 and link["address"] == "0a:58:0a:42:00:99"
    br = json.loads(cni.node.sh("ip", "-j", "link", "show", "mdtbr0").stdout)[0]
    assert "PROMISC" in br["flags"]
    cni.call("DEL", with_prev(conf, res), c).ok()
    # a bridge holding another IPv4 address: refused, unless forceAddress
    cni.node.sh("ip", "addr", "flush", "dev", "mdtbr0")
    cni.node.sh("ip", "addr", "add", "10.77.0.1/24", "dev", "mdtbr0")
    d = cni.container()
    r = cni.call("ADD", cni.conf(), d)
    assert r.rc == 1 and "already has an IP address different from" in r.msg
    assert cni.leases() == {}
    res = cni.call("ADD", cni.conf(forceAddress=True), d).ok().json
    addrs = cni.node.sh("ip", "-4", "addr", "show", "mdtbr0").stdout
    assert "10.66.0.1/24" in addrs and "10.77.0.1" not in addrs
    cni.call("DEL", with_prev(cni.conf(), res), d).ok()


def test_bridge_mac_stays_while_ports_come_and_go(cni):
    """The gateway's MAC is the bridge's own, set at creation: it must not
    follow the lowest port MAC, or every container's cached gateway entry
    goes stale when a container joins or leaves (a ~25 s stall)."""
    def bridge():
        return json.loads(cni.node.sh("ip", "-j", "-d", "link", "show", "mdtbr0").stdout)[0]

    first = cni.container()
    res = cni.call("ADD", cni.conf(), first).ok().json
    mac = bridge()["address"]
    assert res["interfaces"][0]["mac"] == mac
    assert int(mac.split(":")[0], 16) & 0x03 == 0x02      # locally administered unicast
    others = [cni.container() for _ in range(3)]
    for c in others:
        cni.call("ADD", cni.conf(), c).ok()
        assert bridge()["address"] == mac
    cni.call("DEL", cni.conf(), first).ok()
    assert bridge()["address"] == mac
    for c in others:
        c.sh("ping", "-c1", "-W1", "10.66.0.1")
        assert mac in c.sh("ip", "neigh", "show", "10.66.0.1").stdout
        cni.call("DEL", cni.conf(), c).ok()
    assert bridge()["address"] == mac


def test_hairpin_mode_set(cni):
    c = cni.container()
    res = cni.call("ADD", cni.conf(), c).ok().json
    out = cni.node.sh("ip", "-d", "link", "show", res["interfaces"][1]["name"]).stdout
    assert "hairpin on" in out
    cni.call("DEL", cni.conf(), c).ok()


def test_add_refuses_existing_interface(cni):
    c = cni.container()
    c.sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
    r = cni.call("ADD", cni.conf(), c)
    assert r.rc == 1 and r.code == 4 and "already exists" in r.msg
    assert cni.leases() == {}
    assert not any(l.startswith("veth") for l in cni.node.link_names())


def test_ipam_options(cni, tmp_path):
    """rangeStart/rangeEnd, gateway, routes, resolvConf, requested IPs from
    CNI_ARGS, args.cni.ips and runtimeConfig.ips, ipRanges, round-robin."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.53\nsearch a.example b.example\ndomain example\noptions ndots:2\n")
    conf = cni.conf()
    conf["ipam"].update(ranges=[[{"subnet": "10.66.0.0/24", "rangeStart": "10.66.0.50",
                                  "rangeEnd": "10.66.0.52", "gateway": "10.66.0.1"}]],
                        routes=[{"dst": "192.0.2.0/24"}, {"dst": "198.51.100.0/24", "gw": "10.66.0.9"}],
                        resolvConf=str(resolv))
    a, b, d, e = (cni.container() for _ in range(4))
    ra = cni.call("ADD", conf, a).ok().json
    assert ra["ips"][0]["address"] == "10.66.0.50/24"
    assert ra["dns"] == {"nameservers": ["192.0.2.53"], "domain": "example",
                         "search": ["a.example", "b.example"], "options": ["ndots:2"]}
    assert "192.0.2.0/24 via 10.66.0.1" in a.sh("ip", "route").stdout
    assert "198.51.100.0/24 via 10.66.0.9" in a.sh("ip", "route").stdout
    # requested: CNI_ARGS IP= (args.cni.ips would win when both are there)
    rb = cni.call("ADD", conf, b, args="IP=10.66.0.52").ok().json
    assert rb["ips"][0]["address"] == "10.66.0.52/24"
    both = dict(conf, args={"cni": {"ips": ["10.66.0.51"]}})
    rd = cni.call("ADD", both, d, args="IP=10.66.0.52").ok().json
    assert rd["ips"][0]["address"] == "10.66.0.51/24"
    r = cni.call("ADD", conf, e)
    assert r.rc == 1 and r.code == 101 and "no IP addresses available in range set" in r.msg
    for c, res in ((a, ra), (b, rb), (d, rd)):
        cni.call("DEL", with_prev(conf, res), c).ok()
    # runtimeConfig.ips and the ipRanges capability (prepended)
    rc = dict(conf, runtimeConfig={"ips": ["10.88.5.7/24"], "ipRanges": [[{"subnet": "10.88.5.0/24"}]]})
    re_ = cni.call("ADD", rc, e).ok().json
    assert [i["address"] for i in re_["ips"]] == ["10.88.5.7/24", "10.66.0.50/24"]
    cni.call("DEL", with_prev(rc, re_), e).ok()
    assert cni.leases() == {}


def test_round_robin_and_duplicate(cni):
    conf = cni.conf()
    a, b = cni.container(), cni.container()
    ra = cni.call("ADD", conf, a).ok().json
    cni.call("DEL", with_prev(conf, ra), a).ok()
    rb = cni.call("ADD", conf, b).ok().json
    assert rb["ips"][0]["address"] == "10.66.0.3/24"     # not .2 again: round-robin
    # a second attachment of the same (container, ifname) on another bridge port is refused
    r = cni.call("ADD", conf, b, ifname="eth1", args="IP=10.66.0.3")
    assert r.rc == 1 and "not available" in r.msg
    cni.call("DEL", with_prev(conf, rb), b).ok()


def test_python_m_entry_point(cni):
    from harness import VENV_BIN
    r = cni.node.run([str(VENV_BIN / "python"), "-m", "cni_bridge"],
                     env={"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"}, input='{"cniVersion":"1.0.0"}')
    assert json.loads(r.stdout)["cniVersion"] == "1.0.0"


def test_in_process_dispatch(cni):
    """The executor's fast path: the same handlers called without exec."""
    from harness import VENV_BIN
    c = cni.container()
    conf = cni.conf(portmaps=[{"hostPort": 8084, "containerPort": 84}])
    code = (
        "import json, os, sys\n"
        "from cni import skel\n"
        "from cni_bridge.plugin import HANDLERS\n"
        "env = dict(os.environ, CNI_COMMAND=sys.argv[1])\n"
        "rc, out = skel.dispatch(HANDLERS, env, sys.stdin.buffer.read())\n"
        "print(json.dumps(out) if out is not None else ''); sys.exit(rc)\n")
    env = {**cni.node.env(), "CNI_CONTAINERID": c.cid, "CNI_NETNS": c.netns, "CNI_IFNAME": "eth0"}
    add = cni.node.run([str(VENV_BIN / "python"), "-c", code, "ADD"], env=env, input=json.dumps(conf))
    res = json.loads(add.stdout)
    assert res["ips"][0]["address"] == "10.66.0.2/24"
    cni.call("CHECK", with_prev(conf, res), c).ok()          # the executable agrees
    cni.node.run([str(VENV_BIN / "python"), "-c", code, "DEL"], env=env, input=json.dumps(with_prev(conf, res)))
    assert cni.leases() == {} and "md/" not in cni.node.iptables_save()
