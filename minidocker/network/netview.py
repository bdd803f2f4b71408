"""What `network ls` and `network inspect` show, in Docker's field names.

Networks come from networks.py (native records and CNI files alike).
Inspect adds, per container, a live `Debug` block taken from the wiring
model (wiring.py, the one view of the kernel), which Docker does not have.
"""
from __future__ import annotations

from minidocker import records
from minidocker.errors import MinidockerError
from minidocker.network import networks, store, wiring
from minidocker.network.networks import Network


def ls_row(net: Network) -> dict:
    """One line of `network ls --format json` (Docker's keys)."""
    return {"ID": net.short_id, "Name": net.name, "Driver": net.driver, "Scope": "local",
            "IPv6": str(net.ipv6).lower(), "Internal": str(net.internal).lower(),
            "CreatedAt": net.created, "Labels": ""}


def _container_record(cid: str) -> dict:
    try:
        return records.load(cid) or {}
    except MinidockerError:
        return {}  # a corrupt record is reported by the container commands


def _with_prefix(addr, net: Network, version: int) -> str:
    """Docker shows addresses with their prefix length (10.0.0.2/24)."""
    if not addr:
        return ""
    addr = addr[0] if isinstance(addr, list) else str(addr)
    if "/" in addr:
        return addr
    import ipaddress
    for cfg in net.ipam:
        sub = ipaddress.ip_network(cfg.subnet)
        if sub.version == version and ipaddress.ip_address(addr) in sub:
            return f"{addr}/{sub.prefixlen}"
    return addr


def _containers(net: Network, live: dict | None) -> dict:
    """Docker's Containers map (plus Debug from the live model, when read)."""
    out = {}
    for cid, ep in store.endpoints(net).items():
        rec = _container_record(cid)
        v4, v6 = ep.get("IPv4Address", ""), ep.get("IPv6Address", "")
        entry = {
            "Name": ep.get("Name") or rec.get("Name", "").lstrip("/"),
            "EndpointID": ep.get("EndpointID", ""),
            "MacAddress": ep.get("MacAddress", ""),
            "IPv4Address": v4 if net.from_file else _with_prefix(v4, net, 4),
            "IPv6Address": v6 if net.from_file else _with_prefix(v6, net, 6),
        }
        if live is not None and cid in live:
            entry["Debug"] = wiring.endpoint_debug(live[cid])
        out[cid] = entry
    return out


def _live(net: Network) -> dict:
    """The network's part of the wiring model, plus its endpoints by container id."""
    model = wiring.network(wiring.Live(), net)
    return {"": model, **{e["container"]["id"]: e for e in model["endpoints"]}}


def _file_network(net: Network, live) -> dict:
    """`network inspect`'s shape for a CNI-file network."""
    return {
        "Name": net.name, "Id": net.id, "Created": "", "Scope": "local", "Driver": "cni",
        "EnableIPv6": False, "Internal": False,
        "IPAM": {"Driver": "cni", "Config": [c.docker() for c in net.ipam]},
        "Options": {"cni.config_file": net.source, "cni.version": net.cni_version,
                    "cni.plugins": ",".join(net.plugins)},
        "ConfigFile": net.source, "ConfigDigest": net.digest, "Plugins": net.plugins,
        "Containers": _containers(net, live),
    }


def inspect(net: Network, debug: bool = True) -> dict:
    """`network inspect`'s object for one network."""
    if net.from_file:
        return _file_network(net, _live(net) if debug else None)
    builtin = net.name in ("host", "none")
    live = _live(net) if debug and not builtin else None
    out = {
        "Name": net.name, "Id": net.id, "Created": net.created, "Scope": "local",
        "Driver": net.driver, "EnableIPv6": net.ipv6, "Internal": net.internal,
        "Attachable": False, "Ingress": False, "ConfigOnly": False,
        "IPAM": {"Driver": "default", "Options": {},
                 "Config": [c.docker() for c in net.ipam]},
        "Options": dict(net.options), "Labels": {},
        "Containers": {} if builtin else _containers(net, live),
    }
    if net.name == networks.DEFAULT_NETWORK:
        out["Options"].setdefault(networks.OPT_BRIDGE_NAME, net.bridge)
    if live is not None:
        out["Debug"] = wiring.network_debug(live[""])
    if net.options.get(networks.OPT_NO_MASQ) and debug:
        from minidocker.cluster import node   # the cluster network: its peers, routes, FDB
        cluster = node.describe()
        if cluster is not None:
            out["Cluster"] = cluster
    return out
