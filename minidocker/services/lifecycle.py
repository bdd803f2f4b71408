"""`service create / rm` and the views of ls / inspect: every check before
anything is allocated, the record and its rules made (or removed) together
under the services lock, so a failure leaves neither behind."""
from __future__ import annotations

from minidocker.errors import MinidockerError
from minidocker.network import networks
from minidocker.services import dataplane, endpoints, spec, store


def _network(ref: str):
    net = networks.resolve(ref)
    if net.name in ("host", "none") and not net.from_file:
        raise MinidockerError(f"invalid --network {ref!r}: a service's endpoints are containers "
                              "on a network (bridge or a user network), not host or none")
    return net


def create(name: str, *, selector=(), ports=(), service_type: str = "ClusterIP",
           node_port=None, network: str = "bridge", affinity: str | None = None) -> dict:
    name = spec.name(name)
    sel = spec.selector(selector)
    port_list = spec.ports(ports)
    service_type = spec.kind(service_type)
    wanted_port = spec.node_port(node_port, service_type)
    aff = spec.affinity(affinity)
    backend = dataplane.backend()
    net = _network(network)
    store.service_range(net)
    from minidocker.services import clustered
    if clustered.applies(net.name):   # etcd's; the node agents program it
        return clustered.create(name, net, service_type, sel, port_list, aff, wanted_port)
    with store.lock():
        services = store.all_services()
        svc = store.new_record(name, net, service_type, sel, port_list, aff, backend, services,
                               wanted_port)
        svc["Endpoints"] = endpoints.select(svc)
        try:
            dataplane.program(svc, services)
            store.save(svc)
        except BaseException:
            _undo(svc, services)
            raise
    return svc


def _undo(svc: dict, others: list[dict]) -> None:
    """Take back what a failed create programmed (each backend's change is
    one transaction: it is in whole, with Programmed set, or not at all)."""
    try:
        dataplane.unprogram(svc, others)
    except MinidockerError:
        pass
    store.delete(svc["Name"])


def remove(ref: str) -> dict:
    svc = store.get(ref)
    if svc.get("Cluster"):
        from minidocker.services import clustered
        clustered.remove(svc)
        return svc
    with store.lock():
        svc = store.get(ref)
        services = store.all_services()
        dataplane.unprogram(svc, services)
        store.delete(svc["Name"])
    dataplane.forget_udp(svc, {e["IP"] for e in svc.get("Endpoints") or []})
    return svc


def port_text(svc: dict) -> str:
    return ",".join(f"{p['Port']}" + (f":{p['NodePort']}" if p.get("NodePort") else "")
                    + f"/{p['Protocol']}" for p in svc["Ports"])


def ls_row(svc: dict) -> dict:
    return {"Name": svc["Name"], "Type": svc["Type"], "ClusterIP": svc["ClusterIP"],
            "Ports": port_text(svc), "Endpoints": len(svc.get("Endpoints") or []),
            "Network": svc["Network"],
            "Selector": ",".join(f"{k}={v}" for k, v in svc["Selector"].items())}


def view(svc: dict) -> dict:
    """inspect: the record without the internal plan, with the live rules."""
    out = {k: v for k, v in svc.items() if k != "Programmed"}
    out["Rules"] = dataplane.rules(svc)
    return out
