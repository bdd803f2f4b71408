"""The spec's result types and the conversion between result versions.

One in-memory model (the newest, 1.1.0) is read from and written to every
format: 0.1.0/0.2.0 (`ip4`/`ip6`), 0.3.x/0.4.0 (`ips[].version`), 1.0.0 (no
`version` in ips), 1.1.0 (`interfaces[].mtu`, route attributes).
"""
from __future__ import annotations

from cni import ipaddr

from cni import version as _v
from cni.record import Record
from cni.errors import CNIError, DECODE_FAILURE


def _bad(what: str, value) -> CNIError:
    return CNIError(DECODE_FAILURE, f"invalid result: {what}", repr(value)[:200])


def _family(cidr: str) -> int:
    try:
        return ipaddr.ip_interface(cidr).version
    except ValueError:
        raise _bad("address is not IP/prefix", cidr) from None


class Interface(Record):
    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int | None = None          # 1.1.0
    socket_path: str = ""           # 1.1.0
    pci_id: str = ""                # 1.1.0

    def to_dict(self, version: str) -> dict:
        out: dict = {"name": self.name}
        if self.mac:
            out["mac"] = self.mac
        if _v.at_least(version, "1.1.0"):
            if self.mtu:
                out["mtu"] = self.mtu
        if self.sandbox:
            out["sandbox"] = self.sandbox
        if _v.at_least(version, "1.1.0"):
            if self.socket_path:
                out["socketPath"] = self.socket_path
            if self.pci_id:
                out["pciID"] = self.pci_id
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Interface":
        if not isinstance(d, dict) or not isinstance(d.get("name", ""), str):
            raise _bad("interface", d)
        return cls(name=d.get("name", ""), mac=d.get("mac", "") or "", sandbox=d.get("sandbox", "") or "",
                   mtu=d.get("mtu"), socket_path=d.get("socketPath", "") or "",
                   pci_id=d.get("pciID", "") or "")


class IPConfig(Record):
    address: str                    # "10.0.0.2/24"
    gateway: str | None = None
    interface: int | None = None    # index into Result.interfaces

    @property
    def version(self) -> int:
        return _family(self.address)

    def to_dict(self, version: str, ipam: bool = False) -> dict:
        out: dict = {}
        if not _v.at_least(version, "1.0.0"):
            out["version"] = str(self.version)
        if self.interface is not None and not ipam:
            out["interface"] = self.interface
        out["address"] = self.address
        if self.gateway:
            out["gateway"] = self.gateway
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "IPConfig":
        if not isinstance(d, dict) or not isinstance(d.get("address"), str):
            raise _bad("ips entry needs an address", d)
        _family(d["address"])
        iface = d.get("interface")
        if iface is not None and not isinstance(iface, int):
            raise _bad("ips[].interface must be an index", iface)
        return cls(address=d["address"], gateway=d.get("gateway") or None, interface=iface)


class Route(Record):
    dst: str
    gw: str | None = None
    mtu: int | None = None          # 1.1.0 from here on
    advmss: int | None = None
    priority: int | None = None
    table: int | None = None
    scope: int | None = None

    _EXTRA = (("mtu", "mtu"), ("advmss", "advmss"), ("priority", "priority"),
              ("table", "table"), ("scope", "scope"))

    def to_dict(self, version: str) -> dict:
        out: dict = {"dst": self.dst}
        if self.gw:
            out["gw"] = self.gw
        if _v.at_least(version, "1.1.0"):
            for attr, key in self._EXTRA:
                if getattr(self, attr) is not None:
                    out[key] = getattr(self, attr)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Route":
        if not isinstance(d, dict) or not isinstance(d.get("dst"), str):
            raise _bad("route needs a dst", d)
        try:
            ipaddr.ip_network(d["dst"], strict=False)
        except ValueError:
            raise _bad("route dst is not a network", d["dst"]) from None
        kw = {attr: d.get(key) for attr, key in cls._EXTRA}
        return cls(dst=d["dst"], gw=d.get("gw") or None, **kw)

    @property
    def version(self) -> int:
        return ipaddr.ip_network(self.dst, strict=False).version


