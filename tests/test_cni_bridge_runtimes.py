"""What real runtimes send cni-bridge, beyond the spec's examples.

containerd's CRI (go-cni) marshals capability args without JSON tags, so the
keys arrive capitalised (`HostPort`, `IPRanges`, `Subnet`); a config may have
been edited or broken between ADD and DEL (DEL must still remove what the
plugin owns, found by container id and ifname); an IPAM delegate may predate
STATUS (Debian's host-local 1.1.1), which libcni skips after asking VERSION.
"""
from __future__ import annotations

import json
import os

import pytest

from cni.conventions import canonical
from cni_helpers import BACKENDS, with_prev
from harness import NODE_ADDR, run
from test_cni_bridge_ports import client, serve

# What containerd 1.6's CRI puts in runtimeConfig (go-cni's untagged structs).
CONTAINERD_PORTS = [{"HostPort": 8090, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}]


@pytest.fixture
def cni(cni, servers):
    cni.servers = servers
    return cni


def test_keys_are_matched_as_go_matches_them():
    conf = {"name": "n", "Bridge": "kept-as-is",
            "runtimeConfig": {"portMappings": [{"HostPort": 1, "containerport": 2, "PROTOCOL": "udp"}],
                              "IPRanges": [[{"Subnet": "10.1.0.0/24", "RangeStart": "10.1.0.9"}]],
                              "Mac": "0a:58:00:00:00:01", "Bandwidth": {"IngressRate": 5},
                              "somethingElse": {"HostPort": 3}},
            "Args": {"CNI": {"IPs": ["10.1.0.9"]}}}
    assert canonical(conf) == {
        "name": "n", "Bridge": "kept-as-is",
        "runtimeConfig": {"portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "udp"}],
                          "ipRanges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.9"}]],
                          "mac": "0a:58:00:00:00:01", "bandwidth": {"ingressRate": 5},
                          "somethingElse": {"HostPort": 3}},
        "args": {"cni": {"ips": ["10.1.0.9"]}}}
    # an exact key wins, wherever it stands
    for pm in ({"HostPort": 1, "hostPort": 2}, {"hostPort": 2, "HostPort": 1}):
        assert canonical({"runtimeConfig": {"portMappings": [pm]}})["runtimeConfig"] == \
            {"portMappings": [{"hostPort": 2}]}


@pytest.mark.parametrize("backend", BACKENDS)
def test_port_mappings_as_containerd_sends_them(cni, backend):
    node = cni.node
    conf = cni.conf(version="1.0.0", backend=backend)
    conf["runtimeConfig"] = {"portMappings": CONTAINERD_PORTS}
    c = cni.container()
    r = cni.call("ADD", conf, c).ok().json
    serve(cni, c.netns, "TCP4-LISTEN:80,fork,reuseaddr", "SYSTEM:echo hello")
    assert client(cni, node.ext_netns, NODE_ADDR, 8090, tries=20) == "hello"
    assert client(cni, node.netns, "127.0.0.1", 8090, tries=3) == "hello"
    cni.call("DEL", with_prev(conf, r), c).ok()
    rules = node.nft_ruleset() if backend == "nftables" else node.iptables_save()
    assert c.cid not in rules
    assert cni.leases() == {}


def test_ip_ranges_mac_and_args_capitalised(cni):
    conf = cni.conf(version="1.0.0")
    conf["ipam"]["ranges"] = []          # host-local prepends ipRanges: they would overlap
    conf["runtimeConfig"] = {"IPRanges": [[{"Subnet": "10.66.0.0/24", "RangeStart": "10.66.0.50",
                                            "RangeEnd": "10.66.0.60"}]],
                             "Mac": "0a:58:0a:42:00:32"}
    c = cni.container()
    r = cni.call("ADD", conf, c).ok().json
    assert r["ips"][0]["address"] == "10.66.0.50/24"
    assert "0a:58:0a:42:00:32" in c.sh("ip", "link", "show", "eth0").stdout
    cni.call("DEL", with_prev(conf, r), c).ok()
    conf = cni.conf(version="1.0.0")
    conf["args"] = {"CNI": {"IPs": ["10.66.0.77"]}}
    r = cni.call("ADD", conf, c).ok().json
    assert r["ips"][0]["address"] == "10.66.0.77/24"
    cni.call("DEL", with_prev(conf, r), c).ok()


