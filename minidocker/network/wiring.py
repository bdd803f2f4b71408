"""THE model of the live wiring: the kernel as it is now (kernel.py's two
readers) joined with the container records and endpoint index, for
`network inspect`'s Debug blocks, `network diagram` and `trace`.

The model's keys are stable and documented in README.md ("The wiring
model"). What the kernel holds that no live container explains (a veth of
ours or a rule whose container is gone or whose shim died) is kept and
marked stale, never hidden.
"""
from __future__ import annotations

import re

from cni_bridge import api
from minidocker import records
from minidocker.errors import MinidockerError
from minidocker.network import kernel, networks, store

VERSION = 1
_ALIAS_RE = re.compile(r"^minidocker/(.+)/([0-9a-f]{64})/([^/]+)$")


class Live:
    """The kernel read once per command: the host namespace, our rules,
    the container namespaces (each read when first asked for) and the records."""

    def __init__(self):
        self.host = kernel.Namespace()
        self.rules = kernel.Rules()
        self._ns: dict[str, kernel.Namespace] = {}
        self._records: dict[str, dict] | None = None

    def ns(self, path: str) -> kernel.Namespace:
        if path not in self._ns:
            self._ns[path] = kernel.Namespace(path)
        return self._ns[path]

    def records(self) -> dict[str, dict]:
        if self._records is None:
            self._records = {}
            for cid in records.ids():
                try:
                    rec = records.load(cid)
                except MinidockerError:
                    continue   # a corrupt record is reported by the container commands
                if rec:
                    self._records[cid] = records.refresh(rec)
        return self._records


def _rule_view(rule: dict) -> dict:
    """A rule, or an nftables set element (with its set, key and data)."""
    keys = ("backend", "family", "table", "chain", "handle", "comment", "text", "set", "key", "data")
    return {k: rule[k] for k in keys if k in rule}


def _publishes(rule: dict, hport, proto: str) -> bool:
    """The rule (iptables) or map element (nftables) that DNATs host port
    hport/proto."""
    if "set" in rule:
        return rule["set"] in ("ports", "ports_any") and rule["key"].endswith(f"{proto} . {hport}")
    return ("dnat" in rule["text"].lower() and re.search(rf"dport {hport}\b", rule["text"]) is not None
            and f" {proto} " in f" {rule['text']} ")


def _addr(value) -> str:
    value = value[0] if isinstance(value, list) else (value or "")
    return str(value).split("/")[0]


def _host_veth(live: Live, net_name: str, cid: str, ifname: str, sandbox: str, recorded: str) -> dict:
    """cni-bridge's veth, found by its name and alias; another plugin's by
    the name the endpoint recorded (if its peer is the container's ifname)."""
    link = live.host.by_name(api.host_veth_name(net_name, cid, ifname))
    if link.get("alias") == api.veth_alias(net_name, cid, ifname):
        return link
    other = live.host.by_name(recorded)
    if other.get("kind") == "veth" and live.ns(sandbox).links.get(other["peer"], {}).get("name") == ifname:
        return other
    return {}


def _ports(ep: dict, rules: list[dict], ip: str) -> list[dict]:
    out = []
    for p in ep.get("Ports") or []:
        hport, proto = p.get("HostPort"), p.get("Protocol") or "tcp"
        out.append({"host_ip": p.get("HostIp") or "0.0.0.0", "host_port": hport, "proto": proto,
                    "container_ip": ip, "container_port": p.get("ContainerPort"),
                    "rules": [_rule_view(r) for r in rules if _publishes(r, hport, proto)]})
    return out


def _container(cid: str, rec: dict | None, ep: dict) -> dict:
    state = (rec or {}).get("State") or {}
    return {"id": cid, "short_id": cid[:12],
            "name": ((rec or {}).get("Name") or ep.get("Name") or "").lstrip("/"),
            "running": bool(state.get("Running")), "record": rec is not None}


def endpoint(live: Live, net_name: str, cid: str, ep: dict) -> dict:
    """One container's attachment to one network, as the kernel has it."""
    rec = live.records().get(cid)
    ifname = ep.get("IfName") or "eth0"
    sandbox = ep.get("SandboxKey") or ((rec or {}).get("NetworkSettings") or {}).get("SandboxKey", "")
    inside = live.ns(sandbox) if sandbox else kernel.Namespace("/nonexistent")
    veth = _host_veth(live, net_name, cid, ifname, sandbox, ep.get("HostVeth", ""))
    cif = inside.links.get(veth.get("peer", 0)) or inside.by_name(ifname)
    rules = live.rules.owned_by(api.owner_comment(net_name, cid, ifname))
    ip4 = _addr(ep.get("IPv4Address"))
    stale = []
    if rec is None:
        stale.append("no container record")
    elif not rec["State"].get("Running"):
        stale.append("container not running")
    if not inside.readable:
        stale.append("namespace gone")
    if not veth:
        stale.append("host veth gone")
    elif not cif or cif.get("index") != veth.get("peer"):
        stale.append("veth peer gone")
    sharers = [{"id": r["Id"], "short_id": r["Id"][:12], "name": r.get("Name", "").lstrip("/")}
               for r in live.records().values()
               if str((r.get("HostConfig") or {}).get("NetworkMode", "")).startswith("container:")
               and r["Id"] != cid and r["State"].get("Running")
               and (r.get("NetworkSettings") or {}).get("SandboxKey") == sandbox]
    return {
        "container": _container(cid, rec, ep), "ifname": ifname, "namespace": sandbox,
        "interface": {"name": (cif or {}).get("name", ""), "ifindex": (cif or {}).get("index", 0),
                      "peer_ifindex": (cif or {}).get("peer", 0), "mac": (cif or {}).get("mac", ""),
                      "addresses": (cif or {}).get("addresses", []),
                      "default_route": {"v4": inside.default_route[4], "v6": inside.default_route[6]}},
        "host_veth": {"name": veth.get("name", ""), "ifindex": veth.get("index", 0),
                      "peer_ifindex": veth.get("peer", 0),
                      "master": live.host.links.get(veth.get("master", 0), {}).get("name", "")},
        "ipv4": ip4, "ipv6": _addr(ep.get("IPv6Address")),
        "ports": _ports(ep, rules, ip4),
        "rules": [_rule_view(r) for r in rules],
        "sharers": sharers,
        "stale": bool(stale), "stale_why": stale,
    }


