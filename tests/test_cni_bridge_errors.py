"""Bad configurations and environments: each is answered with the spec's
error code and a message that names the problem, on stdout as JSON, exit 1,
and leaves nothing behind (no link, lease, rule)."""
from __future__ import annotations

import json

import pytest

from cni_helpers import SPEC_VERSIONS
from harness import UPLINK


def _set(path, value):
    """conf mutator: set a dotted key (value None deletes it)."""
    def apply(conf):
        *parents, last = path.split(".")
        d = conf
        for p in parents:
            d = d.setdefault(p, {})
        if value is None:
            d.pop(last, None)
        else:
            d[last] = value
        return conf
    return apply


def _range(**kw):
    return _set("ipam.ranges", [[{"subnet": "10.66.0.0/24", **kw}]])


# (id, command, conf mutator or raw stdin, env changes (None = unset), code, message part)
CASES = [
    ("unknown-command", "FOO", None, {}, 4, "unknown CNI_COMMAND: FOO"),
    ("no-containerid", "ADD", None, {"CNI_CONTAINERID": None}, 4, "CNI_CONTAINERID"),
    ("no-netns", "ADD", None, {"CNI_NETNS": None}, 4, "CNI_NETNS"),
    ("no-ifname", "ADD", None, {"CNI_IFNAME": None}, 4, "CNI_IFNAME"),
    ("no-path", "ADD", None, {"CNI_PATH": None}, 4, "CNI_PATH"),
    ("check-no-netns", "CHECK", None, {"CNI_NETNS": None}, 4, "CNI_NETNS"),
    ("bad-containerid", "ADD", None, {"CNI_CONTAINERID": "bad/id"}, 4, "invalid characters in containerID"),
    ("ifname-too-long", "ADD", None, {"CNI_IFNAME": "x" * 16}, 4, "interface name is too long"),
    ("ifname-dot", "ADD", None, {"CNI_IFNAME": "."}, 4, "interface name is . or .."),
    ("ifname-slash", "ADD", None, {"CNI_IFNAME": "a/b"}, 4, "contains / or :"),
    ("netns-missing", "ADD", None, {"CNI_NETNS": "/run/netns/mdt-does-not-exist"}, 4, "failed to open netns"),
    ("netns-not-a-netns", "ADD", None, {"CNI_NETNS": "/etc/hostname"}, 4, "not a network namespace"),
    ("cni-args-malformed", "ADD", None, {"CNI_ARGS": "FOO"}, 4, "invalid pair"),
    ("cni-args-unknown", "ADD", None, {"CNI_ARGS": "FOO=bar"}, 2, "unknown args [FOO=bar]"),
    ("cni-args-bad-ignoreunknown", "ADD", None, {"CNI_ARGS": "IgnoreUnknown=maybe"}, 4, "IgnoreUnknown"),
    ("cni-args-bad-ip", "ADD", None, {"CNI_ARGS": "IP=10.66.0.300"}, 4, "invalid IP"),
    ("cni-args-bad-mac", "ADD", None, {"CNI_ARGS": "MAC=zz:zz"}, 4, "invalid MAC"),
    ("cni-args-ip-outside", "ADD", None, {"CNI_ARGS": "IP=10.99.0.5"}, 101,
     "failed to allocate all requested IPs: 10.99.0.5"),
    ("requested-gateway", "ADD", None, {"CNI_ARGS": "IP=10.66.0.1"}, 101, "is subnet's gateway"),
    ("not-json", "ADD", "{not json", {}, 6, "error parsing network config"),
    ("json-array", "ADD", "[1, 2]", {}, 6, "not a JSON object"),
    ("version-unsupported", "ADD", _set("cniVersion", "9.9.9"), {}, 1, "incompatible CNI versions"),
    ("version-garbage", "ADD", _set("cniVersion", "one"), {}, 6, "invalid version"),
    ("check-old-version", "CHECK", _set("cniVersion", "0.3.1"), {}, 1, "does not allow CHECK"),
    ("gc-old-version", "GC", _set("cniVersion", "1.0.0"), {}, 1, "does not allow GC"),
    ("status-old-version", "STATUS", _set("cniVersion", "0.4.0"), {}, 1, "does not allow STATUS"),
    ("name-missing", "ADD", _set("name", None), {}, 7, "missing network name"),
    ("name-invalid", "ADD", _set("name", "bad name"), {}, 7, "invalid characters found in network name"),
    ("ipam-missing", "ADD", _set("ipam", None), {}, 7, "'ipam'"),
    ("ranges-missing", "ADD", _set("ipam.ranges", None), {}, 7, "no IP ranges specified"),
    ("subnet-invalid", "ADD", _set("ipam.ranges", [[{"subnet": "10.66.0.0/33"}]]), {}, 7, "invalid CIDR"),
    ("subnet-too-small", "ADD", _set("ipam.ranges", [[{"subnet": "10.66.0.0/31"}]]), {}, 7, "too small"),
    ("rangestart-outside", "ADD", _range(rangeStart="10.67.0.5"), {}, 7, "rangeStart 10.67.0.5 not in network"),
    ("rangestart-after-end", "ADD", _range(rangeStart="10.66.0.9", rangeEnd="10.66.0.5"), {}, 7,
     "rangeStart is after rangeEnd"),
    ("gateway-not-ip", "ADD", _range(gateway="gw"), {}, 7, "gateway 'gw' is not an IP address"),
    ("range-sets-overlap", "ADD", _set("ipam.ranges", [[{"subnet": "10.66.0.0/24"}], [{"subnet": "10.66.0.0/25"}]]),
     {}, 7, "range set 0 overlaps with 1"),
    ("range-set-mixed", "ADD", _set("ipam.ranges", [[{"subnet": "10.66.0.0/24"}, {"subnet": "fd00::/64"}]]),
     {}, 7, "mixed address families"),
    ("bridge-name-too-long", "ADD", _set("bridge", "b" * 16), {}, 7, "invalid bridge name"),
    ("mtu-too-small", "ADD", _set("mtu", 10), {}, 7, "invalid mtu 10"),
    ("isgateway-string", "ADD", _set("isGateway", "yes"), {}, 7, "invalid value for isGateway"),
    ("hairpin-and-promisc", "ADD", lambda c: {**c, "hairpinMode": True, "promiscMode": True}, {}, 7,
     "hairpin mode and promiscuous mode"),
    ("firewall-backend", "ADD", _set("firewallBackend", "pf"), {}, 7, "invalid firewallBackend 'pf'"),
    ("vlan-unsupported", "ADD", _set("vlan", 100), {}, 2, "unsupported field vlan=100"),
    ("hostport-range", "ADD", _set("runtimeConfig.portMappings", [{"hostPort": 70000, "containerPort": 80}]),
     {}, 7, "invalid hostPort 70000"),
    ("protocol-icmp", "ADD", _set("runtimeConfig.portMappings",
                                  [{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}]), {}, 7,
     "invalid protocol 'icmp'"),
    ("hostip-invalid", "ADD", _set("runtimeConfig.portMappings",
                                   [{"hostPort": 80, "containerPort": 80, "hostIP": "nope"}]), {}, 7,
     "invalid hostIP 'nope'"),
    ("runtime-mac-invalid", "ADD", _set("runtimeConfig.mac", "01:00:5e:00:00:01"), {}, 7, "invalid MAC"),
    ("args-ips-invalid", "ADD", _set("args", {"cni": {"ips": ["x.y"]}}), {}, 7, "invalid IP 'x.y' in args.cni.ips"),
    ("ipam-plugin-missing", "ADD", _set("ipam.type", "no-such-ipam"), {}, 7, "failed to find plugin 'no-such-ipam'"),
    ("ipam-type-path", "ADD", _set("ipam.type", "../host-local"), {}, 7, "invalid IPAM plugin type"),
    ("prevresult-malformed", "ADD", _set("prevResult", {"cniVersion": "1.0.0", "ips": [{"address": "nope"}]}),
     {}, 6, "invalid result"),
    ("check-without-prevresult", "CHECK", None, {}, 7, "required prevResult missing"),
    ("gc-attachments-not-list", "GC", lambda c: {**c, "cni.dev/valid-attachments": "all"}, {}, 7,
     "valid-attachments must be a list"),
    ("resolvconf-missing", "ADD", _set("ipam.resolvConf", "/nonexistent/resolv.conf"), {}, 5,
     "failed to read resolvConf"),
]


