"""Services: a virtual IP (ClusterIP) and optionally a node port in front of
the running containers whose labels match a selector, load-balanced per new
connection by rules this package owns (nftables maps or iptables chains).

    spec.py       the command line's values, checked (selector, ports, type)
    store.py      service records (state root), VIP and node-port allocation
    endpoints.py  which containers a service selects; sync(): THE entry point
    plan.py       the rules of one service as data, and every name on the host
    nft.py        the nftables rendering (verdict maps, numgen)
    iptables.py   the iptables rendering (per-service chains, statistic)
    dataplane.py  picks the renderer, flushes UDP conntrack of gone endpoints

Kept tiny: attach/detach import this package only when a service exists.
"""
from __future__ import annotations


def sync(network_id: str | None = None) -> None:
    """Recompute the endpoints of the services on network_id (all when None)
    and reprogram those whose endpoints changed, under the services lock.
    Called by whatever changes a container's attachments (attach, detach:
    start, stop, exit, rm, network connect/disconnect) and by prune."""
    from minidocker.services import endpoints
    endpoints.sync(network_id)


def describe() -> list[dict]:
    """The wiring model's hook (network/wiring.py): one entry per service
    port, {"name", "vip", "port", "proto", "backends", "rules"}, the rules as
    the kernel holds them."""
    import os
    from minidocker import paths
    if not os.path.isdir(paths.services_dir()):
        return []
    from minidocker.services import dataplane, store
    out = []
    for svc in store.all_services():
        rules = dataplane.rules(svc)
        for p in svc["Ports"]:
            out.append({"name": svc["Name"], "vip": svc["ClusterIP"], "port": p["Port"],
                        "proto": p["Protocol"], "node_port": p.get("NodePort") or 0,
                        "backends": [f"{e['Name']} {e['IP']}:{p['TargetPort']} ({e['Node']})"
                                     for e in svc.get("Endpoints") or []],
                        "rules": rules})
    return out
