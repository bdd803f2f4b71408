"""`network inspect`'s live Debug block and `network rm` leaving nothing of a
network in the kernel: objects made by the real cni-bridge plugin (ADD run
as a runtime does, with the network's own name, bridge and data dir)."""
import json

import pytest

from test_network_cmd import fails, inspect, snapshot


def _add(node, cni, net_name, subnet, backend):
    info = inspect(node, net_name)[0]
    # as attach.py's list for a user network, icc off: every kind of rule
    conf = cni.conf(name=net_name, bridge=info["Debug"]["Bridge"], backend=backend,
                    isolation=True, icc=False)
    conf["ipam"] = {"type": "cni-bridge", "dataDir": str(node.state_root / "ipam"),
                    "ranges": [[{"subnet": subnet}]]}
    c = cni.container()
    result = cni.call("ADD", conf, c).ok().json
    return info, c, result


def _endpoint(node, net_id, c, result, with_container: bool):
    ep_dir = node.state_root / "networks" / net_id / "endpoints"
    ep_dir.mkdir(parents=True, exist_ok=True)
    (ep_dir / f"{c.cid}.json").write_text(json.dumps({
        "Name": "fake", "IfName": "eth0", "SandboxKey": c.netns,
        "IPv4Address": result["ips"][0]["address"], "MacAddress": result["interfaces"][2]["mac"]}))
    if with_container:
        d = node.state_root / "containers" / c.cid
        d.mkdir(parents=True)
        (d / "container.json").write_text(json.dumps({"Id": c.cid, "Name": "/fake"}))


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_inspect_debug_then_rm_leaves_nothing(node, cni, backend):
    # FORWARD drops, so the iptables backend also keeps shared per-network rules
    for tool in ("iptables", "ip6tables"):
        node.sh(tool, "-P", "FORWARD", "DROP")
    net_id = node.md("network", "create", "--subnet", "10.70.0.0/24", "rmnet").stdout.strip()
    info, c, result = _add(node, cni, "rmnet", "10.70.0.0/24", backend)
    bridge = info["Debug"]["Bridge"]
    _endpoint(node, net_id, c, result, with_container=True)
    results = node.cni_cache / "results"
    results.mkdir(parents=True, exist_ok=True)
    for net_name in ("rmnet", "rmnet-other"):  # the cache entry a DEL would have removed
        (results / f"{net_name}-{c.cid}-eth0").write_text(json.dumps(
            {"kind": "cniCacheV1", "containerId": c.cid, "config": "", "ifName": "eth0",
             "networkName": net_name}))
    assert (node.state_root / "ipam" / "rmnet").is_dir()
    if backend == "iptables":
        assert "MINIDOCKER-ISOLATION" in node.iptables_save()
    else:
        assert "isolation" in node.nft_ruleset()

    net = inspect(node, "rmnet")[0]
    entry = net["Containers"][c.cid]
    assert entry["Name"] == "fake" and entry["IPv4Address"].startswith("10.70.0.")
    dbg = entry["Debug"]
    host_links = {l["ifname"]: l for l in node.links()}
    veth = host_links[dbg["HostVeth"]]
    assert veth["ifindex"] == dbg["HostVethIfindex"] and veth["link_index"] == dbg["ContainerIfindex"]
    inside = {l["ifname"]: l for l in json.loads(c.sh("ip", "-j", "link", "show").stdout)}
    assert inside["eth0"]["ifindex"] == dbg["ContainerIfindex"] and dbg["ContainerIfname"] == "eth0"
    assert dbg["SandboxKey"] == c.netns
    comment = f"md/rmnet/{c.cid}/eth0"
    if backend == "nftables":   # its own elements: masquerade, isolation
        assert dbg["Rules"] and all(comment in r for r in dbg["Rules"]), dbg["Rules"]
        assert any("masquerade" in r for r in dbg["Rules"])
    else:   # it publishes nothing: no rule of its own; its masquerade is the network's
        assert dbg["Rules"] == [], dbg["Rules"]
        assert any("MASQUERADE" in r for r in net["Debug"]["Rules"])
    assert net["Debug"]["Bridge"] == bridge and net["Debug"]["BridgeIfindex"] == host_links[bridge]["ifindex"]
    if backend == "iptables":
        assert net["Debug"]["Rules"] and all("md/rmnet/" in r for r in net["Debug"]["Rules"])

    # in use: refused, nothing changes
    before = snapshot(node)
    fails(node, "rm", "rmnet", words=["rmnet", "active endpoints (fake)"])
    assert node.md("network", "prune", "-f").stdout == ""  # in use: prune keeps it
    assert snapshot(node) == before

    # the container record is gone (no teardown ran): the endpoint is stale,
    # and rm removes everything the network still has
    (node.state_root / "containers" / c.cid / "container.json").unlink()
    assert node.md("network", "rm", "rmnet").stdout.split() == ["rmnet"]
    assert node.link_names() == {"lo", "uplink0"}
    assert "eth0" not in c.sh("ip", "-o", "link", "show").stdout
    assert "md/rmnet" not in node.iptables_save() and "MINIDOCKER" not in node.iptables_save()
    assert "minidocker" not in node.nft_ruleset()
    assert not (node.state_root / "ipam" / "rmnet").exists()
    assert not (node.state_root / "networks" / net_id).exists()
    assert sorted(p.name for p in results.iterdir()) == [f"rmnet-other-{c.cid}-eth0"]
    for tool in ("iptables", "ip6tables"):
        node.sh(tool, "-P", "FORWARD", "ACCEPT")


def test_rm_of_a_network_whose_objects_are_half_gone(node, cni):
    """Idempotent: the bridge deleted by hand, rules still there."""
    node.md("network", "create", "--subnet", "10.71.0.0/24", "half")
    info, c, _result = _add(node, cni, "half", "10.71.0.0/24", "iptables")
    node.sh("ip", "link", "del", info["Debug"]["Bridge"])
    assert "md/half/" in node.iptables_save()
    node.md("network", "rm", "half")
    assert "md/half" not in node.iptables_save() and node.link_names() == {"lo", "uplink0"}
