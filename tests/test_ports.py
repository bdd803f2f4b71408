"""-p parsing: every Docker form, and the bad ones refused with a clear message."""
import pytest

from minidocker.network.ports import (PortMapping, PortSpecError, check_conflicts,
                                      parse_exposed, parse_publish)


@pytest.mark.parametrize("spec,want", [
    ("80", [PortMapping(80, 0, "tcp", "")]),
    ("8080:80", [PortMapping(80, 8080, "tcp", "")]),
    ("8080:80/udp", [PortMapping(80, 8080, "udp", "")]),
    ("127.0.0.1:8080:80", [PortMapping(80, 8080, "tcp", "127.0.0.1")]),
    ("0.0.0.0:8080:80", [PortMapping(80, 8080, "tcp", "")]),
    ("127.0.0.1::80", [PortMapping(80, 0, "tcp", "127.0.0.1")]),
    ("[::1]:8080:80/tcp", [PortMapping(80, 8080, "tcp", "::1")]),
    ("[2001:db8::1]::53/UDP", [PortMapping(53, 0, "udp", "2001:db8::1")]),
    ("8000-8002:80-82", [PortMapping(80, 8000), PortMapping(81, 8001), PortMapping(82, 8002)]),
    ("80-81", [PortMapping(80), PortMapping(81)]),
    ("9000-9005:80", [PortMapping(80, 0, "tcp", "", (9000, 9005))]),
])
def test_docker_forms(spec, want):
    assert parse_publish(spec) == want


@pytest.mark.parametrize("spec,words", [
    ("", "invalid -p"), ("abc", "invalid port 'abc'"), ("0", "out of range"),
    ("70000:80", "out of range"), ("65536:80", "out of range"), ("8080:80/sctp", "protocol 'sctp'"),
    ("1.2.3:80:80", "invalid host IP"), ("[::1:80:80", "IPv6"), ("a:b:c:d", "invalid"),
    ("8000-8001:80-85", "differ in length"), ("90-80:80", "end below start"),
    ("8080 :80", "invalid -p"), ("-1:80", "invalid port"), ("8080:", "invalid port ''"),
])
def test_bad_forms(spec, words):
    with pytest.raises(PortSpecError) as exc:
        parse_publish(spec)
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_conflicts_within_one_run():
    check_conflicts(parse_publish("8080:80") + parse_publish("8080:80/udp") + parse_publish("8081:81"))
    check_conflicts(parse_publish("127.0.0.1:8080:80") + parse_publish("127.0.0.2:8080:81"))
    for a, b in (("8080:80", "8080:81"), ("8080:80", "127.0.0.1:8080:81")):
        with pytest.raises(PortSpecError, match="published twice"):
            check_conflicts(parse_publish(a) + parse_publish(b))


def test_exposed_ports_and_cni_entry():
    assert parse_exposed("53/udp") == PortMapping(53, 0, "udp")
    assert PortMapping(80, 8080, "tcp", "127.0.0.1").to_cni() == {
        "hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}
    with pytest.raises(PortSpecError):
        parse_exposed("80/icmp")
