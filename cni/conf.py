"""Network configuration: a plugin's config and a network configuration list."""
from __future__ import annotations

from cni import fastjson as json
from cni import version as _v
from cni.env import validate_network_name
from cni.errors import CNIError, DECODE_FAILURE, INVALID_NETWORK_CONFIG


def decode_json(data: bytes | str, what: str = "network config") -> dict:
    """JSON object from bytes; a decode failure is the spec's code 6."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # nesting beyond the parser's stack
        raise CNIError(DECODE_FAILURE, f"error parsing {what}: {exc}") from None
    if not isinstance(obj, dict):
        raise CNIError(DECODE_FAILURE, f"error parsing {what}: not a JSON object")
    return obj


def validate_type(ptype) -> None:
    """A plugin type is a bare executable name: never a path (R1)."""
    if not isinstance(ptype, str) or not ptype:
        raise CNIError(INVALID_NETWORK_CONFIG, "missing plugin type")
    if "/" in ptype or "\\" in ptype or ptype in (".", "..") or "\x00" in ptype:
        raise CNIError(INVALID_NETWORK_CONFIG, f"invalid plugin type {ptype!r}",
                       "a type is a bare executable name found along CNI_PATH")


def parse_bool(value, key: str) -> bool:
    """disableCheck/disableGC: a bool or the strings "true"/"false" (R1)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise CNIError(INVALID_NETWORK_CONFIG, f"invalid value {value!r} for {key}",
                   "expected true or false")


def plugin_version(conf: dict) -> str:
    """The version a plugin config claims; an absent one is 0.1.0 (skel)."""
    ver = conf.get("cniVersion") or "0.1.0"
    _v.parse(ver)
    return ver


class NetworkConfigList:
    """A .conflist (or a .conf converted to a list), validated (R1, R2).
    A plain class: skel imports this module on every plugin call."""

    __slots__ = ("name", "cni_version", "plugins", "cni_versions", "disable_check",
                 "disable_gc", "raw", "bytes", "source")

    def __init__(self, name: str, cni_version: str, plugins: list[dict],
                 cni_versions: list[str] | None = None, disable_check: bool = False,
                 disable_gc: bool = False, raw: dict | None = None, bytes: bytes = b"",
                 source: str = ""):
        self.name = name
        self.cni_version = cni_version
        self.plugins = plugins
        self.cni_versions = cni_versions if cni_versions is not None else []
        self.disable_check = disable_check
        self.disable_gc = disable_gc
        self.raw = raw if raw is not None else {}   # the whole object, unknown keys kept
        self.bytes = bytes                          # as read, for libcni's cache
        self.source = source

    def __repr__(self) -> str:
        return f"NetworkConfigList({self.name!r}, {self.cni_version!r}, {len(self.plugins)} plugins)"

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "", supported=_v.SUPPORTED) -> "NetworkConfigList":
        obj = decode_json(data, f"network configuration list {source}".strip())
        if "plugins" not in obj and "type" in obj:
            return cls.from_plugin_conf(obj, data, source, supported)
        return cls.from_dict(obj, data, source, supported)

    @classmethod
    def from_dict(cls, obj: dict, data: bytes | None = None, source: str = "",
                  supported=_v.SUPPORTED) -> "NetworkConfigList":
        name = obj.get("name")
        if not isinstance(name, str):
            raise CNIError(INVALID_NETWORK_CONFIG, "missing network name")
        validate_network_name(name)
        plugins = obj.get("plugins")
        if not isinstance(plugins, list) or not plugins:
            raise CNIError(INVALID_NETWORK_CONFIG, f"network {name!r} has no plugins",
                           "'plugins' must be a non-empty list")
        for i, plugin in enumerate(plugins):
            if not isinstance(plugin, dict):
                raise CNIError(INVALID_NETWORK_CONFIG, f"plugins[{i}] of {name!r} is not an object")
            validate_type(plugin.get("type"))
        versions = obj.get("cniVersions") or []
        if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
            raise CNIError(INVALID_NETWORK_CONFIG, "cniVersions must be a list of strings")
        declared = [v for v in [obj.get("cniVersion"), *versions] if v]
        for v in declared:
            _v.parse(v)
        chosen = _v.highest(declared, supported) if declared else "0.1.0"
        if chosen is None:
            raise CNIError(1, f"no supported version in {declared}", f"supported: {list(supported)}")
        return cls(name=name, cni_version=chosen, plugins=plugins, cni_versions=versions,
                   disable_check=parse_bool(obj.get("disableCheck", False), "disableCheck"),
                   disable_gc=parse_bool(obj.get("disableGC", False), "disableGC"),
                   raw=obj, bytes=data if data is not None else json.dumps(obj).encode(),
                   source=source)

    @classmethod
    def from_plugin_conf(cls, conf: dict, data: bytes | None = None, source: str = "",
                         supported=_v.SUPPORTED) -> "NetworkConfigList":
        """libcni's ConfListFromConf: a single plugin becomes a one-entry list."""
        listed = {"cniVersion": conf.get("cniVersion", ""), "name": conf.get("name", ""),
                  "plugins": [conf]}
        out = cls.from_dict(listed, None, source, supported)
        return out

    def plugin_request(self, index: int, *, runtime_config: dict | None = None,
                       prev_result: dict | None = None, extra: dict | None = None) -> dict:
        """R4: the plugin's object plus cniVersion and name; runtimeConfig only
        when non-empty; prevResult when given; `capabilities` stripped."""
        req = {k: v for k, v in self.plugins[index].items() if k != "capabilities"}
        req["cniVersion"] = self.cni_version
        req["name"] = self.name
        if runtime_config:
            req["runtimeConfig"] = runtime_config
        else:
            req.pop("runtimeConfig", None)
        if prev_result is not None:
            req["prevResult"] = prev_result
        if extra:
            req.update(extra)
        return req

    def b64(self) -> str:
        import base64   # (struct and binascii: not for a plugin's start-up)
        return base64.b64encode(self.bytes).decode()
