"""Network records: create, get, ls, rm, endpoints, and their bad input."""
import ipaddress
import threading

import pytest

from minidocker.errors import Conflict, MinidockerError, NotFound
from minidocker.network import networks, store, subnets
from minidocker.network.store import CreateRequest


@pytest.fixture(autouse=True)
def private_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDOCKER_ROOT", str(tmp_path / "lib"))
    monkeypatch.setenv("MINIDOCKER_RUN", str(tmp_path / "run"))
    monkeypatch.setattr(subnets, "host_routes", lambda: [ipaddress.ip_network("203.0.113.0/24")])


def test_builtins_listed_and_default_created_on_first_use():
    names = [(n.name, n.driver) for n in networks.native()]
    assert names == [("bridge", "bridge"), ("host", "host"), ("none", "null")]
    assert networks.records() == []
    default = networks.get("bridge")
    assert default.bridge == "minidocker0" and default.ipam[0].subnet == "10.210.0.0/24"
    assert networks.get("bridge").id == default.id


def test_create_picks_free_subnets_and_resolves_prefixes():
    networks.ensure_default()
    a = store.create(CreateRequest("a"))
    b = store.create(CreateRequest("b", ipv6=True, internal=True))
    assert a.ipam[0].subnet == "10.210.1.0/24" and a.bridge.startswith("mdbr-")
    assert [c.subnet for c in b.ipam] == ["10.210.2.0/24", "fd6d:6400::/64"] and b.internal
    assert networks.get(b.id[:6]).name == "b"
    assert [n.name for n in networks.native()] == ["bridge", "host", "none", "a", "b"]


def test_explicit_subnet_gateway_range_and_options():
    net = store.create(CreateRequest("c", subnets=["10.9.0.0/16"], gateways=["10.9.0.254"],
                                     ip_ranges=["10.9.1.0/24"],
                                     options={"com.docker.network.bridge.name": "br-c",
                                              "com.docker.network.driver.mtu": "1400",
                                              "com.docker.network.bridge.enable_icc": "false"}))
    assert net.ipam[0].docker() == {"Subnet": "10.9.0.0/16", "Gateway": "10.9.0.254", "IPRange": "10.9.1.0/24"}
    assert (net.bridge, net.mtu, net.icc) == ("br-c", 1400, False)


@pytest.mark.parametrize("req,words", [
    (CreateRequest("-bad"), "invalid network name"),
    (CreateRequest("x", driver="macvlan"), "unsupported network driver 'macvlan'"),
    (CreateRequest("host"), "reserved"),
    (CreateRequest("x", subnets=["203.0.113.0/25"]), "overlaps 203.0.113.0/24"),
    (CreateRequest("x", subnets=["10.1.0.1/24"]), "invalid subnet"),
    (CreateRequest("x", subnets=["10.1.0.0/24"], gateways=["10.2.0.1"]), "not a usable address"),
    (CreateRequest("x", gateways=["10.2.0.1"]), "need a --subnet"),
    (CreateRequest("x", subnets=["fd00:1::/64"]), "needs --ipv6"),
    (CreateRequest("x", options={"foo": "1"}), "unknown network option 'foo'"),
    (CreateRequest("x", options={"com.docker.network.driver.mtu": "9"}), "invalid MTU"),
    (CreateRequest("x", options={"com.docker.network.bridge.name": "a" * 16}), "invalid bridge name"),
    (CreateRequest("x", options={"com.docker.network.bridge.enable_icc": "no"}), "true or false"),
])
def test_bad_create_requests_change_nothing(req, words):
    with pytest.raises(MinidockerError) as exc:
        store.create(req)
    assert words in str(exc.value)
    assert networks.records() == []


def test_duplicate_names_and_bridge_names():
    store.create(CreateRequest("d", options={"com.docker.network.bridge.name": "brd"}))
    with pytest.raises(Conflict, match="already exists"):
        store.create(CreateRequest("d"))
    with pytest.raises(Conflict, match="already used by network 'd'"):
        store.create(CreateRequest("e", options={"com.docker.network.bridge.name": "brd"}))


def test_concurrent_create_of_one_name_has_one_winner():
    results = []

    def attempt():
        try:
            results.append(store.create(CreateRequest("race")))
        except Conflict as exc:
            results.append(exc)
    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, networks.Network) for r in results) == 1
    assert len(networks.records()) == 1


def test_rm_refused_while_attached_then_allowed():
    net = store.create(CreateRequest("f"))
    store.add_endpoint(net, "c" * 64, {"Name": "web"})
    with pytest.raises(Conflict, match=r"active endpoints \(web\)"):
        store.remove("f")
    store.remove_endpoint(net, "c" * 64)
    store.remove_endpoint(net, "c" * 64)
    assert store.remove("f").id == net.id
    with pytest.raises(NotFound):
        networks.get("f")
    for builtin in ("bridge", "host", "none"):
        with pytest.raises(MinidockerError, match="pre-defined"):
            store.remove(builtin)


def test_builtins_found_by_id():
    host = networks.get("host")
    assert networks.get(host.id).name == "host" and networks.get(networks.get("none").id[:12]).name == "none"
    assert host.id[:12] != networks.get("none").id[:12]
