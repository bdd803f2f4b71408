"""Services in a cluster (the cluster network `pods`): the service records
and every node's pods (address and labels) live in etcd, and every node
agent programs every service on its node from the pods of all nodes, as
kube-proxy does on every node; so a VIP answers on every node and a node
port on every node's addresses, whichever node the chosen pod is on.

- `service create/rm --network pods` write etcd (a VIP and node ports unique
  across the cluster, by one transaction) and wait for the local agent;
- a command that attaches or detaches a pod publishes its node's pods at
  once; the agent republishes them on every resync (on its lease: a dead
  node's pods go with it);
- the agent's converge() keeps the node's local records (flag Cluster) and
  rules equal to etcd; `node leave` removes them (forget_local()).
"""
from __future__ import annotations

import copy
import json
import time

from minidocker import records
from minidocker.cluster import config as cconf, nodestate
from minidocker.cluster.store import ENDPOINTS, SERVICE_IPS, SERVICES, Store
from minidocker.errors import Conflict, MinidockerError
from minidocker.network import networks, store as netstore
from minidocker.services import dataplane, store

#: The fields of a record that etcd holds (the rest is each node's own).
SHARED = ("Name", "Id", "Created", "Network", "NetworkID", "Type", "ClusterIP", "Selector",
          "Ports", "SessionAffinity")
WAIT = 15.0


def applies(net_name: str) -> bool:
    """A service of this network is the cluster's (this node joined one)."""
    return net_name == cconf.NETWORK and nodestate.node_file().exists()


def local_pods(node: str) -> list[dict]:
    """This node's containers on `pods`, with their labels."""
    try:
        net = networks.get(cconf.NETWORK)
    except MinidockerError:
        return []
    out = []
    for cid, ep in netstore.endpoints(net).items():
        try:
            record = records.load(cid)
        except MinidockerError:
            continue
        ip = (ep.get("IPv4Address") or "").split("/")[0]
        if record and ip:
            out.append({"ContainerID": cid, "Name": ep.get("Name", cid[:12]), "IP": ip, "Node": node,
                        "Labels": record["Config"].get("Labels") or {}})
    return out


def publish(etcd: Store | None = None) -> None:
    """Put this node's pods in etcd (on the agent's lease)."""
    st = nodestate.NodeState.load()
    if st is None:
        return
    etcd = etcd or Store(st.etcd)
    _publish(etcd, st.name, nodestate.read_status().get("lease"), etcd.values(ENDPOINTS + st.name))


def _publish(etcd: Store, node: str, lease_id, have: dict) -> None:
    """Put only a change: every put is an event every agent's watch sees."""
    text = json.dumps(local_pods(node))
    if have.get("", b"[]").decode() != text:   # no key and no pod: nothing to say
        etcd.put(ENDPOINTS + node, text, lease_id)


def _services(etcd: Store) -> dict[str, dict]:
    out = {}
    for name, raw in etcd.values(SERVICES).items():
        try:
            out[name] = json.loads(raw)
        except ValueError:
            continue   # not ours to read; `service ls` shows what the agent programs
    return out


def _wait(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise MinidockerError(f"the node agent did not {what} within {WAIT:.0f} s: is it running "
                          "(`minidocker node ls`)?")


def _local(name: str) -> dict | None:
    try:
        return store.get(name)
    except MinidockerError:
        return None


def create(name: str, net, service_type: str, selector: dict, ports: list[dict], affinity: str,
           node_port: int) -> dict:
    """Put the service in etcd with a VIP and node ports no other service of
    the cluster holds; returns it once this node's agent programmed it."""
    st = nodestate.NodeState.load()
    etcd = Store(st.etcd)
    for _ in range(10):    # lost races with another node's create
        existing = list(_services(etcd).values())
        svc = store.new_record(name, net, service_type, selector, copy.deepcopy(ports), affinity,
                               "", existing, node_port)
        shared = {k: svc[k] for k in SHARED}
        if etcd.create_all({SERVICES + name: json.dumps(shared), SERVICE_IPS + svc["ClusterIP"]: name}):
            break
        if name in _services(etcd):
            raise Conflict(f"the service name {name!r} is already in use in the cluster")
    else:
        raise MinidockerError(f"could not allocate a VIP for service {name!r}: other nodes kept "
                              "taking the free ones")
    _wait(lambda: (_local(name) or {}).get("Programmed"), f"program service {name}")
    return _local(name)


def remove(svc: dict) -> None:
    st = nodestate.NodeState.load()
    if st is None:
        raise MinidockerError(f"service {svc['Name']} is a cluster's, and this node left it")
    Store(st.etcd).delete(SERVICES + svc["Name"], SERVICE_IPS + svc["ClusterIP"])
    _wait(lambda: _local(svc["Name"]) is None, f"remove service {svc['Name']}")


def _selected(svc: dict, pods: list[dict]) -> list[dict]:
    eps = [{k: p[k] for k in ("ContainerID", "Name", "IP", "Node")} for p in pods
           if all((p.get("Labels") or {}).get(k) == v for k, v in svc["Selector"].items())]
    return sorted(eps, key=lambda e: tuple(int(x) for x in e["IP"].split(".")))


def converge(etcd: Store, node: str, lease_id, backend: str) -> None:
    """The agent's step: publish this node's pods, then make the local
    records and rules of the cluster's services equal to etcd."""
    published = etcd.values(ENDPOINTS)
    _publish(etcd, node, lease_id, {"": published[node]} if node in published else {})
    published[node] = json.dumps(local_pods(node)).encode()
    wanted = _services(etcd)
    pods = []
    for raw in published.values():
        try:
            pods += json.loads(raw)
        except ValueError:
            continue
    with store.lock():
        everyone = store.all_services()
        local = {s["Name"]: s for s in everyone if s.get("Cluster")}
        for name, shared in sorted(wanted.items()):
            svc = local.get(name)
            if svc is None:
                if any(s["Name"] == name for s in everyone):
                    continue   # a local service holds the name: it stays this node's
                svc = {**shared, "Backend": backend, "Cluster": True, "Endpoints": [],
                       "Programmed": None}
                everyone.append(svc)
            eps = _selected(shared, pods)
            if eps != svc["Endpoints"] or not svc["Programmed"]:
                gone = {e["IP"] for e in svc["Endpoints"]} - {e["IP"] for e in eps}
                svc["Endpoints"] = eps
                dataplane.program(svc, everyone)
                store.save(svc)
                dataplane.forget_udp(svc, gone)
        for name, svc in local.items():
            if name not in wanted:
                _drop(svc, everyone)


def _drop(svc: dict, everyone: list[dict]) -> None:
    dataplane.unprogram(svc, everyone)
    store.delete(svc["Name"])
    everyone[:] = [s for s in everyone if s["Name"] != svc["Name"]]


def forget_local() -> None:
    """`node leave`: this node's copies of the cluster's services and their rules go."""
    with store.lock():
        everyone = store.all_services()
        for svc in [s for s in everyone if s.get("Cluster")]:
            _drop(svc, everyone)
