"""The network modes: a closed table (none, host, container:<id>, a
network), their properties instead of type tests, and the errors."""
from __future__ import annotations

import pytest

from minidocker.network import modes


def test_builtin_modes():
    assert isinstance(modes.resolve("none"), modes.NoneMode)
    host = modes.resolve("host")
    assert isinstance(host, modes.HostMode) and not host.own_namespace
    assert modes.resolve("none").own_namespace


def test_unknown_mode_lists_the_accepted(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDOCKER_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("MINIDOCKER_CNI_CONF", str(tmp_path / "conf"))
    with pytest.raises(modes.NetworkModeError) as err:
        modes.resolve("bogus")
    assert err.value.code == 125
    assert "'bogus'" in str(err.value) and "host" in str(err.value) and "none" in str(err.value)
    assert not (tmp_path / "root").exists()  # nothing written for bad input


def test_the_table_is_closed():
    """Every spec maps to one of four modes, without a registry."""
    assert not hasattr(modes, "register")
    kinds = {spec: type(modes.parse(spec)) for spec in
             ("none", "host", "container:web", "bridge", "mynet", "0123abcd")}
    assert kinds == {"none": modes.NoneMode, "host": modes.HostMode,
                     "container:web": modes.ContainerMode, "bridge": modes.NetworkMode,
                     "mynet": modes.NetworkMode, "0123abcd": modes.NetworkMode}


def test_modes_say_what_they_accept():
    record = {"Id": "c" * 64}
    table = {spec: modes.parse(spec) for spec in ("none", "host", "container:web", "bridge")}
    assert {s: m.accepts_ports for s, m in table.items()} == \
        {"none": False, "host": False, "container:web": False, "bridge": True}
    assert {s: m.ignores_ports for s, m in table.items()} == \
        {"none": True, "host": True, "container:web": False, "bridge": False}
    assert {s: m.pins for s, m in table.items()} == \
        {"none": True, "host": False, "container:web": False, "bridge": True}
    assert table["host"].sandbox(record) is None
    assert table["none"].sandbox(record).endswith("c" * 64)
    # none and host attach nothing and have nothing to undo
    assert table["none"].attach(record)["Networks"]["none"]["NetworkID"] == "none"
    table["host"].detach(record)
    table["host"].detach(record)


def test_container_mode_needs_a_reference():
    assert modes.parse("container:web").ref == "web"
    with pytest.raises(modes.NetworkModeError, match="needs a container name or id"):
        modes.resolve("container:")
