"""The plugin's configuration, validated in full before anything is touched
(so a bad config leaves nothing behind)."""
from __future__ import annotations

from cni.conventions import canonical
from cni.env import PluginArgs, validate_ifname
from cni.errors import CNIError, INVALID_ENVIRONMENT, UNSUPPORTED_FIELD
from cni.portmap import PortMapping
from cni_bridge.errors import bad_config
from cni_bridge.firewall import BACKENDS

DEFAULT_BRIDGE = "cni0"
# ipam.type values served by the built-in IPAM (host-local's files and options);
# any other type, host-local included, is a plugin to delegate to (spec section 4).
BUILTIN_IPAM = ("cni-bridge", "")
KNOWN_CNI_ARGS = {"IgnoreUnknown", "IP", "MAC", "K8S_POD_NAMESPACE", "K8S_POD_NAME",
                  "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID"}
# Options of the reference bridge this plugin does not implement: refused
# with code 2 when set, rather than silently ignored.
UNSUPPORTED = ("vlan", "vlanTrunk", "preserveDefaultVlan", "macspoofchk", "enabledad")
_HEX = "0123456789abcdefABCDEF"


def _is_mac(value: str) -> bool:
    """Six pairs of hex digits joined by ':' (no `re`: ~5 ms of start-up)."""
    parts = value.split(":")
    return len(value) == 17 and len(parts) == 6 and all(len(p) == 2 and not p.strip(_HEX) for p in parts)


class BridgeConf:
    """The parsed config. A plain class, not a dataclass: `dataclasses`
    imports `inspect` (~5 ms), paid by every exec of the plugin."""
    DEFAULTS = {"bridge": DEFAULT_BRIDGE, "is_gateway": False, "is_default_gateway": False,
                "force_address": False, "ip_masq": False, "no_masq_to": list, "mtu": 0,
                "hairpin": False, "promisc": False, "mac": "", "firewall": "iptables",
                "ipam": dict, "ipam_type": "", "port_mappings": list, "isolation": False,
                "internal": False, "icc": True, "remove_idle_bridge": False, "prev_result": None,
                "raw": dict,
                "unread": list}  # unread: what `salvage` could not read and took the default for

    def __init__(self, network: str, cni_version: str, **fields):
        self.network, self.cni_version = network, cni_version
        for key, default in self.DEFAULTS.items():
            setattr(self, key, fields.pop(key) if key in fields else
                    (default() if default in (list, dict) else default))
        if fields:
            raise TypeError(f"BridgeConf: unknown fields {sorted(fields)}")

    @property
    def builtin_ipam(self) -> bool:
        return self.ipam_type in BUILTIN_IPAM


def _bool(conf: dict, key: str) -> bool:
    value = conf.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_config(f"invalid value for {key}: {value!r}", "expected true or false")
    return value


def _bool_arg(value: str, key: str) -> bool:
    if value in ("1", "true", "True", "TRUE"):
        return True
    if value in ("0", "false", "False", "FALSE", ""):
        return False
    raise CNIError(INVALID_ENVIRONMENT, f"ARGS: invalid value {value!r} for {key}", "boolean expected")


