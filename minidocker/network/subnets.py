"""Subnets for bridge networks: the default pool and overlap checks.

The pool avoids Docker's defaults (172.17.0.0/16 … 172.31.0.0/16,
192.168.0.0/16) and Podman's (10.88.0.0/16, 10.89.0.0/16), so minidocker can
run beside either. A subnet that overlaps a route already on the host is
skipped when chosen from the pool and refused when given explicitly.
"""
from __future__ import annotations

# `ipaddress` (with functools and collections, ~2-4 ms) is imported by the
# functions that use it, not here: `run` imports this module (for
# SubnetError) on every bridge run, which computes no subnet.
# (`Net` in annotations: ipaddress.IPv4Network | ipaddress.IPv6Network.)
DEFAULT_POOL_V4 = "10.210.0.0/16"
DEFAULT_PREFIX_V4 = 24
DEFAULT_POOL_V6 = "fd6d:6400::/48"   # "md" in the ULA range
DEFAULT_PREFIX_V6 = 64


class SubnetError(ValueError):
    """A subnet, gateway or range that cannot be used; the message says why."""


def host_routes() -> list[Net]:
    """Destinations of the routes in this network namespace (both families)."""
    import ipaddress
    import json
    import subprocess   # not at import: this module is on `run`'s path
    nets: list[Net] = []
    for family in ("-4", "-6"):
        proc = subprocess.run(["ip", "-j", family, "route", "show", "table", "all"],
                              capture_output=True, text=True, timeout=10)
        for route in json.loads(proc.stdout or "[]"):
            dst = route.get("dst", "")
            if not dst or dst == "default" or route.get("type") in ("local", "broadcast", "multicast"):
                continue
            if dst.startswith("fe80:") or dst.startswith("ff00:"):
                continue
            try:
                nets.append(ipaddress.ip_network(dst if "/" in dst else
                                                 dst + ("/32" if ":" not in dst else "/128"),
                                                 strict=False))
            except ValueError:
                continue
    return nets


def parse_subnet(text: str) -> Net:
    import ipaddress
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise SubnetError(f"invalid subnet {text!r}: {exc}; accepted: ADDRESS/PREFIX, "
                          "e.g. 10.5.0.0/24 or fd00:5::/64") from None
    if net.is_loopback or net.is_multicast or net.is_link_local or net.is_unspecified \
            or net.network_address.is_unspecified:
        raise SubnetError(f"subnet {text} cannot be used for a network: loopback, multicast, "
                          "link-local and unspecified addresses are reserved")
    limit = 30 if net.version == 4 else 126
    if net.prefixlen > limit:
        raise SubnetError(f"subnet {text} is too small; the prefix must be /{limit} or shorter")
    return net


def overlapping(net: Net, taken: Iterable[Net]) -> Net | None:
    for other in taken:
        if other.version == net.version and net.overlaps(other):
            return other
    return None


def choose(taken: Iterable[Net], version: int = 4) -> Net:
    """The first pool subnet that overlaps nothing in `taken`."""
    import ipaddress
    taken = list(taken)
    pool, prefix = ((DEFAULT_POOL_V4, DEFAULT_PREFIX_V4) if version == 4
                    else (DEFAULT_POOL_V6, DEFAULT_PREFIX_V6))
    pool = ipaddress.ip_network(pool)
    for candidate in pool.subnets(new_prefix=prefix):
        if overlapping(candidate, taken) is None:
            return candidate
        if version == 6 and candidate.network_address > pool.network_address + 4096 * 2**64:
            break
    raise SubnetError(f"the default address pool {pool} is exhausted; give --subnet")


def check_gateway(net: Net, gateway: str | None) -> str:
    """The gateway: given (inside the subnet, not its network/broadcast) or the first host."""
    if not gateway:
        return str(next(net.hosts()))
    import ipaddress
    try:
        gw = ipaddress.ip_address(gateway)
    except ValueError:
        raise SubnetError(f"invalid gateway {gateway!r}: not an IP address") from None
    if gw not in net or gw == net.network_address or (net.version == 4 and gw == net.broadcast_address):
        raise SubnetError(f"gateway {gateway} is not a usable address of subnet {net}")
    return str(gw)


def check_ip_range(net: Net, ip_range: str | None) -> Net | None:
    if not ip_range:
        return None
    import ipaddress
    try:
        rng = ipaddress.ip_network(ip_range, strict=True)
    except ValueError as exc:
        raise SubnetError(f"invalid ip-range {ip_range!r}: {exc}") from None
    if rng.version != net.version or not rng.subnet_of(net):
        raise SubnetError(f"ip-range {ip_range} is not inside subnet {net}")
    return rng


def service_range(text: str, source: str):
    """A services' VIP range (`source` names where it came from): an IPv4
    network of at least 4 addresses."""
    import ipaddress
    try:
        net = ipaddress.ip_network(text)
    except ValueError:
        net = None
    if net is None or net.version != 4 or net.prefixlen > 30:
        raise SubnetError(f"invalid service range {text!r} ({source}): expected an IPv4 CIDR "
                          "of /30 or wider, e.g. 10.96.0.0/16")
    return net
