"""host-local's IPAM options, parsed and validated before anything is touched.

Accepted as host-local does: `ranges` (a list of range sets, each a list of
{subnet, rangeStart, rangeEnd, gateway}), the legacy single-range keys
(`subnet`, `rangeStart`, `rangeEnd`, `gateway`), `routes`, `dataDir`,
`resolvConf`, and the requested IPs from CNI_ARGS `IP=`, `args.cni.ips` and
`runtimeConfig.ips`; `runtimeConfig.ipRanges` is prepended to the ranges.
"""
from __future__ import annotations

from cni import ipaddr

from cni.record import Record
from cni_bridge.errors import bad_config, CNIError, INVALID_ENVIRONMENT

DEFAULT_DATA_DIR = "/var/lib/cni/networks"


class Range(Record):
    subnet: ipaddr.Network
    start: int
    end: int
    gateway: str | None

    @property
    def version(self) -> int:
        return self.subnet.version

    def contains(self, ip: int, version: int) -> bool:
        return version == self.version and self.start <= ip <= self.end

    def __str__(self) -> str:
        v = self.version
        return f"{ipaddr.Address(v, self.start)}-{ipaddr.Address(v, self.end)}"


class IPAMConf(Record):
    FACTORIES = {"routes": list, "requested": list}
    range_sets: list[list[Range]]
    routes: list[dict]
    data_dir: str = DEFAULT_DATA_DIR
    resolv_conf: str = ""
    requested: list[str]   # bare IPs

    def families(self) -> set[int]:
        return {rs[0].version for rs in self.range_sets}


def _range(obj, where: str) -> Range:
    if not isinstance(obj, dict):
        raise bad_config(f"invalid range {where}: not an object", repr(obj)[:100])
    subnet = obj.get("subnet")
    if not isinstance(subnet, str) or not subnet:
        raise bad_config(f"invalid range {where}: missing subnet")
    try:
        iface = ipaddr.ip_interface(subnet)
    except ValueError:
        raise bad_config(f"invalid range {where}: invalid CIDR address: {subnet}") from None
    net = iface.network
    bits = net.max_prefixlen
    if net.prefixlen > bits - 2:
        raise bad_config(f"invalid range {where}: network {subnet} too small to allocate from")
    first = int(net.network_address) + 1
    last = int(net.broadcast_address) - (1 if bits == 32 else 0)

    def addr(key, default):
        value = obj.get(key)
        if value in (None, ""):
            return default
        try:
            ip = ipaddr.ip_address(value)
        except (ValueError, TypeError):
            raise bad_config(f"invalid range {where}: {key} {value!r} is not an IP address") from None
        if ip not in net:
            raise bad_config(f"invalid range {where}: {key} {value} not in network {net}")
        return int(ip)

    start = addr("rangeStart", first)
    end = addr("rangeEnd", last)
    if start > end:
        raise bad_config(f"invalid range {where}: rangeStart is after rangeEnd")
    gw = addr("gateway", int(net.network_address) + 1)
    return Range(net, start, end, str(ipaddr.Address(net.version, gw)))


def _range_set(obj, i: int) -> list[Range]:
    if not isinstance(obj, list) or not obj:
        raise bad_config(f"invalid range set {i}: must be a non-empty list of ranges")
    rs = [_range(r, f"{i}.{j}") for j, r in enumerate(obj)]
    if len({r.version for r in rs}) != 1:
        raise bad_config(f"invalid range set {i}: mixed address families")
    for a in range(len(rs)):
        for b in range(a + 1, len(rs)):
            if rs[a].start <= rs[b].end and rs[b].start <= rs[a].end:
                raise bad_config(f"invalid range set {i}: subnets {rs[a].subnet} and {rs[b].subnet} overlap")
    return rs


def _ip_only(value, source: str, code_env: bool) -> str:
    text = value.split("/", 1)[0] if isinstance(value, str) else None
    try:
        return str(ipaddr.ip_address(text))
    except (ValueError, TypeError):
        if code_env:
            raise CNIError(INVALID_ENVIRONMENT, f"invalid IP {value!r} in {source}") from None
        raise bad_config(f"invalid IP {value!r} in {source}") from None


def parse(conf: dict, cni_args: list[tuple[str, str]]) -> IPAMConf:
    ipam = conf.get("ipam")
    if not isinstance(ipam, dict):
        raise bad_config("IPAM config missing 'ipam' key")
    raw_sets = list(ipam.get("ranges") or [])
    if not isinstance(ipam.get("ranges", []), list):
        raise bad_config("ipam.ranges must be a list of range sets")
    if ipam.get("subnet"):
        legacy = {k: ipam.get(k) for k in ("subnet", "rangeStart", "rangeEnd", "gateway")}
        raw_sets.insert(0, [legacy])
    rc = conf.get("runtimeConfig") or {}
    if not isinstance(rc, dict):
        raise bad_config("runtimeConfig must be an object")
    if rc.get("ipRanges"):
        if not isinstance(rc["ipRanges"], list):
            raise bad_config("runtimeConfig.ipRanges must be a list of range sets")
        raw_sets = list(rc["ipRanges"]) + raw_sets
    if not raw_sets:
        raise bad_config("no IP ranges specified")
    sets = [_range_set(rs, i) for i, rs in enumerate(raw_sets)]
    for a in range(len(sets)):
        for b in range(a + 1, len(sets)):
            for ra in sets[a]:
                for rb in sets[b]:
                    if ra.version == rb.version and ra.subnet.overlaps(rb.subnet):
                        raise bad_config(f"range set {a} overlaps with {b}")
    routes = ipam.get("routes") or []
    if not isinstance(routes, list):
        raise bad_config("ipam.routes must be a list")
    for r in routes:
        try:
            ipaddr.ip_network(r["dst"], strict=False)
            if r.get("gw"):
                ipaddr.ip_address(r["gw"])
        except (ValueError, TypeError, KeyError):
            raise bad_config(f"invalid route {r!r} in ipam.routes") from None
    data_dir = ipam.get("dataDir") or DEFAULT_DATA_DIR
    if not isinstance(data_dir, str):
        raise bad_config("ipam.dataDir must be a string")

    # Requested IPs: args.cni.ips wins over CNI_ARGS IP= (P11); runtimeConfig.ips adds.
    requested: list[str] = []
    args_ips = ((conf.get("args") or {}).get("cni") or {}).get("ips") if isinstance(conf.get("args"), dict) else None
    if args_ips:
        if not isinstance(args_ips, list):
            raise bad_config("args.cni.ips must be a list")
        requested += [_ip_only(v, "args.cni.ips", False) for v in args_ips]
    else:
        for k, v in cni_args:
            if k == "IP":
                requested += [_ip_only(x, "CNI_ARGS IP", True) for x in v.split(",") if x]
    if rc.get("ips"):
        if not isinstance(rc["ips"], list):
            raise bad_config("runtimeConfig.ips must be a list")
        requested += [_ip_only(v, "runtimeConfig.ips", False) for v in rc["ips"]]
    return IPAMConf(range_sets=sets, routes=routes, data_dir=data_dir,
                    resolv_conf=ipam.get("resolvConf") or "", requested=requested)
