"""`network connect / disconnect` end to end: a running container gets eth1
on a second network, reaches a container there, shows up in both inspects;
disconnect takes eth1, its veth, rules and lease away. Bad input changes
nothing."""
import json

from test_network_cmd import fails, inspect, snapshot


def _addr(node, name, ifname):
    out = node.md("exec", name, "ip", "-o", "-4", "addr", "show", "dev", ifname, check=False)
    return out.stdout.split()[3] if out.returncode == 0 and out.stdout.strip() else ""


def _leases(node, net):
    d = node.state_root / "ipam" / net
    return sorted(p.name for p in d.iterdir() if p.name[0].isdigit()) if d.is_dir() else []


def test_connect_reach_disconnect(node):
    node.md("network", "create", "--subnet", "10.80.0.0/24", "back")
    node.md("run", "-d", "--name", "ca", "--network", "bridge", "busybox", "sleep", "300")
    node.md("run", "-d", "--name", "cb", "--network", "back", "busybox", "sleep", "300")
    node.md("run", "-d", "--name", "lonely", "--network", "none", "busybox", "sleep", "300")
    node.md("run", "--name", "stopped", "--network", "bridge", "busybox", "true")
    try:
        a_id = json.loads(node.md("inspect", "ca").stdout)[0]["Id"]
        b_ip = _addr(node, "cb", "eth0").split("/")[0]
        assert b_ip.startswith("10.80.0.")
        assert _addr(node, "ca", "eth1") == ""

        assert node.md("network", "connect", "back", "ca").stdout == ""
        a_ip = _addr(node, "ca", "eth1")
        assert a_ip.startswith("10.80.0.") and a_ip.endswith("/24")
        # on the network itself now: eth1, not routed through the host
        assert "dev eth1" in node.md("exec", "ca", "ip", "route", "get", b_ip).stdout
        node.md("exec", "ca", "ping", "-c1", "-W2", b_ip)

        net = inspect(node, "back")[0]
        entry = net["Containers"][a_id]
        assert entry["Name"] == "ca" and entry["IPv4Address"] == a_ip
        dbg = entry["Debug"]
        assert dbg["ContainerIfname"] == "eth1" and dbg["HostVeth"] in node.link_names()
        veth = next(l for l in node.links() if l["ifname"] == dbg["HostVeth"])
        assert (veth["ifindex"], veth["link_index"]) == (dbg["HostVethIfindex"], dbg["ContainerIfindex"])
        # publishing nothing, it has no iptables rule of its own: its network's rules hold for it
        assert dbg["Rules"] == [] and any("md/back/" in r for r in net["Debug"]["Rules"])
        settings = json.loads(node.md("inspect", "ca").stdout)[0]["NetworkSettings"]["Networks"]
        assert settings["back"]["IPAddress"] == a_ip.split("/")[0]
        assert len(_leases(node, "back")) == 2

        # bad input: each refused with one line, nothing changes
        before = snapshot(node)
        fails(node, "connect", "back", "ca", words=["already connected", "back"])
        fails(node, "connect", "nosuch", "ca", words=["'nosuch' not found"])
        fails(node, "connect", "back", "nosuch", words=["no such container", "'nosuch'"])
        fails(node, "connect", "back", "stopped", words=["stopped", "not running"])
        fails(node, "connect", "back", "lonely", words=["lonely", "--network none"])
        fails(node, "connect", "host", "ca", words=["'host'", "network mode"])
        fails(node, "disconnect", "back", "lonely", words=["lonely", "not connected", "back"])
        fails(node, "disconnect", "nosuch", "ca", words=["'nosuch' not found"])
        fails(node, "rm", "back", words=["back", "active endpoints"])
        assert snapshot(node) == before

        node.md("network", "disconnect", "back", "ca")
        assert _addr(node, "ca", "eth1") == ""
        assert dbg["HostVeth"] not in node.link_names()
        assert f"md/back/{a_id}/" not in node.iptables_save()
        assert len(_leases(node, "back")) == 1
        assert a_id not in inspect(node, "back")[0]["Containers"]
        settings = json.loads(node.md("inspect", "ca").stdout)[0]["NetworkSettings"]["Networks"]
        assert "back" not in settings and "bridge" in settings
        fails(node, "disconnect", "back", "ca", words=["not connected"])
        before = snapshot(node)
        fails(node, "connect", "--ip", "10.99.0.5", "back", "ca", words=["10.99.0.5", "10.80.0.0/24"])
        fails(node, "connect", "--ip", "10.80.0.1", "back", "ca", words=["10.80.0.1", "gateway"])
        fails(node, "connect", "--ip", b_ip, "back", "ca", words=[b_ip, "already in use"])
        fails(node, "connect", "--ip", "nonsense", "back", "ca", words=["'nonsense'", "IPv4"])
        assert snapshot(node) == before

        # connected again, then the container's exit takes eth1 along too
        node.md("network", "connect", "--ip", "10.80.0.50", "back", "ca")
        assert _addr(node, "ca", "eth1") == "10.80.0.50/24"
    finally:
        node.md("rm", "-f", "ca", "cb", "lonely", "stopped", check=False)
    assert _leases(node, "back") == []
    node.md("network", "rm", "back")
    assert node.link_names() == {"lo", "uplink0"}


