"""`--ip` / `--ip6`: a requested address checked against the network.

At create (nothing reserved yet) and again at attach, under the network's
lock: the right family, inside one of a native network's subnets, not its
network, broadcast or gateway address, and not another endpoint's. A
CNI-file network's subnets are its plugins' business: only the form is
checked here.
"""
from __future__ import annotations

from minidocker.errors import Conflict, MinidockerError
from minidocker.network import store


def taken(net, exclude_cid: str = "") -> dict[str, str]:
    """address -> the name of the container holding it on `net`."""
    out = {}
    for cid, ep in store.endpoints(net).items():
        if cid != exclude_cid:
            for key in ("IPv4Address", "IPv6Address"):
                if ep.get(key):
                    out[ep[key].split("/")[0]] = ep.get("Name", cid[:12])
    return out


def check_ip(net, ip: str | None, version: int, held: dict) -> str | None:
    """The address in its normal form, or None when none was asked for."""
    if not ip:
        return None
    flag = "--ip" if version == 4 else "--ip6"
    import ipaddress   # (not at import: a bridge `run` without --ip)
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise MinidockerError(f"invalid {flag} {ip!r}: not an IPv{version} address", 125) from None
    if addr.version != version:
        raise MinidockerError(f"invalid {flag} {ip!r}: not an IPv{version} address", 125)
    if net.from_file:
        return str(addr)
    subnets = [c for c in net.ipam if ipaddress.ip_network(c.subnet).version == version]
    if not subnets:
        raise MinidockerError(f"{flag} {ip}: network {net.name} has no IPv{version} subnet", 125)
    cfg = next((c for c in subnets if addr in ipaddress.ip_network(c.subnet)), None)
    if cfg is None:
        raise MinidockerError(f"{flag} {ip} is outside the subnets of network {net.name} "
                              f"({', '.join(c.subnet for c in subnets)})", 125)
    sub = ipaddress.ip_network(cfg.subnet)
    if addr == sub.network_address or (version == 4 and addr == sub.broadcast_address) \
            or str(addr) == cfg.gateway:
        raise MinidockerError(f"{flag} {ip} is the network address, broadcast or gateway of "
                              f"{cfg.subnet}; pick a host address", 125)
    if str(addr) in held:
        raise Conflict(f"{flag} {ip} is already in use by container {held[str(addr)]} on "
                       f"network {net.name}", 125)
    return str(addr)


def check(net, *, ip=None, ip6=None, exclude_cid="") -> tuple[str | None, str | None]:
    """Both requested addresses, checked (nothing is reserved); the other
    endpoints are read only when an address was asked for."""
    held = taken(net, exclude_cid) if ip or ip6 else {}
    return check_ip(net, ip, 4, held), check_ip(net, ip6, 6, held)
