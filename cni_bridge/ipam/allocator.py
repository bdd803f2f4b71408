"""host-local's allocation rules over any `Store`: one address per range set,
round-robin from the last reserved address, the gateway never handed out,
requested addresses honoured or refused, everything rolled back on failure."""
from __future__ import annotations

from cni import ipaddr

from cni.types import IPConfig
from cni_bridge.errors import ADDRESS_UNAVAILABLE, CNIError
from cni_bridge.ipam.config import IPAMConf, Range
from cni_bridge.ipam.store import Store


def range_text(rs: list[Range]) -> str:
    return ",".join(str(r) for r in rs)


def find_range(rs: list[Range], ip: ipaddr.Address) -> Range | None:
    n = int(ip)
    return next((r for r in rs if r.contains(n, ip.version)), None)


def _candidates(rs: list[Range], last: str | None):
    """Every address of the set once, starting after `last` when it is in
    the set (round-robin), else at the first range's start."""
    pos = (0, rs[0].start - 1)
    if last:
        try:
            ip = ipaddr.ip_address(last)
        except ValueError:
            ip = None
        if ip is not None:
            for i, r in enumerate(rs):
                if r.contains(int(ip), ip.version):
                    pos = (i, int(ip))
                    break
    total = sum(r.end - r.start + 1 for r in rs)
    i, cur = pos
    for _ in range(total):
        cur += 1
        if cur > rs[i].end:
            i = (i + 1) % len(rs)
            cur = rs[i].start
        yield rs[i], cur


def allocate(conf: IPAMConf, store: Store, cid: str, ifname: str) -> list[IPConfig]:
    """Reserve one address per range set. Call with the store locked."""
    requested = [ipaddr.ip_address(x) for x in conf.requested]
    placed: dict[int, ipaddr.Address] = {}
    for ip in requested:
        for i, rs in enumerate(conf.range_sets):
            if find_range(rs, ip) and i not in placed:
                placed[i] = ip
                break
    unplaced = [str(ip) for ip in requested if ip not in placed.values()]
    if unplaced:
        raise CNIError(ADDRESS_UNAVAILABLE, f"failed to allocate all requested IPs: {', '.join(unplaced)}")
    out: list[IPConfig] = []
    done: list[str] = []
    try:
        for i, rs in enumerate(conf.range_sets):
            out.append(_one(i, rs, store, cid, ifname, placed.get(i), done))
    except Exception:
        for ip in done:
            store.release(ip)
        raise
    return out


def _one(i, rs, store, cid, ifname, want, done) -> IPConfig:
    if want is not None:
        r = find_range(rs, want)
        if str(want) == r.gateway:
            raise CNIError(ADDRESS_UNAVAILABLE, f"failed to allocate for range {i}: "
                           f"requested ip {want} is subnet's gateway")
        if not store.reserve(cid, ifname, str(want), i):
            raise CNIError(ADDRESS_UNAVAILABLE, f"failed to allocate for range {i}: requested IP "
                           f"address {want} is not available in range set {range_text(rs)}")
        done.append(str(want))
        return IPConfig(address=f"{want}/{r.subnet.prefixlen}", gateway=r.gateway)
    version = rs[0].version
    for held in store.get_by_id(cid, ifname):
        try:
            hip = ipaddr.ip_address(held)
        except ValueError:
            continue
        if find_range(rs, hip):
            raise CNIError(ADDRESS_UNAVAILABLE, f"failed to allocate for range {i}: {held} has been "
                           f"allocated to {cid}, duplicate allocation is not allowed")
    gw_ints = {int(ipaddr.ip_address(r.gateway)) for r in rs if r.gateway}
    for r, n in _candidates(rs, store.last_reserved(i)):
        if n in gw_ints:
            continue
        ip = str(ipaddr.Address(version, n))
        if store.reserve(cid, ifname, ip, i):
            done.append(ip)
            return IPConfig(address=f"{ip}/{r.subnet.prefixlen}", gateway=r.gateway)
    raise CNIError(ADDRESS_UNAVAILABLE, f"failed to allocate for range {i}: "
                   f"no IP addresses available in range set: {range_text(rs)}")
