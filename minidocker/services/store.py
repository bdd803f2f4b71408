"""Service records (`services/<name>.json` under the state root), their lock,
and what create allocates: a virtual IP from the service range
(MINIDOCKER_SERVICE_RANGE, default 10.96.0.0/16) and node ports from
30000-32767. The directory exists only while a service does (attach/detach
test it with one stat).

A record: Name, Id, Created, Network, NetworkID, Type, ClusterIP, Selector,
Ports [{Protocol, Port, TargetPort, NodePort}], SessionAffinity, Backend,
Endpoints [{ContainerID, Name, IP, Node}], Programmed (the plan in the kernel).
"""
from __future__ import annotations

import ipaddress
import os
import random
from pathlib import Path

from minidocker import clock, paths, state
from minidocker.errors import Conflict, MinidockerError, NotFound
from minidocker.services import spec

RANGE_ENV = "MINIDOCKER_SERVICE_RANGE"


def lock():
    """Held by every change of a service record and of its rules."""
    return state.locked(Path(paths.locks_dir()) / "services.lock")


def path(name: str):
    return Path(paths.services_dir()) / f"{name}.json"


def all_services() -> list[dict]:
    base = Path(paths.services_dir())
    out = []
    if base.is_dir():
        for entry in sorted(os.listdir(base)):
            if entry.endswith(".json"):
                svc = state.read_json(base / entry)
                if not isinstance(svc, dict) or not isinstance(svc.get("Name"), str):
                    raise state.corrupt(base / entry, "not a service record")
                out.append(svc)
    return out


def get(ref: str) -> dict:
    """A service by name (or a unique prefix of its id)."""
    if "/" not in ref and not ref.startswith("."):
        svc = state.read_json(path(ref))
        if isinstance(svc, dict):
            return svc
    found = [s for s in all_services() if s.get("Id", "").startswith(ref)] if len(ref) >= 3 else []
    if len(found) == 1:
        return found[0]
    raise NotFound(f"no such service: {ref!r}; `minidocker service ls` lists them")


def save(svc: dict) -> None:
    state.write_json(path(svc["Name"]), svc)


def delete(name: str) -> None:
    """Remove the record; the directory goes with the last one."""
    try:
        os.unlink(path(name))
    except FileNotFoundError:
        pass
    try:
        os.rmdir(paths.services_dir())
    except OSError:
        pass   # other services remain


def service_range(net=None):
    """The network's -o minidocker.network.service_range, else
    MINIDOCKER_SERVICE_RANGE, else 10.96.0.0/16."""
    from minidocker.network.networks import OPT_SERVICE_RANGE
    own = (net.options.get(OPT_SERVICE_RANGE) if net is not None else "") or ""
    if own:
        return spec.service_range(own, f"network {net.name}'s -o {OPT_SERVICE_RANGE}")
    return spec.service_range(os.environ.get(RANGE_ENV) or spec.DEFAULT_RANGE, RANGE_ENV)


def allocate_vip(taken: set[str], net=None) -> str:
    """The lowest free address of the range (its first host address is kept
    free, as Kubernetes keeps it for its own API service)."""
    net = service_range(net)
    first = int(net.network_address) + 2
    for n in range(first, int(net.broadcast_address)):
        ip = str(ipaddress.IPv4Address(n))
        if ip not in taken:
            return ip
    raise MinidockerError(f"the service range {net} is full ({len(taken)} services); "
                          f"give the network a wider -o minidocker.network.service_range or "
                          f"set {RANGE_ENV}")


def allocate_node_ports(ports: list[dict], requested: int, taken: set[tuple]) -> None:
    """A node port for every port: the requested one for the first (refused
    when another service holds it), a random free one for the others."""
    low, high = spec.NODE_PORTS
    for i, p in enumerate(ports):
        if i == 0 and requested:
            if (p["Protocol"], requested) in taken:
                raise Conflict(f"node port {requested}/{p['Protocol']} is already used by "
                               "another service; pick another --node-port or leave it out")
            p["NodePort"] = requested
        else:
            free = [n for n in range(low, high + 1) if (p["Protocol"], n) not in taken]
            if not free:
                raise MinidockerError(f"no free node port left in {low}-{high}")
            p["NodePort"] = random.choice(free)
        taken.add((p["Protocol"], p["NodePort"]))


def new_record(name: str, net, service_type: str, selector: dict, ports: list[dict],
               affinity: str, backend: str, services: list[dict], node_port: int) -> dict:
    """A record with its VIP and node ports chosen among the services'."""
    if any(s["Name"] == name for s in services):
        raise Conflict(f"the service name {name!r} is already in use: remove it or pick another")
    if service_type == "NodePort":
        allocate_node_ports(ports, node_port, {(p["Protocol"], p["NodePort"]) for s in services
                                               for p in s["Ports"] if p.get("NodePort")})
    return {"Name": name, "Id": os.urandom(32).hex(), "Created": clock.now(),
            "Network": net.name, "NetworkID": net.id, "Type": service_type,
            "ClusterIP": allocate_vip({s["ClusterIP"] for s in services}, net),
            "Selector": selector, "Ports": ports, "SessionAffinity": affinity,
            "Backend": backend, "Endpoints": [], "Programmed": None}