class DNS(Record):
    FACTORIES = {"nameservers": list, "search": list, "options": list}
    nameservers: list[str]
    domain: str = ""
    search: list[str]
    options: list[str]

    def to_dict(self) -> dict:
        out: dict = {}
        if self.nameservers:
            out["nameservers"] = list(self.nameservers)
        if self.domain:
            out["domain"] = self.domain
        if self.search:
            out["search"] = list(self.search)
        if self.options:
            out["options"] = list(self.options)
        return out

    @classmethod
    def from_dict(cls, d) -> "DNS":
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise _bad("dns", d)
        return cls(nameservers=list(d.get("nameservers") or []), domain=d.get("domain", "") or "",
                   search=list(d.get("search") or []), options=list(d.get("options") or []))

    def empty(self) -> bool:
        return not (self.nameservers or self.domain or self.search or self.options)


class Result(Record):
    FACTORIES = {"interfaces": list, "ips": list, "routes": list, "dns": DNS}
    cni_version: str = _v.CURRENT
    interfaces: list[Interface]
    ips: list[IPConfig]
    routes: list[Route]
    dns: DNS

    # --- reading ---------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict, default_version: str | None = None) -> "Result":
        """Read a result of any supported version (R12: a result without
        cniVersion has the config's version, given as default_version)."""
        if not isinstance(d, dict):
            raise _bad("result is not an object", d)
        version = d.get("cniVersion") or default_version or _v.CURRENT
        _v.parse(version)
        if not _v.at_least(version, "0.3.0"):
            return cls._from_legacy(d, version)
        try:
            interfaces = [Interface.from_dict(i) for i in d.get("interfaces") or []]
            ips = [IPConfig.from_dict(i) for i in d.get("ips") or []]
            routes = [Route.from_dict(r) for r in d.get("routes") or []]
        except TypeError:
            raise _bad("interfaces, ips and routes must be lists", d) from None
        for ip in ips:
            if ip.interface is not None and not 0 <= ip.interface < len(interfaces):
                raise _bad("ips[].interface out of range", ip.interface)
        return cls(version, interfaces, ips, routes, DNS.from_dict(d.get("dns")))

    @classmethod
    def _from_legacy(cls, d: dict, version: str) -> "Result":
        ips, routes = [], []
        for key in ("ip4", "ip6"):
            block = d.get(key)
            if not block:
                continue
            if not isinstance(block, dict) or not isinstance(block.get("ip"), str):
                raise _bad(key, block)
            _family(block["ip"])
            ips.append(IPConfig(address=block["ip"], gateway=block.get("gateway") or None))
            routes.extend(Route.from_dict(r) for r in block.get("routes") or [])
        return cls(version, [], ips, routes, DNS.from_dict(d.get("dns")))

    # --- writing ---------------------------------------------------------
    def to_dict(self, version: str | None = None, *, ipam: bool = False) -> dict:
        """The result in `version`'s format. `ipam`: an IPAM plugin's result
        (no interfaces, no ips[].interface)."""
        version = version or self.cni_version
        _v.parse(version)
        if not _v.at_least(version, "0.3.0"):
            return self._to_legacy(version)
        out: dict = {"cniVersion": version}
        if self.interfaces and not ipam:
            out["interfaces"] = [i.to_dict(version) for i in self.interfaces]
        if self.ips:
            out["ips"] = [ip.to_dict(version, ipam=ipam) for ip in self.ips]
        if self.routes:
            out["routes"] = [r.to_dict(version) for r in self.routes]
        out["dns"] = self.dns.to_dict()
        return out

    def _to_legacy(self, version: str) -> dict:
        out: dict = {"cniVersion": version}
        for fam, key in ((4, "ip4"), (6, "ip6")):
            ip = next((i for i in self.ips if i.version == fam), None)
            if ip is None:
                continue
            block: dict = {"ip": ip.address}
            if ip.gateway:
                block["gateway"] = ip.gateway
            rts = [r.to_dict("0.2.0") for r in self.routes if r.version == fam]
            if rts:
                block["routes"] = rts
            out[key] = block
        if not self.dns.empty():
            out["dns"] = self.dns.to_dict()
        return out

    def convert(self, version: str) -> "Result":
        """The same result re-read through `version`'s format (drops what that
        version cannot carry)."""
        return Result.from_dict(self.to_dict(version), version)

    def copy(self) -> "Result":
        return self.replace(
            interfaces=[i.replace() for i in self.interfaces], ips=[i.replace() for i in self.ips],
            routes=[r.replace() for r in self.routes],
            dns=self.dns.replace(nameservers=list(self.dns.nameservers), search=list(self.dns.search),
                                 options=list(self.dns.options)))
