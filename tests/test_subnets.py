"""Subnet choice and validation for bridge networks."""
import ipaddress

import pytest

from minidocker.network import subnets
from minidocker.network.subnets import SubnetError


def net(s):
    return ipaddress.ip_network(s)


def test_pool_skips_taken_and_avoids_docker_and_podman():
    first = subnets.choose([])
    assert first == net("10.210.0.0/24")
    assert subnets.choose([net("10.210.0.0/23")]) == net("10.210.2.0/24")
    for peer in ("172.17.0.0/16", "10.88.0.0/16", "192.168.0.0/16"):
        assert not first.overlaps(net(peer))
    assert subnets.choose([], 6).prefixlen == 64


def test_pool_exhaustion():
    with pytest.raises(SubnetError, match="exhausted"):
        subnets.choose([net("10.0.0.0/8")])


@pytest.mark.parametrize("text", ["10.0.0.1/24", "300.0.0.0/8", "abc", "10.0.0.0/31", ""])
def test_bad_subnets(text):
    with pytest.raises(SubnetError):
        subnets.parse_subnet(text)


def test_gateway_and_range():
    n = net("10.5.0.0/24")
    assert subnets.check_gateway(n, None) == "10.5.0.1"
    assert subnets.check_gateway(n, "10.5.0.254") == "10.5.0.254"
    for bad in ("10.6.0.1", "10.5.0.0", "10.5.0.255", "nope"):
        with pytest.raises(SubnetError):
            subnets.check_gateway(n, bad)
    assert subnets.check_ip_range(n, "10.5.0.128/25") == net("10.5.0.128/25")
    with pytest.raises(SubnetError):
        subnets.check_ip_range(n, "10.6.0.0/25")


def test_host_routes_in_a_node(node):
    """The node's uplink route is seen, so a subnet over it is refused."""
    import json
    out = node.run([str(__import__("harness").VENV_BIN / "python"), "-c",
                    "import json; from minidocker.network import subnets;"
                    "print(json.dumps([str(n) for n in subnets.host_routes()]))"]).stdout
    routes = json.loads(out)
    assert "203.0.113.0/24" in routes
    taken = [net(r) for r in routes]
    assert subnets.overlapping(net("203.0.113.0/25"), taken) is not None