def _owned(cni, c) -> dict:
    node = cni.node
    return {"veth": sorted(node.link_names() - {"lo", "uplink0"} - cni.bridges),
            "rules": c.cid in node.iptables_save() or c.cid in node.nft_ruleset(),
            "leases": sorted(cni.leases())}


@pytest.mark.parametrize("breakage", ["mtu", "portMappings", "firewallBackend"])
def test_del_with_a_config_it_cannot_parse_removes_what_it_owns(cni, breakage):
    conf = cni.conf(version="1.0.0", portmaps=[{"hostPort": 8091, "containerPort": 80}])
    c = cni.container()
    r = cni.call("ADD", conf, c).ok().json
    before = _owned(cni, c)
    assert before["veth"] and before["rules"] and before["leases"]
    broken = with_prev(conf, r)
    if breakage == "portMappings":
        broken["runtimeConfig"] = {"portMappings": [{"HostPort": None}]}
    else:
        broken[breakage] = "not a valid value"
    reply = cni.call("DEL", broken, c).ok()
    assert "cannot parse" in reply.stderr and breakage in reply.stderr
    assert _owned(cni, c) == {"veth": [], "rules": False, "leases": []}
    if breakage == "firewallBackend":
        assert "defaults used for: firewallBackend" in reply.stderr
    cni.call("DEL", conf, c).ok()   # and still idempotent


def test_del_with_an_unreadable_ipam_section_says_what_it_could_not_undo(cni):
    conf = cni.conf(version="1.0.0")
    c = cni.container()
    cni.call("ADD", conf, c).ok()
    broken = dict(conf, ipam=42)
    reply = cni.call("DEL", broken, c).ok()
    assert "defaults used for: ipam" in reply.stderr
    assert _owned(cni, c)["veth"] == [] and not _owned(cni, c)["rules"]
    assert cni.leases(), "the lease is in the config's dataDir, which the broken DEL could not know"
    cni.call("DEL", conf, c).ok()
    assert cni.leases() == {}


def _delegate(tmp_path, versions: list[str], status_exit: int) -> str:
    """An IPAM delegate that says which versions it speaks and fails STATUS."""
    d = tmp_path / "delegates"
    d.mkdir(exist_ok=True)
    (d / "version.json").write_text(json.dumps({"cniVersion": "1.0.0", "supportedVersions": versions}))
    (d / "status.json").write_text(json.dumps({"cniVersion": "1.1.0", "code": 50, "msg": "pool gone"}))
    exe = d / "fake-ipam"
    exe.write_text("#!/bin/sh\n"
                   'case "$CNI_COMMAND" in\n'
                   f"  VERSION) cat {d}/version.json ;;\n"
                   f"  STATUS) cat {d}/status.json; exit {status_exit} ;;\n"
                   "esac\n")
    os.chmod(exe, 0o755)
    return str(d)


def test_status_skips_a_delegate_older_than_1_1_0(cni, tmp_path):
    """Debian's host-local (1.1.1, versions up to 1.0.0) answers STATUS with
    'missing containerID': asked VERSION first, it is not asked STATUS."""
    assert cni.call("STATUS", cni.conf(ipam_type="host-local")).rc == 0
    path = _delegate(tmp_path, ["0.4.0", "1.0.0"], status_exit=1)
    env = {"CNI_PATH": f"{path}:{cni.node.cni_path}"}
    assert cni.call("STATUS", cni.conf(ipam_type="fake-ipam"), env=env).rc == 0


def test_status_asks_a_1_1_0_delegate(cni, tmp_path):
    path = _delegate(tmp_path, ["1.0.0", "1.1.0"], status_exit=1)
    r = cni.call("STATUS", cni.conf(ipam_type="fake-ipam"), env={"CNI_PATH": f"{path}:{cni.node.cni_path}"})
    assert r.rc == 1 and r.code == 50 and r.msg == "pool gone"


def test_reference_host_local_answers_status_with_an_error():
    """Why the VERSION probe exists: asked directly, host-local 1.1.1 fails."""
    proc = run(["/usr/lib/cni/host-local"], check=False, input='{"cniVersion":"1.0.0","name":"n",'
               '"ipam":{"type":"host-local","subnet":"10.9.0.0/24"}}',
               env={"CNI_COMMAND": "STATUS", "CNI_PATH": "/usr/lib/cni", "PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0