def test_connected_network_comes_back_on_start(node):
    """As in Docker: `start` attaches every network the container was
    connected to, with the address it asked for; `stop` detaches them all."""
    node.md("network", "create", "--subnet", "10.81.0.0/24", "side")
    node.md("run", "-d", "--name", "multi", "--network", "bridge", "busybox", "sleep", "300")
    try:
        node.md("network", "connect", "--ip", "10.81.0.9", "--alias", "m2", "side", "multi")
        assert _addr(node, "multi", "eth1") == "10.81.0.9/24"
        node.md("stop", "-t", "1", "multi")
        assert _leases(node, "side") == []
        node.md("start", "multi")
        assert _addr(node, "multi", "eth1") == "10.81.0.9/24"
        assert _addr(node, "multi", "eth0").startswith("10.210.")
        networks = json.loads(node.md("inspect", "multi").stdout)[0]["NetworkSettings"]["Networks"]
        assert networks["side"]["IPAddress"] == "10.81.0.9" and "bridge" in networks
        assert networks["side"]["Aliases"] == ["m2"]
        node.md("network", "disconnect", "side", "multi")
        node.md("stop", "-t", "1", "multi")
        node.md("start", "multi")
        assert _addr(node, "multi", "eth1") == ""
    finally:
        node.md("rm", "-f", "multi", check=False)
    assert _leases(node, "side") == []
    node.md("network", "rm", "side")
    assert node.link_names() == {"lo", "uplink0"}


def test_connect_to_a_cni_file_network(node):
    """A network of the CNI directory: connect, inspect (Containers with the
    live Debug block), disconnect; rm of it stays refused."""
    conf = {"cniVersion": "1.0.0", "name": "filenet", "plugins": [{
        "type": "cni-bridge", "bridge": "cnibr9", "isGateway": True, "ipMasq": True,
        "ipam": {"type": "cni-bridge", "dataDir": str(node.root / "fileipam"),
                 "ranges": [[{"subnet": "10.90.0.0/24"}]]}}]}
    (node.cni_conf / "50-filenet.conflist").write_text(json.dumps(conf))
    node.md("run", "-d", "--name", "cx", "--network", "bridge", "busybox", "sleep", "300")
    node.md("run", "-d", "--name", "cy", "--network", "filenet", "busybox", "sleep", "300")
    try:
        x_id = json.loads(node.md("inspect", "cx").stdout)[0]["Id"]
        y_ip = _addr(node, "cy", "eth0").split("/")[0]
        node.md("network", "connect", "filenet", "cx")
        assert _addr(node, "cx", "eth1").startswith("10.90.0.")
        node.md("exec", "cx", "ping", "-c1", "-W2", y_ip)
        net = inspect(node, "filenet")[0]
        assert net["Driver"] == "cni" and sorted(c["Name"] for c in net["Containers"].values()) == ["cx", "cy"]
        dbg = net["Containers"][x_id]["Debug"]
        assert dbg["ContainerIfname"] == "eth1" and dbg["HostVethIfindex"] > 0
        assert dbg["Rules"] == [] and 'md/filenet/" -j MASQUERADE' in node.iptables_save()
        fails(node, "connect", "filenet", "cx", words=["already connected", "filenet"])
        fails(node, "rm", "filenet", words=["CNI configuration file"])
        node.md("network", "disconnect", "filenet", "cx")
        assert _addr(node, "cx", "eth1") == "" and dbg["HostVeth"] not in node.link_names()
        assert x_id not in inspect(node, "filenet")[0]["Containers"]
    finally:
        node.md("rm", "-f", "cx", "cy", check=False)
        node.sh("ip", "link", "del", "cnibr9", check=False)  # the admin's bridge
