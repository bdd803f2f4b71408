"""The network-mode seam: how a container's network namespace gets its links.

A mode is chosen by the string of `--network`. `resolve()` returns its
NetworkMode; the engine calls, in order: validate() at create time (bad input
fails before any state is written), setup(container) after the namespace is
pinned and before the process starts, teardown(container) from the shim once
the process is gone (and again from `rm -f`: it must be idempotent).
Later modes (bridge networks via CNI, `container:<id>`) register here with
register() and need nothing else from the engine.
"""
from __future__ import annotations

from collections.abc import Callable

from minidocker.errors import MinidockerError


class NetworkModeError(MinidockerError):
    pass


class NetworkMode:
    """One network mode; `container` is the container's record (a dict with
    Id, Name, Config, HostConfig and NetworkSettings.SandboxKey)."""

    name = ""
    #: False: the container shares the namespace of the host (no pinning).
    own_namespace = True

    def __init__(self, spec: str):
        self.spec = spec

    def validate(self) -> None:
        """Reject impossible settings before anything exists."""

    def check(self, container: dict) -> None:
        """Create time, before the record is written: the container's own
        network settings (host ports free, addresses usable)."""

    def setup(self, container: dict) -> dict:
        """Attach networking; returns what goes into NetworkSettings."""
        return {}

    def teardown(self, container: dict) -> None:
        """Undo setup; safe to call twice and after a failed setup."""


class NoneMode(NetworkMode):
    """Only loopback (brought up when the namespace is pinned)."""

    name = "none"

    def setup(self, container: dict) -> dict:
        return {"Networks": {"none": {"NetworkID": "none", "IPAddress": "", "Gateway": "",
                                      "MacAddress": ""}}}


class HostMode(NetworkMode):
    """The host's own namespace: nothing to attach, nothing to undo."""

    name = "host"
    own_namespace = False

    def setup(self, container: dict) -> dict:
        return {"Networks": {"host": {"NetworkID": "host", "IPAddress": "", "Gateway": "",
                                      "MacAddress": ""}}}


_EXACT: dict[str, Callable[[str], NetworkMode]] = {"none": NoneMode, "host": HostMode}
_PREFIX: dict[str, Callable[[str], NetworkMode]] = {}
#: Consulted last: a name that is no built-in mode (later: user networks).
_FALLBACK: list[Callable[[str], NetworkMode | None]] = []


def register(name: str, factory: Callable[[str], NetworkMode], prefix: bool = False) -> None:
    """Plug a mode in: exact name (`bridge`) or prefix (`container:`)."""
    (_PREFIX if prefix else _EXACT)[name] = factory


def register_fallback(finder: Callable[[str], NetworkMode | None]) -> None:
    _FALLBACK.append(finder)


def _load_plugins() -> None:
    """The attaching modes (bridge, user and CNI networks, container:<id>)
    register when first needed; none and host never pay for importing them."""
    if "bridge" not in _EXACT or "container:" not in _PREFIX:
        from minidocker.network import bridge
        bridge.register()


def accepted() -> list[str]:
    _load_plugins()
    return sorted(_EXACT) + [p + "<id>" for p in sorted(_PREFIX)]


def resolve(spec: str) -> NetworkMode:
    """The NetworkMode for a `--network` value, validated."""
    mode = None
    if spec not in _EXACT:
        _load_plugins()
    if spec in _EXACT:
        mode = _EXACT[spec](spec)
    else:
        for prefix, factory in _PREFIX.items():
            if spec.startswith(prefix):
                mode = factory(spec)
                break
        else:
            for finder in _FALLBACK:
                mode = finder(spec)
                if mode:
                    break
    if mode is None:
        raise NetworkModeError(f"unknown network mode {spec!r}: accepted are "
                               f"{', '.join(accepted())}", 125)
    mode.validate()
    return mode
