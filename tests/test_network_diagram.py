"""`network diagram` on a known topology, per firewall backend: the JSON
model matches the kernel (each veth pair's ifindexes, each address, each
published port to the rule that implements it), the SVG holds a node per
container and an edge per port, the text fits 100 columns, a container
killed with SIGKILL and not yet cleaned is stale, and so are a veth and
rules no endpoint explains; an unknown network is a one-line error."""
from __future__ import annotations

import json
import os
import signal
import xml.etree.ElementTree as ET

import pytest

from bridge_helpers import inspect
from harness import run
from wiring_helpers import built, diagram

BACKENDS = ["iptables", "nftables"]


def _links(node, netns=None) -> dict:
    argv = ["ip", "-j", "addr", "show"]
    out = run(node.cmd(argv, ns=netns)).stdout if netns else node.sh(*argv).stdout
    return {l["ifname"]: l for l in json.loads(out)}


def _addrs(link: dict) -> set[str]:
    return {f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])}


def _check_endpoint(node, e: dict, host: dict) -> None:
    veth, inside = e["host_veth"], _links(node, e["namespace"])
    kernel_veth = host[veth["name"]]
    assert kernel_veth["ifindex"] == veth["ifindex"] and kernel_veth["link_index"] == veth["peer_ifindex"]
    eth0 = inside["eth0"]
    assert e["interface"]["name"] == "eth0" and eth0["ifindex"] == e["interface"]["ifindex"] == veth["peer_ifindex"]
    assert eth0["link_index"] == veth["ifindex"] == e["interface"]["peer_ifindex"]
    assert eth0["address"] == e["interface"]["mac"]
    assert _addrs(eth0) == set(e["interface"]["addresses"]) and e["ipv4"] in {a.split("/")[0] for a in _addrs(eth0)}
    route = json.loads(run(node.cmd(["ip", "-j", "route", "show", "default"], ns=e["namespace"])).stdout)
    assert e["interface"]["default_route"]["v4"] == route[0]["gateway"]
    assert not e["stale"], e["stale_why"]


def _check_port_rule(node, backend: str, port: dict, cid: str, net: str) -> None:
    """The port's rules are the kernel's DNAT rules for it, found by handle
    (iptables), or its element in nftables' DNAT map, found by its key."""
    assert port["rules"], port
    for r in port["rules"]:
        assert r["backend"] == backend and r["comment"] == f"md/{net}/{cid}/eth0"
        if backend == "iptables":
            assert (r["table"], r["chain"]) == ("nat", "MINIDOCKER")
            listing = node.sh("nft", "-a", "list", "chain", "ip", "nat", "MINIDOCKER").stdout
            assert r["text"].split(" ", 3)[3] in node.iptables_save()
            line = next(l for l in listing.splitlines() if l.endswith(f"# handle {r['handle']}"))
            assert f"dport {port['host_port']}" in line
            assert f"dnat to {port['container_ip']}:{port['container_port']}" in line
        else:
            assert r["table"] == "minidocker" and r["set"] == "ports_any" and r["chain"] == "prerouting"
            assert r["key"] == f"{port['proto']} . {port['host_port']}"
            got = node.sh("nft", "get", "element", "ip", "minidocker", "ports_any", f"{{ {r['key']} }}").stdout
            assert f"{port['container_ip']} . {port['container_port']}" in got and r["comment"] in got


@pytest.mark.parametrize("backend", BACKENDS)
def test_diagram_matches_the_kernel(tnode, backend, tmp_path):
    node = tnode
    with built(node, backend) as ids:
        model = diagram(node)
        assert model["version"] == 1 and model["services"] == [] and model["cluster"] is None
        assert [u["name"] for u in model["host"]["uplinks"]] == ["uplink0"]
        nets = {n["name"]: n for n in model["networks"]}
        host = _links(node)
        for name in ("front", "back"):
            n = nets[name]
            assert host[n["bridge"]["name"]]["ifindex"] == n["bridge"]["ifindex"]
            assert _addrs(host[n["bridge"]["name"]]) >= set(n["bridge"]["addresses"]) and n["bridge"]["addresses"]
            assert n["isolation"] and n["masquerade"] and n["icc"] and not n["internal"]
        eps = {e["container"]["name"]: (n["name"], e) for n in model["networks"] for e in n["endpoints"]}
        assert sorted(eps) == ["cli", "db", "web"] and eps["web"][0] == eps["cli"][0] == "front"
        for name, (net, e) in eps.items():
            assert e["container"]["id"] == ids[name] and e["container"]["running"]
            _check_endpoint(node, e, host)
            for port in e["ports"]:
                _check_port_rule(node, backend, port, ids[name], net)
        ports = {(p["host_port"], p["proto"]): name for name, (_n, e) in eps.items() for p in e["ports"]}
        assert ports == {(8080, "tcp"): "web", (8085, "tcp"): "db", (8053, "udp"): "db",
                         (8090, "tcp"): "cli"}
        assert [s["name"] for s in eps["web"][1]["sharers"]] == ["side"]
        assert model["stale"] == {"veths": [], "rules": []}
        # one network only
        assert [n["name"] for n in diagram(node, "back")["networks"]] == ["back"]

        # svg: a node per container (the sharer too), an edge per published port
        svg = ET.fromstring(node.md("network", "diagram", "--format", "svg").stdout)
        groups = {g.get("id"): g.get("class") for g in svg.iter("{http://www.w3.org/2000/svg}g") if g.get("id")}
        for name, cid in ids.items():
            assert groups.get(f"container-{cid[:12]}") == "node", (name, groups)
        port_edges = sorted(k for k, cls in groups.items() if k.startswith("port-") and cls == "edge")
        assert port_edges == sorted([f"port-{ids['web'][:12]}-8080-tcp", f"port-{ids['db'][:12]}-8085-tcp",
                                     f"port-{ids['db'][:12]}-8053-udp", f"port-{ids['cli'][:12]}-8090-tcp"])
        png = tmp_path / "w.png"
        node.md("network", "diagram", "--format", "png", "-o", png)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert node.md("network", "diagram", "--format", "dot").stdout.startswith("digraph wiring {")
        text = node.md("network", "diagram", "--format", "text").stdout
        assert all(len(line) <= 100 for line in text.splitlines())
        for word in ("web (", "db (", "cli (", "shared by side", "8080/tcp", "uplink0"):
            assert word in text, (word, text)


