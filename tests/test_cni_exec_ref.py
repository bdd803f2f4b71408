"""`minidocker cni` against the reference CNI plugins (1.1.1, /usr/lib/cni).

Everything runs inside a node (the plugins act on the namespace they run in);
container namespaces are made per test and removed at its end. The reference
plugins leave some global state behind by design (the bridge device, the
firewall and portmap top-level chains): each test asserts that the
per-container state is gone after DEL and then removes that global state, so
the node's leak check sees only what the executor would have leaked.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from harness import REFERENCE_CNI, run

pytestmark = pytest.mark.skipif(not Path(REFERENCE_CNI, "bridge").exists(),
                                reason="reference CNI plugins not installed")


def cnitool_id(netns: str) -> str:
    return "cnitool-" + hashlib.sha512(netns.encode()).hexdigest()[:20]


class Ref:
    """A node, its CNI config dir, private host-local store and container netns."""

    def __init__(self, node):
        self.node = node
        self.ipam_dir = node.root / "ipam"
        self.netns: list[str] = []

    def container(self, suffix: str) -> str:
        name = f"{self.node.name}-{suffix}"
        run(["ip", "netns", "add", name])
        self.netns.append(name)
        return f"/run/netns/{name}"

    def write(self, name: str, obj: dict) -> Path:
        path = self.node.cni_conf / name
        path.write_text(json.dumps(obj))
        return path

    def ipam(self, subnet: str) -> dict:
        return {"type": "host-local", "dataDir": str(self.ipam_dir), "ranges": [[{"subnet": subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}]}

    def cni(self, *args, check=True, **env):
        base = {"CNI_PATH": REFERENCE_CNI}
        base.update(env)
        return self.node.md("cni", *args, check=check, env=self.node.env(**base))

    def in_container(self, netns: str, *argv) -> str:
        return run(["nsenter", f"--net={netns}", "--", *argv]).stdout

    def leases(self, net: str) -> list[str]:
        d = self.ipam_dir / net
        if not d.exists():
            return []
        return sorted(p.name for p in d.iterdir() if p.name[0].isdigit() or ":" in p.name)

    def cache_names(self) -> list[str]:
        d = self.node.cni_cache / "results"
        return sorted(p.name for p in d.iterdir()) if d.exists() else []

    def cni_rules(self) -> list[str]:
        return [l for l in self.node.iptables_save().splitlines() if "CNI-" in l]

    def cleanup(self) -> None:
        for ns in self.netns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        for link in self.node.link_names() - {"lo", "uplink0"}:
            self.node.sh("ip", "link", "del", link, check=False)
        # The reference plugins' global chains (CNI-FORWARD, CNI-HOSTPORT-*).
        for save, restore in (("iptables-save", "iptables-restore"), ("ip6tables-save", "ip6tables-restore")):
            rules = self.node.sh(save).stdout
            if "CNI-" in rules:
                kept = "\n".join(l for l in rules.splitlines() if "CNI-" not in l) + "\n"
                self.node.sh(restore, input=kept)


@pytest.fixture
def ref(node):
    r = Ref(node)
    try:
        yield r
    finally:
        r.cleanup()


def test_bridge_hostlocal_tuning_bandwidth_firewall(ref):
    ref.write("10-br.conflist", {"cniVersion": "1.0.0", "name": "brnet", "plugins": [
        {"type": "bridge", "bridge": "cnitest0", "isGateway": True, "ipMasq": True,
         "ipam": ref.ipam("10.88.7.0/24")},
        {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.rp_filter": "1"}},
        {"type": "bandwidth", "capabilities": {"bandwidth": True}},
        {"type": "firewall", "backend": "iptables"}]})
    c1 = ref.container("c1")
    caps = {"bandwidth": {"ingressRate": 1000000, "ingressBurst": 100000,
                          "egressRate": 1000000, "egressBurst": 100000}}
    out = ref.cni("add", "brnet", c1, CAP_ARGS=json.dumps(caps))
    result = json.loads(out.stdout)
    assert result["cniVersion"] == "1.0.0"
    assert [ip["address"] for ip in result["ips"]] == ["10.88.7.2/24"]
    assert "10.88.7.2/24" in ref.in_container(c1, "ip", "-br", "addr", "show", "eth0")
    assert ref.in_container(c1, "cat", "/proc/sys/net/ipv4/conf/eth0/rp_filter").strip() == "1"
    assert any(n.startswith("bwp") for n in ref.node.link_names()), "bandwidth made no ifb"
    assert ref.leases("brnet") == ["10.88.7.2"]
    cid = cnitool_id(c1)
    assert ref.cache_names() == [f"brnet-{cid}-eth0"]
    cached = json.loads((ref.node.cni_cache / "results" / f"brnet-{cid}-eth0").read_text())
    assert cached["capabilityArgs"] == caps and cached["netns"] == c1
    ref.cni("check", "brnet", c1)
    ref.cni("del", "brnet", c1)                       # no CAP_ARGS: they come from the cache
    assert ref.cache_names() == [] and ref.leases("brnet") == []
    assert ref.node.link_names() - {"lo", "uplink0"} == {"cnitest0"}
    assert not [l for l in ref.cni_rules() if "CNI-FORWARD" not in l and "CNI-ADMIN" not in l]
    ref.cni("del", "brnet", c1)                       # repeated DEL is fine
    assert ref.cni("check", "brnet", c1, check=False).returncode != 0   # CHECK after DEL


def test_ptp_portmap_capability_args_resent_on_del(ref):
    ref.write("10-ptp.conflist", {"cniVersion": "1.0.0", "name": "ptpnet", "plugins": [
        {"type": "ptp", "ipMasq": True, "ipam": ref.ipam("10.88.8.0/24")},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}]})
    c1 = ref.container("c1")
    caps = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    ref.cni("add", "ptpnet", c1, CAP_ARGS=json.dumps(caps))
    dnat = [l for l in ref.cni_rules() if "CNI-DN-" in l and "--dport 8080" in l]
    assert dnat, "portmap got no portMappings"
    # portmap 1.1.1's CHECK looks for its IPv4 rules in ip6tables and fails:
    # the executor reports it as that plugin's error, after ptp's CHECK passed.
    chk = ref.cni("--log-level", "debug", "check", "ptpnet", c1, check=False)
    assert chk.returncode == 1
    err_lines = [l for l in chk.stderr.splitlines() if l.startswith("Error:")]
    assert len(err_lines) == 1 and "type='portmap' failed (check)" in err_lines[0]
    assert "cni: CHECK type=ptp" in chk.stderr and "exit 0" in chk.stderr
    ref.cni("del", "ptpnet", c1)                      # DEL without CAP_ARGS
    assert not [l for l in ref.cni_rules() if "CNI-DN-" in l], "portmap DEL did not get its args back"
    assert ref.leases("ptpnet") == [] and ref.cache_names() == []
    assert ref.node.link_names() == {"lo", "uplink0"}


def test_macvlan_over_a_node_parent_and_loopback(ref):
    ref.node.sh("ip", "link", "add", "mvparent0", "type", "ifb")
    ref.node.sh("ip", "link", "set", "mvparent0", "up")
    ref.write("10-mv.conf", {"cniVersion": "1.0.0", "name": "mvnet", "type": "macvlan",
                             "master": "mvparent0", "mode": "bridge", "ipam": ref.ipam("10.88.9.0/24")})
    ref.write("20-lo.conflist", {"cniVersion": "1.0.0", "name": "lonet", "plugins": [{"type": "loopback"}]})
    c1 = ref.container("c1")
    ref.in_container(c1, "ip", "link", "set", "lo", "down")
    ref.cni("add", "lonet", c1, CNI_IFNAME="lo")
    assert "UP" in ref.in_container(c1, "ip", "-br", "link", "show", "lo")
    ref.cni("check", "lonet", c1, "--ifname", "lo")
    out = json.loads(ref.cni("add", "mvnet", c1, "--ifname", "mv0").stdout)
    assert out["ips"][0]["address"] == "10.88.9.2/24"
    assert "macvlan" in ref.in_container(c1, "ip", "-d", "link", "show", "mv0")
    ref.cni("check", "mvnet", c1, "-i", "mv0")
    ref.cni("del", "mvnet", c1, "-i", "mv0")
    ref.cni("del", "lonet", c1, CNI_IFNAME="lo")
    assert "mv0" not in ref.in_container(c1, "ip", "-br", "link")
    assert ref.cache_names() == [] and ref.leases("mvnet") == []


def test_gc_deletes_stale_attachments_with_reference_plugins(ref):
    ref.write("10-br.conflist", {"cniVersion": "1.0.0", "name": "gcnet", "plugins": [
        {"type": "bridge", "bridge": "cnigc0", "ipam": ref.ipam("10.88.10.0/24")},
        {"type": "portmap", "capabilities": {"portMappings": True}}]})
    c1, c2 = ref.container("c1"), ref.container("c2")
    ref.cni("add", "gcnet", c1, "--container-id", "keep")
    caps = {"portMappings": [{"hostPort": 9090, "containerPort": 90, "protocol": "tcp"}]}
    ref.cni("add", "gcnet", c2, "--container-id", "stale", CAP_ARGS=json.dumps(caps))
    assert ref.leases("gcnet") == ["10.88.10.2", "10.88.10.3"]
    ref.cni("gc", "gcnet", "--valid", "keep:eth0")
    assert ref.cache_names() == ["gcnet-keep-eth0"]
    assert ref.leases("gcnet") == ["10.88.10.2"]
    assert "eth0" not in ref.in_container(c2, "ip", "-br", "link")
    assert "eth0" in ref.in_container(c1, "ip", "-br", "link")
    assert not [l for l in ref.cni_rules() if "--dport 9090" in l], "stale portmap rules kept"
    ref.cni("gc", "gcnet")                            # nothing valid: everything goes
    assert ref.cache_names() == [] and ref.leases("gcnet") == []


def test_cli_ls_validate_version_status_and_errors(ref):
    good = ref.write("10-good.conflist", {"cniVersion": "1.0.0", "name": "good", "plugins": [
        {"type": "bridge", "ipam": ref.ipam("10.88.11.0/24")},
        {"type": "portmap", "capabilities": {"portMappings": True}}]})
    ref.write("20-bad.conflist", {"cniVersion": "1.0.0", "name": "bad name", "plugins": [{"type": "x"}]})
    newer = ref.write("30-newer.conflist", {"cniVersion": "1.1.0", "name": "newer",
                                            "plugins": [{"type": "bridge"}]})
    ls = ref.cni("ls")
    lines = ls.stdout.splitlines()
    assert lines[1].split()[:4] == ["good", "*", "1.0.0", "bridge,portmap"]
    assert lines[2].split()[:3] == ["newer", "1.1.0", "bridge"]
    assert "20-bad.conflist" in ls.stderr and "network name" in ls.stderr
    rows = json.loads(ref.cni("ls", "--json").stdout)
    assert [r["name"] for r in rows] == ["good", "newer"]

    ok = ref.cni("validate", str(good))
    assert "valid" in ok.stdout and "portMappings" in ok.stdout
    bad = ref.cni("validate", str(ref.node.cni_conf / "20-bad.conflist"), check=False)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("Error: ") and "20-bad.conflist" in bad.stderr
    old = ref.cni("validate", str(newer), check=False)       # 1.1.1 plugins stop at 1.0.0
    assert old.returncode == 1 and "does not support config version '1.1.0'" in old.stderr

    ver = ref.cni("version", "good")
    assert "bridge: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0" in ver.stdout
    assert "assumed ready" in ref.cni("status", "good").stdout
    assert ref.cni("gc", "good").returncode == 0

    c1 = ref.container("c1")
    for args, env, text in [
        (("add", "good", c1), {"CAP_ARGS": "{nope"}, "invalid CAP_ARGS"),
        (("add", "good", c1), {"CNI_ARGS": "novalue"}, "invalid CNI_ARGS"),
        (("add", "nosuch", c1), {}, "no network 'nosuch'"),
        (("add", "good", c1, "--ifname", "a-very-long-interface"), {}, "interface name is too long"),
        (("add", "good", "/run/netns/does-not-exist"), {}, "does not exist"),
        (("gc", "good", "--valid", "novalid"), {}, "CONTAINER_ID:IFNAME"),
    ]:
        proc = ref.cni(*args, check=False, **env)
        assert proc.returncode != 0, args
        assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert text in proc.stderr, proc.stderr
    assert ref.cache_names() == [] and ref.node.link_names() == {"lo", "uplink0"}


def test_cni_bridge_gc_and_status(ref):
    """Our own plugin implements GC and STATUS (spec 1.1.0): the executor's GC
    hands it the valid attachments under both keys, and it releases an
    attachment whose cache entry is gone (only the plugin knows about it)."""
    ref.write("10-md.conflist", {"cniVersion": "1.1.0", "name": "mdnet", "plugins": [
        {"type": "cni-bridge", "bridge": "mdgc0", "isGateway": True, "ipMasq": True,
         "ipam": dict(ref.ipam("10.88.12.0/24"), type="cni-bridge")}]})
    path = f"{ref.node.cni_path}"
    assert "ready" in ref.cni("status", "mdnet", CNI_PATH=path).stdout
    c1, c2, c3 = ref.container("c1"), ref.container("c2"), ref.container("c3")
    ref.cni("add", "mdnet", c1, "--container-id", "keep", CNI_PATH=path)
    ref.cni("add", "mdnet", c2, "--container-id", "lost", CNI_PATH=path)
    ref.cni("add", "mdnet", c3, "--container-id", "stale", CNI_PATH=path)
    ref.cni("check", "mdnet", c1, "--container-id", "keep", CNI_PATH=path)
    assert ref.leases("mdnet") == ["10.88.12.2", "10.88.12.3", "10.88.12.4"]
    # "lost": the runtime forgot it (no cache entry); only plugin GC can find it
    (ref.node.cni_cache / "results" / "mdnet-lost-eth0").unlink()
    gc = ref.cni("--log-level", "debug", "gc", "mdnet", "--valid", "keep:eth0", CNI_PATH=path)
    assert "cni: DEL type=cni-bridge" in gc.stderr and "cni: GC type=cni-bridge" in gc.stderr
    assert ref.cache_names() == ["mdnet-keep-eth0"]
    assert ref.leases("mdnet") == ["10.88.12.2"]
    assert "eth0" not in ref.in_container(c2, "ip", "-br", "link")
    assert "eth0" not in ref.in_container(c3, "ip", "-br", "link")
    ref.cni("check", "mdnet", c1, "--container-id", "keep", CNI_PATH=path)
    ref.cni("del", "mdnet", c1, "--container-id", "keep", CNI_PATH=path)
    assert ref.leases("mdnet") == [] and ref.cache_names() == []
    assert not [l for l in ref.node.iptables_save().splitlines() if "mdnet" in l]
