"""Which running containers a service selects, and sync(): recompute every
service's endpoints on a network and reprogram those that changed.

Daemonless: the command that changes a container's attachments (network
attach/detach: start, stop, exit in the shim's teardown, rm, network
connect/disconnect) calls sync, which runs under the services lock (taken
after the container's lock, never the other way round)."""
from __future__ import annotations

import os

from minidocker import paths, records
from minidocker.errors import MinidockerError
from minidocker.network import networks, store as netstore
from minidocker.services import dataplane, store


def _ip(text: str) -> str:
    return (text or "").split("/")[0]


def select(svc: dict) -> list[dict]:
    """The endpoints of a service: containers attached to its network whose
    labels (record Config.Labels) carry every selector KEY=VALUE."""
    net = networks.Network(name=svc["Network"], id=svc["NetworkID"])
    out = []
    for cid, ep in netstore.endpoints(net).items():
        ip = _ip(ep.get("IPv4Address"))
        if not ip:
            continue
        try:
            record = records.load(cid)
        except MinidockerError:
            continue   # a corrupt record is `system prune`'s to report
        labels = (record or {}).get("Config", {}).get("Labels") or {}
        if record and all(labels.get(k) == v for k, v in svc["Selector"].items()):
            out.append({"ContainerID": cid, "Name": ep.get("Name", cid[:12]), "IP": ip,
                        "Node": os.uname().nodename})
    return sorted(out, key=lambda e: tuple(int(x) for x in e["IP"].split(".")))


def refresh(svc: dict, others: list[dict]) -> bool:
    """Recompute one service's endpoints; program and save when they changed."""
    eps = select(svc)
    if eps == svc.get("Endpoints") and svc.get("Programmed"):
        return False
    gone = {e["IP"] for e in svc.get("Endpoints") or []} - {e["IP"] for e in eps}
    svc["Endpoints"] = eps
    dataplane.program(svc, others)
    store.save(svc)
    dataplane.forget_udp(svc, gone)
    return True


def sync(network_id: str | None = None) -> None:
    if not os.path.isdir(paths.services_dir()):
        return
    with store.lock():
        services = store.all_services()
        for svc in services:
            if svc.get("Cluster"):
                continue   # the cluster's: the node agent programs it from etcd
            if network_id is None or svc["NetworkID"] == network_id:
                refresh(svc, services)
    if any(s.get("Cluster") and network_id in (None, s["NetworkID"]) for s in services):
        from minidocker.services import clustered
        clustered.publish()   # the other nodes' agents learn of this node's pods now
