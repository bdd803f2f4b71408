"""`network connect / disconnect`: a running container gains or loses an
interface (eth1, eth2, ...) on a network, through network/attach.py.

Both run under the container's lock, the one its teardown takes, so a
container that exits meanwhile is either torn down before (and refused here
as not running) or after (and its teardown detaches the new endpoint too).
The container record's NetworkSettings.Networks follows, so `inspect` of the
container agrees with `network inspect`, and its
NetworkingConfig.EndpointsConfig, so `start` attaches it again.
"""
from __future__ import annotations

import re

from minidocker import records
from minidocker.errors import Conflict, MinidockerError
from minidocker.network import attach, networks, settings, store

SHARED_MODES = ("host", "none")


def _target(network_ref: str) -> networks.Network:
    """The network (native or CNI file)."""
    net = networks.resolve(network_ref)
    if net.name in SHARED_MODES and not net.from_file:
        raise MinidockerError(f"cannot connect a container to network {net.name!r}: it is a "
                              "network mode (`run --network host|none`), not a network")
    return net


def _endpoint_on(cid: str, net: networks.Network) -> dict | None:
    for ep in store.endpoints_of(cid):
        if ep.get("NetworkID") == net.id or (net.from_file and ep.get("Network") == net.name
                                             and ep.get("Driver") == networks.CNI_DRIVER):
            return ep
    return None


def _next_ifname(cid: str) -> str:
    """The lowest ethN the container does not have yet."""
    used = set()
    for ep in store.endpoints_of(cid):
        m = re.fullmatch(r"eth(\d+)", ep.get("IfName") or "")
        if m:
            used.add(int(m.group(1)))
    n = 0
    while n in used:
        n += 1
    return f"eth{n}"


def _name(record: dict) -> str:
    return record["Name"].lstrip("/")


def connect(network_ref: str, container_ref: str, *, ip=None, ip6=None,
            aliases=(), mac=None) -> dict:
    net = _target(network_ref)
    cid = records.find(container_ref)["Id"]
    with records.locked(cid):
        record = records.find(cid)
        if not record["State"].get("Running"):
            raise MinidockerError(f"container {_name(record)} is not running; start it before "
                                  "connecting it to a network")
        mode = record["HostConfig"].get("NetworkMode", "")
        if mode in SHARED_MODES or mode.startswith("container:"):
            raise MinidockerError(f"container {_name(record)} runs with --network {mode}: it has "
                                  "no network namespace of its own to connect")
        if _endpoint_on(cid, net):
            raise Conflict(f"container {_name(record)} is already connected to network {net.name}")
        try:
            ep = attach.attach(record, net, ifname=_next_ifname(cid), ip=ip, ip6=ip6,
                               aliases=list(aliases), mac=mac)
        except MinidockerError as exc:
            exc.code = 1  # attach speaks for `run` (125); here Docker exits 1
            raise
        record.setdefault("NetworkSettings", {}).setdefault("Networks", {})[net.name] = \
            settings.endpoint_settings(ep, net.id)
        ipam = {k: v for k, v in (("IPv4Address", ip), ("IPv6Address", ip6)) if v}
        record.setdefault("NetworkingConfig", {}).setdefault("EndpointsConfig", {})[net.name] = \
            settings.endpoint_config(ipam, aliases, mac, net.id)
        records.save(record)
        return ep


def disconnect(network_ref: str, container_ref: str) -> None:
    net = _target(network_ref)
    cid = records.find(container_ref)["Id"]
    with records.locked(cid):
        record = records.find(cid)
        if _endpoint_on(cid, net) is None:
            raise MinidockerError(f"container {_name(record)} is not connected to network {net.name}")
        attach.detach(record, net)
        networks_ = record.setdefault("NetworkSettings", {}).setdefault("Networks", {})
        configs = record.setdefault("NetworkingConfig", {}).setdefault("EndpointsConfig", {})
        dropped = [d.pop(net.name, None) for d in (networks_, configs)]
        if any(x is not None for x in dropped):
            records.save(record)