def _port(value, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise bad_config(f"invalid {key} {value!r} in portMappings", "a port is an integer 1-65535")
    return value


def _port_mappings(items) -> list[PortMapping]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise bad_config("runtimeConfig.portMappings must be a list")
    out = []
    for pm in items:
        if not isinstance(pm, dict):
            raise bad_config(f"invalid port mapping {pm!r}")
        proto = pm.get("protocol") or "tcp"
        if not isinstance(proto, str) or proto.lower() not in ("tcp", "udp", "sctp"):
            raise bad_config(f"invalid protocol {proto!r} in portMappings", "tcp, udp or sctp")
        host_ip = pm.get("hostIP") or ""
        if host_ip:
            from cni import ipaddr
            try:
                host_ip = str(ipaddr.ip_address(host_ip))
            except (ValueError, TypeError):
                raise bad_config(f"invalid hostIP {pm.get('hostIP')!r} in portMappings") from None
        out.append(PortMapping(host_port=_port(pm.get("hostPort"), "hostPort"),
                               container_port=_port(pm.get("containerPort"), "containerPort"),
                               protocol=proto.lower(), host_ip=host_ip))
    return out


def _mac(value, where: str, env: bool = False) -> str:
    if not isinstance(value, str) or not _is_mac(value) or int(value[:2], 16) & 1:
        if env:
            raise CNIError(INVALID_ENVIRONMENT, f"invalid MAC {value!r} in {where}")
        raise bad_config(f"invalid MAC {value!r} in {where}", "a unicast MAC like 0a:58:0a:00:00:05")
    return value.lower()


def check_cni_args(args: PluginArgs) -> None:
    """Unknown CNI_ARGS keys are refused unless IgnoreUnknown is set (P11)."""
    ignore = False
    for k, v in args.args:
        if k == "IgnoreUnknown":
            ignore = _bool_arg(v, k)
    if ignore:
        return
    for k, v in args.args:
        if k not in KNOWN_CNI_ARGS:
            raise CNIError(UNSUPPORTED_FIELD, f"ARGS: unknown args [{k}={v}]",
                           "set IgnoreUnknown=1 to ignore unknown CNI_ARGS")


def _cidrs(value, key: str) -> list:
    """A list of networks, normalised (ip-masq-agent's nonMasqueradeCIDRs)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_config(f"invalid {key} {value!r}", "a list of CIDRs such as [\"10.244.0.0/16\"]")
    from cni import ipaddr
    out = []
    for item in value:
        try:
            if not isinstance(item, str):     # ip_network(7) would be 0.0.0.7/32
                raise TypeError(item)
            out.append(str(ipaddr.ip_network(item, strict=False)))
        except (TypeError, ValueError):
            raise bad_config(f"invalid {key} entry {item!r}", "a CIDR such as 10.244.0.0/16") from None
    return out


def parse(conf: dict, args: PluginArgs, *, with_env: bool = True, with_prev: bool = True) -> BridgeConf:
    """The request's config, read as a Go plugin reads it (capability and
    args keys matched without case: see cni.conventions). (long: one line
    per field of the README's option table, in its order, so the two can be
    read side by side.)"""
    conf = canonical(conf)
    version = conf.get("cniVersion") or "0.1.0"
    out = BridgeConf(network=conf.get("name", ""), cni_version=version, raw=conf)
    bridge = conf.get("bridge") or DEFAULT_BRIDGE
    if not isinstance(bridge, str):
        raise bad_config(f"invalid bridge name {bridge!r}")
    try:
        validate_ifname(bridge)
    except CNIError as err:
        raise bad_config(f"invalid bridge name {bridge!r}: {err.msg}") from None
    out.bridge = bridge
    for key, attr in (("isGateway", "is_gateway"), ("isDefaultGateway", "is_default_gateway"),
                      ("forceAddress", "force_address"), ("ipMasq", "ip_masq"),
                      ("hairpinMode", "hairpin"), ("promiscMode", "promisc")):
        setattr(out, attr, _bool(conf, key))
    # minidocker's network options: see firewall.plan() for the rules they make
    for key in ("isolation", "internal"):
        setattr(out, key, _bool(conf, key))
    out.remove_idle_bridge = _bool(conf, "removeIdleBridge")
    out.no_masq_to = _cidrs(conf.get("nonMasqueradeCIDRs"), "nonMasqueradeCIDRs")
    out.icc = conf.get("icc") is None or _bool(conf, "icc")
    if out.is_default_gateway:
        out.is_gateway = True
    if out.hairpin and out.promisc:
        raise bad_config("cannot set hairpin mode and promiscuous mode at the same time")
    mtu = conf.get("mtu", 0) or 0
    if not isinstance(mtu, int) or isinstance(mtu, bool) or (mtu and not 68 <= mtu <= 65535):
        raise bad_config(f"invalid mtu {conf.get('mtu')!r}", "an integer 68-65535")
    out.mtu = mtu
    for key in UNSUPPORTED:
        if conf.get(key) not in (None, False, 0, "", []):
            raise CNIError(UNSUPPORTED_FIELD, f"unsupported field {key}={conf.get(key)!r}",
                           "cni-bridge does not implement this option of the reference bridge")
    fw = conf.get("firewallBackend", "iptables")
    if fw not in BACKENDS:
        raise bad_config(f"invalid firewallBackend {fw!r}", f"one of {', '.join(BACKENDS)}")
    out.firewall = fw
    ipam = conf.get("ipam")
    if not isinstance(ipam, dict):
        raise bad_config("missing or invalid 'ipam' section", "the bridge needs an IPAM configuration")
    out.ipam = ipam
    ptype = ipam.get("type", "")
    if not isinstance(ptype, str):
        raise bad_config(f"invalid ipam type {ptype!r}")
    out.ipam_type = ptype
    rc = conf.get("runtimeConfig") or {}
    if not isinstance(rc, dict):
        raise bad_config("runtimeConfig must be an object")
    out.port_mappings = _port_mappings(rc.get("portMappings"))
    cargs = conf.get("args") or {}
    if not isinstance(cargs, dict) or not isinstance(cargs.get("cni") or {}, dict):
        raise bad_config("args must be an object with an optional 'cni' object")
    if with_env:
        check_cni_args(args)
        # MAC: CNI_ARGS, then args.cni.mac, then runtimeConfig.mac (the reference's order).
        mac = args.arg("MAC")
        if mac:
            out.mac = _mac(mac, "CNI_ARGS", env=True)
        if (cargs.get("cni") or {}).get("mac"):
            out.mac = _mac(cargs["cni"]["mac"], "args.cni.mac")
        if rc.get("mac"):
            out.mac = _mac(rc["mac"], "runtimeConfig.mac")
    prev = conf.get("prevResult")
    if prev is not None and with_prev:
        from cni.types import Result
        out.prev_result = Result.from_dict(prev, version)
    return out


def salvage(conf: dict) -> BridgeConf:
    """What DEL can still use of a config `parse` refused: DEL must not fail
    on a config it cannot read when it can still find what it owns (by
    container id and ifname). Each field that names where things are is read
    on its own; an unreadable one takes its default and is named in
    `unread` (an unreadable firewallBackend is "": every backend)."""
    conf = canonical(conf)
    out = BridgeConf(network=conf.get("name", ""), cni_version=str(conf.get("cniVersion") or "0.1.0"), raw=conf)
    bridge = conf.get("bridge") or DEFAULT_BRIDGE
    try:
        validate_ifname(bridge if isinstance(bridge, str) else "")
        out.bridge = bridge
    except CNIError:
        out.unread.append("bridge")
    fw = conf.get("firewallBackend", "iptables")
    out.firewall = fw if fw in BACKENDS else ""
    if not out.firewall:
        out.unread.append("firewallBackend")
    ipam = conf.get("ipam")
    if isinstance(ipam, dict) and isinstance(ipam.get("type", ""), str) \
            and isinstance(ipam.get("dataDir") or "", str):
        out.ipam, out.ipam_type = ipam, ipam.get("type", "")
    else:
        out.unread.append("ipam")
        out.raw = dict(conf, ipam={})   # the built-in IPAM's defaults (its default store)
    value = conf.get("removeIdleBridge")
    out.remove_idle_bridge = value is True
    if not isinstance(value, (bool, type(None))):
        out.unread.append("removeIdleBridge")
    return out
