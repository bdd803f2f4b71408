"""cni-bridge's `removeIdleBridge`: DEL of a bridge's last port removes the
bridge with it (one kernel batch); earlier DELs and an option left off keep
it; concurrent ADDs never lose their bridge to such a DEL."""
from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from cni_helpers import SPEC_VERSIONS, with_prev
from harness import REPO


@pytest.mark.parametrize("version", SPEC_VERSIONS)
def test_last_del_removes_the_bridge(cni, version):
    node = cni.node
    conf = cni.conf(version=version, ipam_type="cni-bridge", removeIdleBridge=True)
    c1, c2 = cni.container(), cni.container()
    r1 = cni.call("ADD", conf, c1).ok().json
    r2 = cni.call("ADD", conf, c2).ok().json
    cni.call("DEL", with_prev(conf, r1), c1).ok()
    assert "mdtbr0" in node.link_names()                     # c2 still on it
    cni.call("DEL", with_prev(conf, r2), c2).ok()
    assert node.link_names() == {"lo", "uplink0"}           # veth and bridge gone together
    cni.call("DEL", with_prev(conf, r2), c2).ok()            # and DEL stays idempotent


def test_without_the_option_the_bridge_stays(cni):
    conf = cni.conf(ipam_type="cni-bridge")
    c = cni.container()
    r = cni.call("ADD", conf, c).ok().json
    cni.call("DEL", with_prev(conf, r), c).ok()
    assert "mdtbr0" in cni.node.link_names()


def test_a_stranger_on_the_bridge_keeps_it(cni):
    node = cni.node
    conf = cni.conf(ipam_type="cni-bridge", removeIdleBridge=True)
    c = cni.container()
    r = cni.call("ADD", conf, c).ok().json
    node.sh("ip", "link", "add", "mdtx0", "type", "veth", "peer", "name", "mdtx1")
    node.sh("ip", "link", "set", "mdtx0", "master", "mdtbr0")
    cni.call("DEL", with_prev(conf, r), c).ok()
    assert "mdtbr0" in node.link_names()
    node.sh("ip", "link", "del", "mdtx0")


def test_concurrent_add_and_last_del_never_lose_the_bridge(cni):
    """Rounds of ADD/DEL of several containers at once: an ADD racing the
    DEL that removes the idle bridge always ends on a bridge."""
    conf = cni.conf(ipam_type="cni-bridge", removeIdleBridge=True, ipmasq=False)
    containers = [cni.container() for _ in range(6)]

    def cycle(c):
        for _ in range(3):
            r = cni.call("ADD", conf, c)
            if r.rc != 0:
                return f"ADD: {r.stdout}"
            check = c.sh("ip", "-o", "link", "show", "eth0", check=False)
            if check.returncode != 0:
                return "no eth0"
            d = cni.call("DEL", with_prev(conf, r.json), c)
            if d.rc != 0:
                return f"DEL: {d.stdout}"
        return ""

    with ThreadPoolExecutor(len(containers)) as pool:
        errors = [e for e in pool.map(cycle, containers) if e]
    assert errors == []
    assert cni.node.link_names() == {"lo", "uplink0"}
    assert cni.leases() == {}


def test_an_add_between_bridge_and_veth_holds_off_the_last_del(cni):
    """ADD pauses after making sure of the bridge (debug hook); the DEL of
    the bridge's last port meanwhile waits for it and keeps the bridge."""
    import threading
    import time
    conf = cni.conf(ipam_type="cni-bridge", removeIdleBridge=True, ipmasq=False)
    c1, c2 = cni.container(), cni.container()
    r1 = cni.call("ADD", conf, c1).ok().json
    out = {}
    t = threading.Thread(target=lambda: out.update(r=cni.call("ADD", conf, c2, env={"CNI_BRIDGE_DEBUG_PAUSE": "0.6"})))
    t.start()
    time.sleep(0.35)
    cni.call("DEL", with_prev(conf, r1), c1).ok()
    t.join(timeout=30)
    r2 = out["r"].ok().json
    assert "mdtbr0" in cni.node.link_names()
    c2.sh("ip", "-o", "link", "show", "eth0")
    cni.call("DEL", with_prev(conf, r2), c2).ok()
    assert cni.node.link_names() == {"lo", "uplink0"}


def test_has_port_reads_only_the_bridge_s_ports(node, tmp_path):
    """The idle check asks the kernel for one bridge's ports and stops at the
    first one that is not the leaving veth: right past the first batch of a
    dump (150 ports), with a stranger on another bridge, and with none."""
    lines = ["link add mdtbusy type bridge", "link add mdtidle type bridge", "link add mdtnone type bridge"]
    for i in range(150):
        lines += [f"link add mdtp{i} type veth peer name mdtq{i}", f"link set mdtp{i} master mdtbusy"]
    lines += ["link add mdtlast type veth peer name mdtlastq", "link set mdtlast master mdtidle",
              "link add mdtstr type veth peer name mdtstrq", "link set mdtstr master mdtnone",
              "link set mdtstr nomaster"]
    (tmp_path / "add").write_text("\n".join(lines) + "\n")
    gone = [f"link del {l.split()[2]}" for l in lines if l.startswith("link add")]
    (tmp_path / "del").write_text("\n".join(gone) + "\n")
    node.sh("ip", "-b", str(tmp_path / "add"))
    try:
        _probe(node)
    finally:
        node.sh("ip", "-b", str(tmp_path / "del"))


def _probe(node) -> None:
    probe = ("import json, sys\nfrom cni_bridge.netlink import Netlink, has_port\n"
             "with Netlink() as nl:\n"
             "    i = lambda n: nl.link(n)['index']\n"
             "    print(json.dumps([has_port(i('mdtbusy')), has_port(i('mdtbusy'), i('mdtp149')),"
             " has_port(i('mdtidle'), i('mdtlast')), has_port(i('mdtidle')), has_port(i('mdtnone'))]))\n")
    out = node.run([sys.executable, "-c", probe], cwd=str(REPO)).stdout
    assert json.loads(out) == [True, True, False, True, False]
