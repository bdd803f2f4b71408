"""The protocol package: versions, result conversion, environment, skel."""
import json

import pytest

from cni import skel, version
from cni.conf import NetworkConfigList
from cni.env import PluginArgs, parse_cni_args, validate_ifname
from cni.errors import CNIError
from cni.types import Result

SPEC_VERSIONS = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]

FULL = {
    "cniVersion": "1.1.0",
    "interfaces": [{"name": "br0", "mac": "aa:bb:cc:dd:ee:ff"},
                   {"name": "eth0", "mac": "aa:bb:cc:dd:ee:01", "mtu": 1400, "sandbox": "/run/netns/x"}],
    "ips": [{"interface": 1, "address": "10.0.0.2/24", "gateway": "10.0.0.1"},
            {"interface": 1, "address": "fd00::2/64", "gateway": "fd00::1"}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1", "mtu": 1300, "priority": 5}],
    "dns": {"nameservers": ["10.0.0.1"], "search": ["example"]},
}


@pytest.mark.parametrize("ver", SPEC_VERSIONS)
def test_result_round_trips_through_each_version(ver):
    res = Result.from_dict(FULL)
    out = res.to_dict(ver)
    assert out["cniVersion"] == ver
    back = Result.from_dict(out)
    assert [i.address for i in back.ips] == ["10.0.0.2/24", "fd00::2/64"]
    assert back.ips[0].interface == 1
    has_version = "version" in out["ips"][0]
    assert has_version == (ver in ("0.3.1", "0.4.0"))
    assert ("mtu" in out["interfaces"][1]) == (ver == "1.1.0")
    assert ("priority" in out["routes"][0]) == (ver == "1.1.0")


def test_legacy_format_both_ways():
    out = Result.from_dict(FULL).to_dict("0.2.0")
    assert out["ip4"] == {"ip": "10.0.0.2/24", "gateway": "10.0.0.1",
                          "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}]}
    assert out["ip6"]["ip"] == "fd00::2/64"
    back = Result.from_dict(out)
    assert [i.address for i in back.ips] == ["10.0.0.2/24", "fd00::2/64"]


def test_ipam_result_has_no_interfaces():
    out = Result.from_dict(FULL).to_dict("1.0.0", ipam=True)
    assert "interfaces" not in out and all("interface" not in ip for ip in out["ips"])


def test_result_without_version_takes_the_configs():
    res = Result.from_dict({"ips": [{"version": "4", "address": "10.1.0.2/16"}]}, "0.4.0")
    assert res.cni_version == "0.4.0"


@pytest.mark.parametrize("bad", [
    {"ips": [{"address": "nonsense"}]},
    {"ips": [{"address": "10.0.0.1/24", "interface": 3}]},
    {"routes": [{"gw": "10.0.0.1"}]},
    {"interfaces": "eth0"},
    [],
])
def test_bad_results_are_decode_failures(bad):
    with pytest.raises(CNIError) as exc:
        Result.from_dict(bad, "1.0.0")
    assert exc.value.code == 6


def test_cni_args():
    assert parse_cni_args("IgnoreUnknown=1;IP=10.0.0.5") == [("IgnoreUnknown", "1"), ("IP", "10.0.0.5")]
    with pytest.raises(CNIError) as exc:
        parse_cni_args("novalue")
    assert exc.value.code == 4


@pytest.mark.parametrize("name", ["", ".", "..", "a" * 16, "et h0", "eth/0", "eth:0"])
def test_bad_ifnames(name):
    with pytest.raises(CNIError) as exc:
        validate_ifname(name)
    assert exc.value.code == 4


def test_env_requirements_per_command():
    with pytest.raises(CNIError, match=r"\[CNI_NETNS\] missing"):
        PluginArgs.from_environ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0",
                                 "CNI_PATH": "/x"})
    PluginArgs.from_environ({"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0",
                             "CNI_PATH": "/x"})
    PluginArgs.from_environ({"CNI_COMMAND": "GC", "CNI_PATH": "/x"})
    with pytest.raises(CNIError, match="unknown CNI_COMMAND: FOO"):
        PluginArgs.from_environ({"CNI_COMMAND": "FOO"})


def test_conflist_version_selection_and_validation():
    lst = NetworkConfigList.from_bytes(json.dumps({
        "cniVersion": "0.4.0", "cniVersions": ["1.0.0", "9.9.9"], "name": "n",
        "disableCheck": "true", "plugins": [{"type": "bridge", "capabilities": {"portMappings": True}}],
        "extra": 1}).encode())
    assert lst.cni_version == "1.0.0" and lst.disable_check is True
    req = lst.plugin_request(0, runtime_config={})
    assert "capabilities" not in req and req["name"] == "n" and req["cniVersion"] == "1.0.0"
    for bad in ({"name": "n", "plugins": []}, {"name": "-x", "plugins": [{"type": "a"}]},
                {"name": "n", "plugins": [{"type": "../bin/sh"}]},
                {"name": "n", "disableGC": "maybe", "plugins": [{"type": "a"}]}):
        with pytest.raises(CNIError) as exc:
            NetworkConfigList.from_dict(bad)
        assert exc.value.code == 7


def test_single_conf_becomes_a_list():
    lst = NetworkConfigList.from_bytes(b'{"cniVersion":"1.0.0","name":"n","type":"bridge"}')
    assert lst.plugins == [{"cniVersion": "1.0.0", "name": "n", "type": "bridge"}]


ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/bin"}


@pytest.mark.parametrize("ver", SPEC_VERSIONS)
def test_skel_prints_result_in_the_configs_version(ver):
    conf = json.dumps({"cniVersion": ver, "name": "n", "type": "t"}).encode()
    code, out = skel.dispatch({"ADD": lambda a, c: Result.from_dict(FULL)}, ENV, conf)
    assert code == 0 and out["cniVersion"] == ver


@pytest.mark.parametrize("cmd,ver,ok", [("CHECK", "0.3.1", False), ("CHECK", "0.4.0", True),
                                        ("GC", "1.0.0", False), ("GC", "1.1.0", True),
                                        ("STATUS", "1.0.0", False), ("STATUS", "1.1.0", True)])
def test_skel_version_floors(cmd, ver, ok):
    conf = json.dumps({"cniVersion": ver, "name": "n", "type": "t"}).encode()
    code, out = skel.dispatch({cmd: lambda a, c: None}, dict(ENV, CNI_COMMAND=cmd), conf)
    assert (code == 0) == ok
    if not ok:
        assert out["code"] == 1


def test_skel_errors():
    handlers = {"ADD": lambda a, c: None}
    code, out = skel.dispatch(handlers, ENV, b"{not json")
    assert (code, out["code"]) == (1, 6)
    code, out = skel.dispatch(handlers, ENV, b'{"cniVersion":"7.0.0","name":"n"}')
    assert out["code"] == 1
    code, out = skel.dispatch(handlers, dict(ENV, CNI_COMMAND="VERSION"), b'{"cniVersion":"0.4.0"}')
    assert out == {"cniVersion": "0.4.0", "supportedVersions": list(version.SUPPORTED)}

    def boom(a, c):
        raise CNIError(11, "busy", "later")
    code, out = skel.dispatch({"ADD": boom}, ENV, b'{"cniVersion":"1.0.0","name":"n"}')
    assert out == {"cniVersion": "1.0.0", "code": 11, "msg": "busy", "details": "later"}