def network(live: Live, net) -> dict:
    """One network: its bridge, policies, shared rules and endpoints."""
    bridge = live.host.by_name(net.bridge)
    native = not net.from_file
    eps = [endpoint(live, net.name, cid, ep) for cid, ep in store.endpoints(net).items()]
    return {
        "name": net.name, "id": net.id, "driver": net.driver,
        "bridge": {"name": net.bridge, "ifindex": bridge.get("index", 0),
                   "addresses": bridge.get("addresses", []), "present": bool(bridge)},
        "subnets": [c.subnet for c in net.ipam],
        "masquerade": native and not net.internal, "internal": net.internal,
        "isolation": native, "icc": net.icc,
        "rules": [_rule_view(r) for r in live.rules.owned_by(api.network_prefix(net.name))],
        "endpoints": eps,
    }


def _uplinks(live: Live, bridges: set[str]) -> list[dict]:
    return [{"name": l["name"], "ifindex": l["index"], "mac": l["mac"], "addresses": l["addresses"]}
            for l in sorted(live.host.links.values(), key=lambda l: l["index"])
            if l["addresses"] and l["name"] != "lo" and l["name"] not in bridges
            and not l["alias"].startswith("minidocker/") and not l["master"]]


def _stale(live: Live, nets: list[dict], names: set[str]) -> dict:
    """Veths and rules of ours on the listed networks that no endpoint explains."""
    known_alias = {api.veth_alias(n["name"], e["container"]["id"], e["ifname"]) for n in nets for e in n["endpoints"]}
    known_rules = {api.owner_comment(n["name"], e["container"]["id"], e["ifname"])
                   for n in nets for e in n["endpoints"]} | {api.network_prefix(n) for n in names}
    veths = []
    for l in live.host.links.values():
        m = _ALIAS_RE.match(l["alias"])
        if m and m.group(1) in names and l["alias"] not in known_alias:
            veths.append({"name": l["name"], "ifindex": l["index"], "peer_ifindex": l["peer"],
                          "network": m.group(1), "container_id": m.group(2), "ifname": m.group(3)})
    rules = [_rule_view(r) for n in names for r in live.rules.under(api.network_prefix(n))
             if r["comment"] not in known_rules]
    return {"veths": veths, "rules": rules}


def _cluster(nets: list) -> dict | None:
    if not any(n.options.get(networks.OPT_NO_MASQ) for n in nets):
        return None
    from minidocker.cluster import node   # the cluster network: its peers, routes, FDB
    return node.describe()


def _services() -> list[dict]:
    """The services hook: `minidocker.services.describe()` -> [{"name",
    "vip", "port", "proto", "backends": [...], "rules": [...]}], once the
    services package exists and offers it; [] until then."""
    try:
        from minidocker import services
    except ImportError:
        return []
    describe = getattr(services, "describe", None)
    return list(describe()) if describe else []


def build(nets: list | None = None, live: Live | None = None, cluster: bool = True) -> dict:
    """The whole model (README: "The wiring model"); `cluster=False` leaves
    out the cluster's block (it asks etcd: trace does not need it)."""
    live = live or Live()
    every = networks.listing()
    chosen = [n for n in (every if nets is None else nets) if n.name not in ("host", "none")]
    model_nets = [network(live, n) for n in chosen]
    names = {n.name for n in chosen}
    return {"version": VERSION,
            "host": {"uplinks": _uplinks(live, {n.bridge for n in every}),
                     "default_route": {"v4": live.host.default_route[4], "v6": live.host.default_route[6]}},
            "networks": model_nets, "stale": _stale(live, model_nets, names),
            "cluster": _cluster(chosen) if cluster else None, "services": _services()}


# --- `network inspect`'s Debug blocks, from the same model ----------------------

def endpoint_debug(e: dict) -> dict:
    return {"HostVeth": e["host_veth"]["name"], "HostVethIfindex": e["host_veth"]["ifindex"],
            "ContainerIfname": e["interface"]["name"] or e["ifname"],
            "ContainerIfindex": e["host_veth"]["peer_ifindex"] or e["interface"]["ifindex"],
            "SandboxKey": e["namespace"], "Rules": [r["text"] for r in e["rules"]],
            "Stale": e["stale_why"]}


def network_debug(n: dict) -> dict:
    return {"Bridge": n["bridge"]["name"], "BridgeIfindex": n["bridge"]["ifindex"],
            "CNINetwork": n["name"], "Rules": [r["text"] for r in n["rules"]]}
