"""What `network ls` and `network inspect` show, in Docker's field names.

Native networks come from the store, CNI file networks from the conf dir;
`resolve` finds either by name, full id or unique id prefix (native first,
as `--network NAME` does). Inspect adds, per container, a live `Debug` block
read from the kernel, which Docker does not have.
"""
from __future__ import annotations

from minidocker import records
from minidocker.errors import MinidockerError, NotFound
from minidocker.network import confnets, kernel, store
from minidocker.network.confnets import ConfNetwork
from minidocker.network.store import Network


def listing() -> list[Network | ConfNetwork]:
    """bridge, host, none, user networks (oldest first), then CNI files."""
    store.ensure_default()  # so `bridge` has its id from the first `ls` on
    native = store.all_networks()
    names = {n.name for n in native}
    # a CNI file whose name a native network has is shadowed, as for `--network NAME`
    return [*native, *(c for c in confnets.load() if c.name not in names)]


def resolve(ref: str) -> Network | ConfNetwork:
    try:
        return store.get(ref)
    except NotFound:
        pass
    return store.match_ref(confnets.load(), ref)


def ls_row(net: Network | ConfNetwork) -> dict:
    """One line of `network ls --format json` (Docker's keys)."""
    native = isinstance(net, Network)
    return {"ID": net.short_id, "Name": net.name, "Driver": net.driver, "Scope": "local",
            "IPv6": str(native and net.ipv6).lower(), "Internal": str(native and net.internal).lower(),
            "CreatedAt": net.created if native else "", "Labels": ""}


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


def _containers(eps: dict[str, dict], cni_name: str, net: Network | None, rules) -> dict:
    """Docker's Containers map (plus Debug when `rules` were read)."""
    out = {}
    for cid, ep in eps.items():
        rec = _container_record(cid)
        ifname = ep.get("IfName") or "eth0"
        sandbox = ep.get("SandboxKey") or rec.get("NetworkSettings", {}).get("SandboxKey", "")
        v4, v6 = ep.get("IPv4Address", ""), ep.get("IPv6Address", "")
        entry = {
            "Name": ep.get("Name") or rec.get("Name", "").lstrip("/"),
            "EndpointID": ep.get("EndpointID", ""),
            "MacAddress": ep.get("MacAddress", ""),
            "IPv4Address": _with_prefix(v4, net, 4) if net else v4,
            "IPv6Address": _with_prefix(v6, net, 6) if net else v6,
        }
        if rules is not None:
            entry["Debug"] = kernel.endpoint_debug(cni_name, cid, ifname, sandbox, rules,
                                                   recorded_veth=ep.get("HostVeth", ""))
        out[cid] = entry
    return out


def _conf_endpoints(conf: ConfNetwork) -> dict[str, dict]:
    """Endpoints attach.py recorded for a network of the CNI directory."""
    try:
        from minidocker.network import attach
    except ImportError:
        return {}
    return {cid: ep for _nid, cid, ep in attach.all_endpoints()
            if ep.get("Driver") == "cni" and ep.get("Network") == conf.name}


def inspect(net: Network | ConfNetwork, debug: bool = True) -> dict:
    """`network inspect`'s object for one network."""
    if isinstance(net, ConfNetwork):
        out = confnets.docker(net)
        out["Containers"] = _containers(_conf_endpoints(net), net.name, None,
                                        kernel.Rules() if debug else None)
        return out
    builtin = net.name in ("host", "none")
    rules = kernel.Rules() if debug and not builtin else None
    out = {
        "Name": net.name, "Id": net.id, "Created": net.created, "Scope": "local",
        "Driver": net.driver, "EnableIPv6": net.ipv6, "Internal": net.internal,
        "Attachable": False, "Ingress": False, "ConfigOnly": False,
        "IPAM": {"Driver": "default", "Options": {},
                 "Config": [c.docker() for c in net.ipam]},
        "Options": dict(net.options), "Labels": {},
        "Containers": {} if builtin else _containers(store.endpoints(net), kernel.cni_name(net),
                                                     net, rules),
    }
    if net.name == store.DEFAULT_NETWORK:
        out["Options"].setdefault(store.OPT_BRIDGE_NAME, net.bridge)
    if rules is not None:
        out["Debug"] = kernel.network_debug(net, rules)
    return out
