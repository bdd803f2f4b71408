"""Host ports for `-p`: who already holds one, and choosing free ones.

Before a container's ports are published every host port is checked twice:
against the port maps other endpoints recorded (any network, any driver;
found through store's host-port index, so the check costs the same however
many containers exist), and
by binding the address and port here, in the host's network namespace, with
SO_REUSEADDR off (a listening host process is found that way). Random host
ports (`-p 80`, `-P`, `-p 8000-8010:80`) are the first free ones of their
range. Callers hold driver.ports_lock() from the choice until the endpoint is recorded,
so two concurrent runs never pick the same port.
"""
from __future__ import annotations

import _socket as socket   # the C module: `socket` costs ~1.5 ms of `run` (its enums, selectors)
import errno

from cni.portmap import PortMapping
from minidocker.errors import Conflict, MinidockerError
from minidocker.network import ports as _ports, store


def _overlap(a: str, b: str) -> bool:
    """Host addresses that share a port: equal, or either is 'every address'."""
    return not a or not b or a == b or a in ("0.0.0.0", "::") or b in ("0.0.0.0", "::")


def published(protocol: str, port: int, exclude_cid: str = "") -> list[tuple[PortMapping, str, str]]:
    """(mapping, container name, container id) of every recorded endpoint
    publishing this host port (through the port index: no scan of every endpoint)."""
    out = []
    for _net, cid, ep in store.port_holders(protocol, port):
        if cid != exclude_cid:
            out += [(pm, ep.get("Name", cid[:12]), cid) for pm in recorded(ep)
                    if (pm.host_port, pm.protocol) == (port, protocol)]
    return out


def recorded(ep: dict) -> list[PortMapping]:
    """The host ports an endpoint record holds."""
    return [PortMapping(int(p["ContainerPort"]), int(p["HostPort"]), p["Protocol"], p.get("HostIp", ""))
            for p in ep.get("Ports") or []]


def _where(pm: PortMapping) -> str:
    return pm.host_ip or "0.0.0.0"


def _bind_error(host_ip: str, port: int, proto: str) -> int:
    """0 when (host_ip, port) can be bound here, else the errno."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    targets = [(socket.AF_INET6 if ":" in host_ip else socket.AF_INET, host_ip)] if host_ip else \
        [(socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")]
    for family, addr in targets:
        try:
            s = socket.socket(family, kind)
        except OSError:
            continue  # no IPv6 in this namespace: nothing can hold its port either
        try:
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, port))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL and not host_ip:
                continue
            return exc.errno or errno.EADDRINUSE
        finally:
            s.close()
    return 0


def _conflict(pm: PortMapping, taken) -> str | None:
    """taken: [(mapping, name, id)] holding host ports."""
    for other, name, cid in taken:
        if (other.host_port, other.protocol) == (pm.host_port, pm.protocol) and \
                _overlap(other.host_ip, pm.host_ip):
            return f"container {name.lstrip('/')} ({cid[:12]})"
    return None


def _holder(pm: PortMapping, exclude_cid: str) -> str | None:
    """Which other container publishes pm's host port, if one does."""
    return _conflict(pm, published(pm.protocol, pm.host_port, exclude_cid))


def check_one(pm: PortMapping, exclude_cid: str = "") -> None:
    """Raise the one-line error when pm's host port is held."""
    holder = _holder(pm, exclude_cid)
    where = f"host port {pm.host_port}/{pm.protocol} on {_where(pm)}"
    if holder:
        raise Conflict(f"{where} is already in use by {holder}; choose another host port", 125)
    err = _bind_error(pm.host_ip, pm.host_port, pm.protocol)
    if err == errno.EADDRNOTAVAIL:
        raise MinidockerError(f"cannot publish {pm}: {pm.host_ip} is not an address of this host", 125)
    if err:
        raise Conflict(f"{where} is already in use by a process on this host "
                       f"({errno.errorcode.get(err, err)}); choose another host port", 125)


def _first_free(pm: PortMapping, lo: int, hi: int, exclude_cid: str, chosen) -> int:
    for port in range(lo, hi + 1):
        cand = PortMapping(pm.container_port, port, pm.protocol, pm.host_ip)
        if _conflict(cand, chosen) or _holder(cand, exclude_cid):
            continue
        if _bind_error(pm.host_ip, port, pm.protocol) == 0:
            return port
    raise Conflict(f"no free host port for {pm.container_port}/{pm.protocol} in {lo}-{hi} on "
                   f"{_where(pm)}", 125)


def resolve(mappings: list[PortMapping], exclude_cid: str = "") -> list[PortMapping]:
    """Concrete mappings: fixed host ports checked, random ones chosen.
    Call under driver.ports_lock() and keep it until the result is recorded."""
    _ports.check_conflicts(mappings)
    out: list[PortMapping] = []
    chosen = []
    for pm in mappings:
        if pm.host_port:
            check_one(pm, exclude_cid)
            out.append(pm)
        else:
            lo, hi = pm.host_range or _ports.local_port_range()
            port = _first_free(pm, lo, hi, exclude_cid, chosen)
            out.append(PortMapping(pm.container_port, port, pm.protocol, pm.host_ip))
        chosen.append((out[-1], "this container", exclude_cid or "-"))
    return out


def check_fixed(mappings: list[PortMapping]) -> None:
    """At create time: the fixed host ports are free (nothing reserved yet)."""
    _ports.check_conflicts(mappings)
    for pm in mappings:
        if pm.host_port:
            check_one(pm)


# --- the record's form (Docker's HostConfig.PortBindings) ----------------------

def to_bindings(mappings: list[PortMapping]) -> dict:
    out: dict[str, list] = {}
    for pm in mappings:
        if pm.host_range:
            hp = f"{pm.host_range[0]}-{pm.host_range[1]}"
        else:
            hp = str(pm.host_port) if pm.host_port else ""
        out.setdefault(pm.docker_key(), []).append({"HostIp": pm.host_ip, "HostPort": hp})
    return out


def from_bindings(bindings: dict) -> list[PortMapping]:
    out = []
    for key, items in (bindings or {}).items():
        port, _, proto = key.partition("/")
        for b in items or [{"HostIp": "", "HostPort": ""}]:
            hp = b.get("HostPort") or ""
            rng = None
            if "-" in hp:
                lo, hi = hp.split("-", 1)
                rng, hp = (int(lo), int(hi)), "0"
            out.append(PortMapping(int(port), int(hp or 0), proto or "tcp", b.get("HostIp") or "", rng))
    return out


def docker_ports(mappings: list[PortMapping]) -> dict:
    """NetworkSettings.Ports: "80/tcp" -> [{"HostIp", "HostPort"}]."""
    out: dict[str, list] = {}
    for pm in mappings:
        ips = [pm.host_ip] if pm.host_ip else ["0.0.0.0", "::"]
        out.setdefault(pm.docker_key(), [])
        out[pm.docker_key()] += [{"HostIp": ip, "HostPort": str(pm.host_port)} for ip in ips]
    return out