def test_stale_and_bad_input(tnode):
    node = tnode
    with built(node, "iptables") as ids:
        # a container killed with SIGKILL (its shim first, so nothing cleans up)
        rec = inspect(node, "cli")
        shim = json.loads((node.state_root / "containers" / ids["cli"] / "container.json").read_text())["ShimPid"]
        os.kill(shim, signal.SIGKILL)
        os.kill(rec["State"]["Pid"], signal.SIGKILL)
        e = next(e for n in diagram(node)["networks"] for e in n["endpoints"] if e["container"]["name"] == "cli")
        assert e["stale"] and "container not running" in e["stale_why"]
        assert e["host_veth"]["name"] and e["rules"]           # the kernel still has them: shown
        assert "STALE: container not running" in node.md("network", "diagram", "--format", "text").stdout
        # db's endpoint record gone: its veth and rules are what nothing explains
        ep_file = next((node.state_root / "networks").glob(f"*/endpoints/{ids['db']}.json"))
        saved = ep_file.read_bytes()
        ep_file.unlink()
        stale = diagram(node)["stale"]
        assert [v["container_id"] for v in stale["veths"]] == [ids["db"]]
        assert stale["rules"] and {r["comment"] for r in stale["rules"]} == {f"md/back/{ids['db']}/eth0"}
        ep_file.write_bytes(saved)
        # bad input: one line, non-zero, nothing changed
        for args, words in ((["nope"], ["'nope'", "not found"]),
                            (["--format", "gif"], ["gif", "text", "json"])):
            proc = node.md("network", "diagram", *args, check=False)
            assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
            assert all(w in proc.stderr for w in words), proc.stderr


def test_renderers_draw_cluster_services_and_stale_from_the_model():
    """The renderers read only the model: the cluster's node and peers, the
    services hook's entries and stale objects are drawn (no kernel here)."""
    from minidocker.network import diagram
    rule = {"backend": "nftables", "family": 4, "table": "minidocker", "chain": "prerouting",
            "handle": 7, "comment": "md/pods/" + "a" * 64 + "/eth0", "text": "nft ..."}
    element = {**rule, "handle": 0, "set": "ports_any", "key": "tcp . 8080", "data": "10.244.1.2 . 80"}
    model = {"version": 1, "host": {"uplinks": [], "default_route": {"v4": "", "v6": ""}}, "networks": [],
             "stale": {"veths": [{"name": "veth1234abcd", "ifindex": 9, "peer_ifindex": 2, "network": "pods",
                                  "container_id": "a" * 64, "ifname": "eth0"}], "rules": [rule, element]},
             "cluster": {"Node": "n1", "Subnet": "10.244.1.0/24", "Backend": "vxlan",
                         "Peers": [{"Name": "n2", "Subnet": "10.244.2.0/24", "PublicIP": "192.0.2.2"}],
                         "Routes": ["10.244.2.0/24 via 10.244.2.0 dev mdvx.1"], "FDB": []},
             "services": [{"name": "api", "vip": "10.96.0.10", "port": 80, "proto": "tcp",
                           "backends": ["10.244.1.2:8080"]}]}
    text = diagram.text(model)
    for word in ("cluster node n1  pod subnet 10.244.1.0/24", "peer n2 10.244.2.0/24 via 192.0.2.2",
                 "veth 9: veth1234abcd@if2", "nft ip minidocker prerouting handle 7",
                 "nft ip minidocker set ports_any element { tcp . 8080 }",
                 "service api 10.96.0.10:80/tcp", "backend 10.244.1.2:8080"):
        assert word in text, (word, text)
    dot = diagram.dot(model)
    assert "peer n2" in dot and "service api" in dot and "STALE veth veth1234abcd" in dot
    assert diagram.render(model, "svg").lstrip().startswith(b"<?xml")
