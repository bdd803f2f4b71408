"""IPAM: the built-in host-local-compatible allocator, or a delegate plugin.

`Builtin` and `Delegate` answer the same four calls so the plugin does not
care which one the config chose.
"""
from __future__ import annotations

from cni_bridge.errors import CNIError, ADDRESS_UNAVAILABLE, PLUGIN_FAILURE
from cni_bridge.ipam.store import DiskStore, Store


def parse_resolv_conf(path: str):
    """nameserver / domain / search / options lines, as host-local reads them."""
    from cni.types import DNS
    dns = DNS()
    try:
        with open(path) as fh:
            lines = fh.read().splitlines()
    except OSError as err:
        raise CNIError(5, f"failed to read resolvConf {path}: {err.strerror}") from None
    for line in lines:
        parts = line.split()
        if len(parts) < 2 or parts[0].startswith(("#", ";")):
            continue
        key, values = parts[0], parts[1:]
        if key == "nameserver":
            dns.nameservers.append(values[0])
        elif key == "domain":
            dns.domain = values[0]
        elif key == "search":
            dns.search = values
        elif key == "options":
            dns.options += values
    return dns


class Builtin:
    """host-local, in process: same options, same files, same lock. The
    options are parsed on first use: DEL and GC need only the store."""

    def __init__(self, conf: dict, cni_args, network: str, store: Store | None = None, parse: bool = True):
        self.raw, self.cni_args = conf, cni_args
        self._conf = None
        if parse:
            self.conf  # validate now: a bad config must fail before side effects
        if store is None:
            data_dir = (conf.get("ipam") or {}).get("dataDir") or "/var/lib/cni/networks"
            if not isinstance(data_dir, str):
                raise CNIError(7, "ipam.dataDir must be a string")
            store = DiskStore(data_dir, network)
        self.store = store

    @property
    def conf(self):
        if self._conf is None:
            from cni_bridge.ipam import config as ipam_config
            self._conf = ipam_config.parse(self.raw, self.cni_args)
        return self._conf

    def families(self) -> set[int]:
        return self.conf.families()

    def add(self, cid: str, ifname: str):
        from cni.types import DNS, Result, Route
        from cni_bridge.ipam import allocator
        dns = parse_resolv_conf(self.conf.resolv_conf) if self.conf.resolv_conf else DNS()
        with self.store:
            ips = allocator.allocate(self.conf, self.store, cid, ifname)
        routes = [Route(dst=r["dst"], gw=r.get("gw") or None) for r in self.conf.routes]
        return Result(ips=ips, routes=routes, dns=dns)

    def delete(self, cid: str, ifname: str) -> None:
        with self.store:
            self.store.release_by_id(cid, ifname)

    def check(self, cid: str, ifname: str, ips: list[str]) -> None:
        """Every address of the result is still leased to this attachment."""
        held = set(self.store.get_by_id(cid, ifname))
        for ip in ips:
            if ip not in held:
                raise CNIError(PLUGIN_FAILURE, f"IPAM lease for {ip} of {cid}/{ifname} is missing")

    def gc(self, valid: set[tuple[str, str]]) -> list[str]:
        """Release leases whose attachment is not in the valid set."""
        released = []
        with self.store:
            for ip, cid, ifname in self.store.leases():
                if (cid, ifname) not in valid and not (ifname == "" and any(c == cid for c, _ in valid)):
                    self.store.release(ip)
                    released.append(ip)
        return released

    def status(self) -> None:
        """Ready unless some range set has no free address (code 50)."""
        from cni import ipaddr
        from cni_bridge.ipam import allocator
        leased = {ip for ip, _c, _i in self.store.leases()}
        for i, rs in enumerate(self.conf.range_sets):
            size = sum(r.end - r.start + 1 for r in rs)
            size -= sum(1 for r in rs if r.gateway and r.start <= int(ipaddr.ip_address(r.gateway)) <= r.end)
            used = 0
            for ip in leased:
                try:
                    a = ipaddr.ip_address(ip)
                except ValueError:
                    continue
                if allocator.find_range(rs, a):
                    used += 1
            if used >= size:
                raise CNIError(50, f"no IP addresses available in range set: {allocator.range_text(rs)}")


__all__ = ["Builtin", "parse_resolv_conf", "ADDRESS_UNAVAILABLE"]