FLOOR = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}


@pytest.mark.parametrize("version", SPEC_VERSIONS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(cni, case, version):
    _id, command, mutate, env, code, msg = case
    c = cni.container()
    conf = cni.conf(version=version, portmaps=[{"hostPort": 8090, "containerPort": 80}])
    sets_version = "version" in _id
    if command in FLOOR and version < FLOOR[command] and not sets_version and code != 4:
        # the command does not exist in this version: that is the answer (P3)
        code, msg = 1, f"does not allow {command}"
    if isinstance(mutate, str):
        stdin = mutate
    else:
        stdin = json.dumps(mutate(conf) if mutate else conf)
    drop = tuple(k for k, v in env.items() if v is None)
    r = cni.call(command, stdin, c, env={k: v for k, v in env.items() if v is not None}, drop=drop)
    assert r.rc == 1, r
    assert r.code == code, r
    assert msg in r.msg, r
    if not env and not sets_version and not isinstance(mutate, str) and command != "FOO":
        assert r.json["cniVersion"] == version     # errors about the config speak its version
    else:
        assert r.json.get("cniVersion")            # found before the config was read
    # nothing left: no link (not even the bridge), no lease, no rule
    assert cni.node.link_names() == {"lo", UPLINK}
    assert cni.leases() == {}
    assert "md/" not in cni.node.iptables_save() and "minidocker" not in cni.node.nft_ruleset()


def test_bridge_name_taken_by_another_link(cni):
    """Fails after IPAM allocated: the lease is rolled back."""
    c = cni.container()
    cni.node.sh("ip", "link", "add", "mdtbr0", "type", "veth", "peer", "name", "mdtbr0p")
    r = cni.call("ADD", cni.conf(), c)
    assert r.rc == 1 and r.code == 7 and "already exists but is not a bridge" in r.msg
    assert cni.leases() == {}
    assert "md/" not in cni.node.iptables_save()
    cni.node.sh("ip", "link", "del", "mdtbr0")


def test_missing_command_prints_about(cni):
    r = cni.call("", cni.conf(), drop=("CNI_COMMAND",))
    assert r.rc == 0 and "cni-bridge" in r.stderr and r.stdout == ""


def test_error_in_config_version(cni):
    """Errors are printed in the config's cniVersion."""
    c = cni.container()
    r = cni.call("ADD", cni.conf(version="0.4.0", mtu=1), c)
    assert r.json["cniVersion"] == "0.4.0" and r.code == 7


def test_failure_after_links_rolls_back(cni):
    """A route that cannot be installed fails ADD after links exist: the veth,
    the lease and the rules are all undone."""
    c = cni.container()
    conf = cni.conf(portmaps=[{"hostPort": 8091, "containerPort": 80}])
    conf["ipam"]["routes"] = [{"dst": "192.0.2.0/24", "gw": "198.51.100.1"}]  # unreachable gateway
    r = cni.call("ADD", conf, c)
    assert r.rc == 1 and r.code == 100 and "failed to add route 192.0.2.0/24" in r.msg
    assert cni.leases() == {}
    assert not any(l.startswith("veth") for l in cni.node.link_names())
    assert "md/" not in cni.node.iptables_save()
    assert "eth0" not in c.sh("ip", "link").stdout
