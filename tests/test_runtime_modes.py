"""The network-mode seam: resolution, errors, and the plug-in points later
modes use."""
from __future__ import annotations

import pytest

from minidocker.network import modes


def test_builtin_modes():
    assert isinstance(modes.resolve("none"), modes.NoneMode)
    host = modes.resolve("host")
    assert isinstance(host, modes.HostMode) and not host.own_namespace
    assert modes.resolve("none").own_namespace


def test_unknown_mode_lists_the_accepted():
    with pytest.raises(modes.NetworkModeError) as err:
        modes.resolve("bogus")
    assert err.value.code == 125
    assert "'bogus'" in str(err.value) and "host" in str(err.value) and "none" in str(err.value)


def test_register_prefix_and_fallback(monkeypatch):
    monkeypatch.setattr(modes, "_PREFIX", {})
    monkeypatch.setattr(modes, "_FALLBACK", [])
    calls = []

    class Joined(modes.NetworkMode):
        name = "container"

        def validate(self):
            if self.spec == "container:":
                raise modes.NetworkModeError("container: needs an id", 125)

        def setup(self, container):
            calls.append(("setup", container["Id"]))
            return {"Networks": {}}

        def teardown(self, container):
            calls.append(("teardown", container["Id"]))

    modes.register("container:", Joined, prefix=True)
    mode = modes.resolve("container:abc")
    assert isinstance(mode, Joined) and mode.spec == "container:abc"
    assert "container:<id>" in modes.accepted()
    with pytest.raises(modes.NetworkModeError, match="needs an id"):
        modes.resolve("container:")
    modes.register_fallback(lambda spec: modes.NoneMode(spec) if spec == "mynet" else None)
    assert isinstance(modes.resolve("mynet"), modes.NoneMode)
    mode.setup({"Id": "x"})
    mode.teardown({"Id": "x"})
    mode.teardown({"Id": "x"})
    assert calls == [("setup", "x"), ("teardown", "x"), ("teardown", "x")]
