"""cni-bridge's `removeIdleBridge`: DEL of a bridge's last port removes the
bridge with it (one kernel batch); earlier DELs and an option left off keep
it; concurrent ADDs never lose their bridge to such a DEL."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from cni_helpers import SPEC_VERSIONS, with_prev


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
