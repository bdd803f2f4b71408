"""What the DNS server of a network knows: its containers (name, aliases,
short id, hostname -> addresses; addresses -> name) and its services (name ->
VIP), read from the endpoint records and service records, and rebuilt only
when their directories change (one stat each per query). Also the host's
resolvers, the forwarding targets."""
from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

from minidocker import paths, state
from minidocker.network import networks, store

RESOLVED_STUB = "127.0.0.53"
RESOLVED_UPSTREAMS = "/run/systemd/resolve/resolv.conf"


def upstreams(path: str | None = None) -> list[str]:
    """The host's nameservers; behind systemd-resolved's stub (127.0.0.53),
    the servers it uses itself, as Docker does."""
    path = path or paths.host_resolv_conf()
    servers = _nameservers(path)
    if RESOLVED_STUB in servers and os.path.exists(RESOLVED_UPSTREAMS):
        servers = _nameservers(RESOLVED_UPSTREAMS) or servers
    return servers


def search_domains() -> list[str]:
    """The host's search domains (containers copy them after ours)."""
    try:
        with open(paths.host_resolv_conf()) as fh:
            text = fh.read()
    except OSError:
        return []
    return [d.rstrip(".").lower() for line in re.findall(r"^\s*search\s+(.*)$", text, re.M)
            for d in line.split()]


def _nameservers(path: str) -> list[str]:
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError:
        return []
    return re.findall(r"^\s*nameserver\s+(\S+)", text, re.M)


def reverse_name(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer.lower()


class Zone:
    """The names of one network, kept current by refresh()."""

    def __init__(self, net_id: str):
        self.net = networks.Network(name="", id=net_id)
        self.forward: dict[str, tuple[list[str], list[str]]] = {}   # name -> (v4, v6)
        self.reverse: dict[str, str] = {}
        self.stamp = None

    def _stamp(self):
        out = []
        for d in (Path(paths.networks_dir()) / self.net.id / "endpoints", Path(paths.services_dir())):
            try:
                st = os.stat(d)
                out.append((st.st_mtime_ns, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def refresh(self) -> None:
        stamp = self._stamp()
        if stamp == self.stamp:
            return
        self.stamp = stamp
        fwd: dict[str, tuple[list[str], list[str]]] = {}
        rev: dict[str, str] = {}
        for cid, ep in store.endpoints(self.net).items():
            v4 = [ep["IPv4Address"].split("/")[0]] if ep.get("IPv4Address") else []
            v6 = [ep["IPv6Address"].split("/")[0]] if ep.get("IPv6Address") else []
            names = [ep.get("Name", ""), *(ep.get("Aliases") or []), cid[:12], ep.get("Hostname", "")]
            for n in filter(None, names):
                a, b = fwd.setdefault(n.lower(), ([], []))
                a += [x for x in v4 if x not in a]
                b += [x for x in v6 if x not in b]
            for ip in v4 + v6:
                rev[reverse_name(ip)] = ep.get("Name") or cid[:12]
        for svc in self._services():
            fwd.setdefault(svc["Name"].lower(), ([], []))[0].append(svc["ClusterIP"])
        self.forward, self.reverse = fwd, rev

    def _services(self) -> list[dict]:
        base = Path(paths.services_dir())
        out = []
        try:
            entries = os.listdir(base)
        except OSError:
            return out
        for entry in entries:
            if entry.endswith(".json"):
                try:
                    svc = state.read_json(base / entry)
                except Exception:  # noqa: BLE001 - a bad record is the service command's to report
                    continue
                if isinstance(svc, dict) and svc.get("NetworkID") == self.net.id:
                    out.append(svc)
        return out
