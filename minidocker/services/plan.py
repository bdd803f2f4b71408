"""The rules behind one service, as data, and every name they use on the
host (the one place: the backends and anything that reads our rules, such as
a wiring diagram, take them from here). Nothing here runs a tool.

A plan is JSON-able (a service record keeps the plan last programmed, so the
next change is rendered as a difference, never as a rewrite of everything):

    {"service": NAME, "vip": IP, "affinity": bool, "comment": "svc/NAME",
     "ports": [{"proto", "port", "target", "node_port", "chain", "ext_chain",
                "endpoints": [{"ip", "chain", "affinity_set"}]}]}
"""
from __future__ import annotations

import hashlib

# --- names on the host -------------------------------------------------------------
NFT_TABLE = "minidocker-services"        # `table ip minidocker-services`
NFT_SERVICE_MAP = "service-ips"          # ip . proto . port : goto svc chain
NFT_NODEPORT_MAP = "service-nodeports"   # proto . port : goto ext chain
NFT_NO_EP_MAP = "no-endpoint-services"   # ip . proto . port : goto reject
NFT_NO_EP_NODEPORT_MAP = "no-endpoint-nodeports"
NFT_REJECT = "reject-chain"
NFT_DISPATCH = "services"                # jumped to from nat prerouting and output
IPT_DISPATCH = "MINIDOCKER-SERVICES"     # nat: VIP . port -> per-service chain
IPT_NODEPORTS = "MINIDOCKER-NODEPORTS"   # nat: node ports (local destinations)
IPT_POSTROUTING = "MINIDOCKER-SVC-POSTROUTING"  # nat: masquerade of marked packets
IPT_REJECT = "MINIDOCKER-SVC-REJECT"     # filter: services without endpoints
IPT_PREFIXES = ("MDSVC-", "MDSEP-", "MDEXT-")
MASQ_MARK = 0x4000                       # as kube-proxy: hairpin and node-port traffic
COMMENT_PREFIX = "svc/"


def comment(service: str) -> str:
    return COMMENT_PREFIX + service


def _hash(*parts) -> str:
    return hashlib.sha256("/".join(str(p) for p in parts).encode()).hexdigest()[:16].upper()


def chain_names(backend: str, service: str, proto: str, port: int) -> tuple[str, str]:
    """(service chain, external chain) of one service port."""
    if backend == "iptables":   # 28 characters at most
        h = _hash(service, proto, port)
        return f"MDSVC-{h}", f"MDEXT-{h}"
    return f"svc_{service}_{proto}_{port}", f"ext_{service}_{proto}_{port}"


def endpoint_names(backend: str, service: str, proto: str, port: int, ip: str) -> tuple[str, str]:
    """(endpoint chain, affinity set) of one endpoint of one service port."""
    if backend == "iptables":   # xt_recent's list carries the chain's name
        chain = f"MDSEP-{_hash(service, proto, port, ip)}"
        return chain, chain
    tail = f"{service}_{proto}_{port}_{ip.replace('.', '_')}"
    return f"sep_{tail}", f"aff_{tail}"


def plan(service: dict, backend: str) -> dict:
    """The rules of a service record (its Endpoints as they are now)."""
    name = service["Name"]
    ips = sorted({ep["IP"] for ep in service.get("Endpoints") or []},
                 key=lambda ip: tuple(int(x) for x in ip.split(".")))
    ports = []
    for p in service["Ports"]:
        chain, ext = chain_names(backend, name, p["Protocol"], p["Port"])
        eps = []
        for ip in ips:
            ep_chain, aff = endpoint_names(backend, name, p["Protocol"], p["Port"], ip)
            eps.append({"ip": ip, "chain": ep_chain, "affinity_set": aff})
        ports.append({"proto": p["Protocol"], "port": p["Port"], "target": p["TargetPort"],
                      "node_port": p.get("NodePort") or 0, "chain": chain, "ext_chain": ext,
                      "endpoints": eps})
    return {"service": name, "vip": service["ClusterIP"], "comment": comment(name),
            "affinity": service.get("SessionAffinity") == "ClientIP", "ports": ports}


def objects(p: dict | None) -> dict[str, set]:
    """What a plan holds on the host, by kind: chains, affinity sets, and the
    map keys it owns (VIP/port with endpoints, without, node ports)."""
    out = {"chains": set(), "sets": set(), "svc": set(), "no_ep": set(), "np": set(),
           "np_no_ep": set()}
    if not p:
        return out
    for port in p["ports"]:
        key = (p["vip"], port["proto"], port["port"])
        live = bool(port["endpoints"])
        out["svc" if live else "no_ep"].add(key)
        if port["node_port"]:
            out["np" if live else "np_no_ep"].add((port["proto"], port["node_port"]))
        if live:
            out["chains"].add(port["chain"])
            if port["node_port"]:
                out["chains"].add(port["ext_chain"])
            for ep in port["endpoints"]:
                out["chains"].add(ep["chain"])
                if p["affinity"]:
                    out["sets"].add(ep["affinity_set"])
    return out
