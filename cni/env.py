"""CNI_* environment: parsing and validation for both sides of the protocol."""
from __future__ import annotations

import sys

from cni.errors import (CNIError, INVALID_ENVIRONMENT, INVALID_NETWORK_CONFIG,
                        UNKNOWN_CONTAINER)

COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")

# Which variables each command needs (R3). DEL may lack CNI_NETNS.
REQUIRED = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
    "VERSION": (),
}

IFNAME_MAX = 15
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_NAME_CHARS = _ALNUM + "_.-"


def _is_name(value: str) -> bool:
    """[A-Za-z0-9][A-Za-z0-9_.-]* (libcni's name rule), without `re`: the
    plugin's start-up would pay ~5 ms for it."""
    return bool(value) and value[0] in _ALNUM and not value.strip(_NAME_CHARS)


def validate_container_id(cid: str) -> None:
    if not cid:
        raise CNIError(UNKNOWN_CONTAINER, "missing containerID")
    if not _is_name(cid):
        raise CNIError(INVALID_ENVIRONMENT, "invalid characters in containerID", cid)


def validate_network_name(name: str) -> None:
    if not name:
        raise CNIError(INVALID_NETWORK_CONFIG, "missing network name")
    if not isinstance(name, str) or not _is_name(name):
        raise CNIError(INVALID_NETWORK_CONFIG, "invalid characters found in network name", str(name))


def validate_ifname(name: str) -> None:
    if not name:
        raise CNIError(INVALID_ENVIRONMENT, "interface name is empty")
    if len(name) > IFNAME_MAX:
        raise CNIError(INVALID_ENVIRONMENT, "interface name is too long",
                       f"interface name should be less than {IFNAME_MAX + 1} characters")
    if name in (".", ".."):
        raise CNIError(INVALID_ENVIRONMENT, "interface name is . or ..")
    if any(c in name for c in "/:") or any(c.isspace() for c in name):
        raise CNIError(INVALID_ENVIRONMENT, "interface name contains / or : or whitespace characters",
                       repr(name))


def parse_cni_args(value: str) -> list[tuple[str, str]]:
    """'K=V;K2=V2' -> [(K, V), (K2, V2)]; a pair without '=' is an error."""
    pairs = []
    if not value:
        return pairs
    for item in value.split(";"):
        if not item:
            continue
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise CNIError(INVALID_ENVIRONMENT, f"ARGS: invalid pair {item!r}")
        pairs.append((key, val))
    return pairs


def format_cni_args(pairs) -> str:
    return ";".join(f"{k}={v}" for k, v in pairs)


class PluginArgs:
    """What a plugin is called with (Go skel's CmdArgs). A plain class: the
    plugin imports this on every call and `dataclasses` costs ~5 ms."""

    __slots__ = ("command", "container_id", "netns", "ifname", "args", "path", "stdin")

    def __init__(self, command: str, container_id: str = "", netns: str = "", ifname: str = "",
                 args: list[tuple[str, str]] | None = None, path: list[str] | None = None,
                 stdin: bytes = b""):
        self.command = command
        self.container_id = container_id
        self.netns = netns
        self.ifname = ifname
        self.args = args if args is not None else []
        self.path = path if path is not None else []
        self.stdin = stdin

    def __repr__(self) -> str:
        return (f"PluginArgs({self.command!r}, container_id={self.container_id!r}, "
                f"netns={self.netns!r}, ifname={self.ifname!r}, args={self.args!r})")

    def __eq__(self, other) -> bool:
        return isinstance(other, PluginArgs) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def arg(self, key: str, default: str | None = None) -> str | None:
        for k, v in self.args:
            if k == key:
                return v
        return default

    @classmethod
    def from_environ(cls, environ, stdin: bytes = b"") -> "PluginArgs":
        """Validate the environment for its command as skel does (P1)."""
        command = environ.get("CNI_COMMAND", "")
        if not command:
            raise CNIError(INVALID_ENVIRONMENT, "required env variables [CNI_COMMAND] missing")
        if command not in COMMANDS:
            raise CNIError(INVALID_ENVIRONMENT, f"unknown CNI_COMMAND: {command}")
        missing = [v for v in REQUIRED[command] if not environ.get(v)]
        if missing:
            raise CNIError(INVALID_ENVIRONMENT, f"required env variables [{','.join(missing)}] missing")
        out = cls(command=command, container_id=environ.get("CNI_CONTAINERID", ""),
                  netns=environ.get("CNI_NETNS", ""), ifname=environ.get("CNI_IFNAME", ""),
                  args=parse_cni_args(environ.get("CNI_ARGS", "")),
                  path=[p for p in environ.get("CNI_PATH", "").split(":") if p], stdin=stdin)
        if command in ("ADD", "DEL", "CHECK"):
            validate_container_id(out.container_id)
            validate_ifname(out.ifname)
        return out

    def environ(self) -> dict[str, str]:
        """The CNI_* variables for calling a plugin (or delegate) with these args."""
        env = {"CNI_COMMAND": self.command, "CNI_PATH": ":".join(self.path)}
        if self.container_id:
            env["CNI_CONTAINERID"] = self.container_id
        if self.netns:
            env["CNI_NETNS"] = self.netns
        if self.ifname:
            env["CNI_IFNAME"] = self.ifname
        if self.args:
            env["CNI_ARGS"] = format_cni_args(self.args)
        return env


_DECODED: dict[str, str] | None = None


def environ():
    """The process environment (str -> str) without importing `os`, which
    costs ~1.2 ms of CPU, a plugin exec's largest import: os.environ itself
    when the process has loaded os (a runtime or a test may have changed it
    since start-up), else `posix`'s copy from start-up, decoded as os does."""
    os_module = sys.modules.get("os")
    if os_module is not None:
        return os_module.environ
    global _DECODED
    if _DECODED is None:
        import posix
        enc, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
        _DECODED = {k.decode(enc, errors): v.decode(enc, errors) for k, v in posix.environ.items()}
    return _DECODED
