"""`-p` / `--publish` in every Docker form, parsed into port mappings.

Forms: CPORT, HPORT:CPORT, IP:HPORT:CPORT, IP::CPORT, each with an optional
/tcp or /udp; ranges on either side (`8000-8010:80-90`, equal lengths; a host
range with one container port takes the first free host port of the range);
IPv6 host addresses in brackets (`[::1]:8080:80`). A host port of 0 (or none)
means a free port from the kernel's local port range, chosen at publish time.
"""
from __future__ import annotations

from cni.portmap import PortMapping

PROTOCOLS = ("tcp", "udp")


class PortSpecError(ValueError):
    """A -p value that is not one of Docker's forms; the message names it."""


_ACCEPTED = "accepted: [IP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp], ports 1-65535, ranges A-B"


def _port(text: str, spec: str, allow_zero: bool = False) -> int:
    if not text.isdigit() or len(text) > 5:
        raise PortSpecError(f"invalid port {text!r} in -p {spec!r}; {_ACCEPTED}")
    value = int(text)
    if not (0 if allow_zero else 1) <= value <= 65535:
        raise PortSpecError(f"port {value} out of range in -p {spec!r}; {_ACCEPTED}")
    return value


def _range(text: str, spec: str, allow_zero: bool = False) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    start = _port(lo, spec, allow_zero)
    end = _port(hi, spec, allow_zero) if sep else start
    if end < start:
        raise PortSpecError(f"invalid range {text!r} in -p {spec!r}: end below start")
    return start, end


def _split_host_ip(spec: str, rest: str) -> tuple[str, str]:
    """'[::1]:8080:80' -> ('::1', '8080:80'); '1.2.3.4:8080:80' -> ('1.2.3.4', '8080:80')."""
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0 or rest[close + 1:close + 2] != ":":
            raise PortSpecError(f"invalid IPv6 address in -p {spec!r}; write it as [ADDR]:HOSTPORT:PORT")
        ip, rest = rest[1:close], rest[close + 2:]
    elif rest.count(":") == 2:
        ip, _, rest = rest.partition(":")
    else:
        return "", rest
    import ipaddress   # (not at import: only for `-p HOSTIP:...`)
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise PortSpecError(f"invalid host IP {ip!r} in -p {spec!r}") from None
    return ("" if addr.is_unspecified and addr.version == 4 else str(addr)), rest


def parse_publish(spec: str) -> list[PortMapping]:
    """One -p value -> its mappings (a range gives several)."""
    if not isinstance(spec, str) or not spec or any(c.isspace() for c in spec):
        raise PortSpecError(f"invalid -p {spec!r}; {_ACCEPTED}")
    body, slash, proto = spec.rpartition("/") if "/" in spec else (spec, "", "tcp")
    if slash:
        proto = proto.lower()
        if proto not in PROTOCOLS:
            raise PortSpecError(f"invalid protocol {proto!r} in -p {spec!r}; accepted: tcp, udp")
    host_ip, rest = _split_host_ip(spec, body)
    parts = rest.split(":")
    if len(parts) == 1:
        host_text, cont_text = "", parts[0]
    elif len(parts) == 2:
        host_text, cont_text = parts
    else:
        raise PortSpecError(f"invalid -p {spec!r}; {_ACCEPTED}")
    cstart, cend = _range(cont_text, spec)
    if not host_text:
        return [PortMapping(c, 0, proto, host_ip) for c in range(cstart, cend + 1)]
    hstart, hend = _range(host_text, spec, allow_zero=True)
    if cstart == cend and hend > hstart:
        return [PortMapping(cstart, 0, proto, host_ip, (hstart, hend))]
    if hend - hstart != cend - cstart:
        raise PortSpecError(f"invalid ranges in -p {spec!r}: host range {hstart}-{hend} and "
                            f"container range {cstart}-{cend} differ in length")
    return [PortMapping(c, h, proto, host_ip) for h, c in zip(range(hstart, hend + 1),
                                                             range(cstart, cend + 1))]


def parse_exposed(key: str) -> PortMapping:
    """An image's ExposedPorts key ('80/tcp') as a mapping to a random host port (-P)."""
    port, _, proto = key.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in PROTOCOLS:
        raise PortSpecError(f"invalid exposed port {key!r}; accepted: PORT[/tcp|/udp]")
    return PortMapping(_port(port, key), 0, proto, "")


def check_conflicts(mappings: list[PortMapping]) -> None:
    """Two mappings of one run that claim the same host port on overlapping
    addresses ("" overlaps every address)."""
    claimed: list[PortMapping] = []
    for m in mappings:
        if not m.host_port:
            continue
        for other in claimed:
            if (other.host_port, other.protocol) == (m.host_port, m.protocol) and (
                    not other.host_ip or not m.host_ip or other.host_ip == m.host_ip):
                raise PortSpecError(f"host port {m.host_port}/{m.protocol} is published twice "
                                    f"({other} and {m})")
        claimed.append(m)


def local_port_range() -> tuple[int, int]:
    """The kernel's ephemeral range of this network namespace (random -p ports)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
        lo, hi = fh.read().split()
    return int(lo), int(hi)
