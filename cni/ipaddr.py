"""IP addresses, networks and interfaces as ADD and DEL need them, without
`ipaddress`: importing it (with functools and collections) costs ~4.5 ms
of CPU, a fifth of a plugin's ADD. The names and the behaviour are the
subset of `ipaddress` the plugin uses: `ip_address`, `ip_network`,
`ip_interface`, `int()`, `str()`, `in`, `overlaps`, `is_link_local`.
Parsing is `_socket.inet_pton`'s, which accepts and refuses what
ipaddress does (no leading zeros in IPv4, `::ffff:1.2.3.4`), except IPv6
scope ids (`fe80::1%eth0`), which no CNI field takes; the text forms are
ipaddress's (tests/test_cni_startup.py compares both on a corpus).
"""
from __future__ import annotations

from _socket import AF_INET, AF_INET6, inet_pton

BITS = {4: 32, 6: 128}


class Address:
    """One address: its version and its value as an int."""
    __slots__ = ("version", "value")

    def __init__(self, version: int, value: int):
        self.version, self.value = version, value

    @property
    def max_prefixlen(self) -> int:
        return BITS[self.version]

    @property
    def is_link_local(self) -> bool:
        if self.version == 4:
            return self.value >> 16 == 0xA9FE            # 169.254.0.0/16
        return self.value >> 118 == 0xFE80 >> 6          # fe80::/10

    def __int__(self) -> int:
        return self.value

    def __add__(self, n: int) -> "Address":
        return Address(self.version, self.value + n)

    def __eq__(self, other) -> bool:
        return isinstance(other, Address) and (self.version, self.value) == (other.version, other.value)

    def __hash__(self) -> int:
        return hash((self.version, self.value))

    def __str__(self) -> str:
        n = self.value
        if self.version == 4:
            return f"{n >> 24}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        return _compress(["%x" % (n >> (112 - 16 * i) & 0xFFFF) for i in range(8)])

    def __repr__(self) -> str:
        return f"ip_address({str(self)!r})"


def _compress(hextets: list[str]) -> str:
    """ipaddress's IPv6 text: the longest run (the first of equals) of two
    or more zero groups becomes `::`."""
    best_start, best_len, start, run = -1, 0, -1, 0
    for i, h in enumerate(hextets):
        if h == "0":
            run += 1
            if start == -1:
                start = i
            if run > best_len:
                best_start, best_len = start, run
        else:
            run, start = 0, -1
    if best_len > 1:
        end = best_start + best_len
        if end == len(hextets):
            hextets += [""]
        hextets[best_start:end] = [""]
        if best_start == 0:
            hextets = [""] + hextets
    return ":".join(hextets)


class Network:
    """An address and a prefix length with the host bits clear."""
    __slots__ = ("network_address", "prefixlen")

    def __init__(self, address: Address, prefixlen: int):
        self.network_address, self.prefixlen = address, prefixlen

    @property
    def version(self) -> int:
        return self.network_address.version

    @property
    def max_prefixlen(self) -> int:
        return BITS[self.version]

    @property
    def broadcast_address(self) -> Address:
        return self.network_address + ((1 << (self.max_prefixlen - self.prefixlen)) - 1)

    def __contains__(self, ip: Address) -> bool:
        return (isinstance(ip, Address) and ip.version == self.version
                and ip.value >> (self.max_prefixlen - self.prefixlen)
                == self.network_address.value >> (self.max_prefixlen - self.prefixlen))

    def overlaps(self, other: "Network") -> bool:
        return (other.network_address in self or other.broadcast_address in self
                or self.network_address in other or self.broadcast_address in other)

    def __eq__(self, other) -> bool:
        return (isinstance(other, Network) and self.network_address == other.network_address
                and self.prefixlen == other.prefixlen)

    def __hash__(self) -> int:
        return hash((self.network_address, self.prefixlen))

    def __str__(self) -> str:
        return f"{self.network_address}/{self.prefixlen}"

    def __repr__(self) -> str:
        return f"ip_network({str(self)!r})"


class Interface:
    """An address with the network it is on (`10.0.0.2/24`)."""
    __slots__ = ("ip", "network")

    def __init__(self, ip: Address, prefixlen: int):
        shift = ip.max_prefixlen - prefixlen
        self.ip, self.network = ip, Network(Address(ip.version, ip.value >> shift << shift), prefixlen)

    @property
    def version(self) -> int:
        return self.ip.version

    @property
    def is_link_local(self) -> bool:
        return self.ip.is_link_local

    def __eq__(self, other) -> bool:
        return isinstance(other, Interface) and (self.ip, self.network) == (other.ip, other.network)

    def __hash__(self) -> int:
        return hash((self.ip, self.network))

    def __str__(self) -> str:
        return f"{self.ip}/{self.network.prefixlen}"

    def __repr__(self) -> str:
        return f"ip_interface({str(self)!r})"


def ip_address(text) -> Address:
    """An address from its text (or an int, as ipaddress takes one);
    ValueError naming the text otherwise."""
    if isinstance(text, int) and not isinstance(text, bool) and 0 <= text < 1 << 128:
        return Address(4 if text < 1 << 32 else 6, text)
    if isinstance(text, str):
        fam, version = (AF_INET6, 6) if ":" in text else (AF_INET, 4)
        try:
            return Address(version, int.from_bytes(inet_pton(fam, text), "big"))
        except (OSError, ValueError):
            pass
    raise ValueError(f"{text!r} does not appear to be an IPv4 or IPv6 address")


def _prefix(text: str, version: int, whole) -> int:
    """A prefix length: decimal digits, or for IPv4 a netmask or a hostmask
    (`255.255.255.0`, `0.0.0.255`), as ipaddress reads them."""
    bits = BITS[version]
    if text.isascii() and text.isdigit():
        n = int(text)
        if n <= bits:
            return n
    elif version == 4 and "." in text:
        try:
            mask = ip_address(text).value
        except ValueError:
            mask = -1
        for m in (mask, mask ^ 0xFFFFFFFF if mask >= 0 else -1):
            ones = bin(m).count("1") if m >= 0 else -1
            if ones >= 0 and m == (0xFFFFFFFF << (32 - ones)) & 0xFFFFFFFF:
                return ones
    raise ValueError(f"{whole!r} does not have a valid prefix length")


def _split(text) -> tuple[Address, int]:
    if isinstance(text, int) and not isinstance(text, bool):
        ip = ip_address(text)
        return ip, ip.max_prefixlen
    if not isinstance(text, str):
        raise ValueError(f"{text!r} does not appear to be an IPv4 or IPv6 network")
    addr, slash, plen = text.partition("/")
    if "/" in plen:
        raise ValueError(f"{text!r} does not appear to be an IPv4 or IPv6 network")
    try:
        ip = ip_address(addr)
    except ValueError:
        raise ValueError(f"{text!r} does not appear to be an IPv4 or IPv6 network") from None
    return ip, _prefix(plen, ip.version, text) if slash else ip.max_prefixlen


def ip_interface(text) -> Interface:
    ip, plen = _split(text)
    return Interface(ip, plen)


def ip_network(text, strict: bool = True) -> Network:
    """A network; with `strict`, host bits set are an error (ipaddress's rule)."""
    ip, plen = _split(text)
    iface = Interface(ip, plen)
    if strict and iface.network.network_address != ip:
        raise ValueError(f"{text!r} has host bits set")
    return iface.network
