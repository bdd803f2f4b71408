"""Attaching a container to a network and detaching it: the one place.

`run` (network modes), `network connect/disconnect`, the teardown and
`system prune` come here with a resolved network (networks.py). The
executor runs the network's list (driver.py) with the `portMappings`,
`ips` and `mac` capability args and caches the result; the endpoint record
(store.add_endpoint) keeps what `network inspect` and a person debugging
need: host veth and its ifindex, the container's ifindex, namespace path,
MAC, addresses, the CNI result, port maps, aliases, the comment of its
firewall rules.

    ep = attach(record, net, ifname="eth0", ports=[...], ip=None, ip6=None,
                aliases=[], mac=None)
    detach(record, net)      # idempotent
"""
from __future__ import annotations

import os
import sys

from cni.portmap import PortMapping
from minidocker import paths, state
from minidocker.errors import Conflict, MinidockerError, NotFound
from minidocker.network import addresses, driver, hostsfile, networks, publish, store
from minidocker.sha import sha256


def _name(container: dict) -> str:
    return container["Name"].lstrip("/")


def attach(container: dict, net: networks.Network, *, ifname: str = "eth0",
           ports: list[PortMapping] | None = None, ip: str | None = None,
           ip6: str | None = None, aliases: list[str] | None = None,
           mac: str | None = None) -> dict:
    """Connect a container (its record; SandboxKey pinned) to a network:
    executor ADD, then the endpoint record. Host ports are checked and
    random ones chosen here. Raises MinidockerError (code 125) and leaves
    nothing behind on failure."""
    from cni.errors import CNIError
    from minidocker.network.cni import RuntimeConf
    from minidocker.network.cni.executor import failure_text
    cid = container["Id"]
    netns = (container.get("NetworkSettings") or {}).get("SandboxKey") or ""
    if not netns:
        raise MinidockerError(f"container {cid[:12]} has no network namespace to attach", 125)
    if store.endpoint(net, cid) is not None:
        raise Conflict(f"container {_name(container)} is already attached to network {net.name}", 125)
    ip, ip6 = addresses.check(net, ip=ip, ip6=ip6, exclude_cid=cid)
    ports = list(ports or [])
    with driver.ports_lock() if ports else state.unlocked(), \
            driver.network_lock(net, shared=True):
        if not net.from_file and networks.by_id(net.id) is None:
            # `network rm` won the race for the lock: attaching now would
            # bring back a bridge and an endpoint of a network that is gone
            raise NotFound(f"network {net.name} was removed while container "
                           f"{_name(container)} was being attached to it", 125)
        resolved = publish.resolve(ports, cid) if ports else []
        caps: dict = {}
        if resolved:
            caps["portMappings"] = [pm.to_cni() for pm in resolved]
        if ip or ip6:
            caps["ips"] = [a for a in (ip, ip6) if a]
        if mac:
            caps["mac"] = mac
        try:
            nlist = driver.conflist(net)
            result = driver.executor().add(nlist, RuntimeConf(cid, netns, ifname, capability_args=caps))
        except CNIError as err:
            raise MinidockerError(f"cannot attach container {_name(container)} to "
                                  f"network {net.name}: {failure_text(err)}", 125) from None
        try:
            ep = _endpoint(container, net, nlist, result, ifname, netns, resolved, aliases or [])
            store.add_endpoint(net, cid, ep)
        except BaseException:
            # every ADD is followed by a DEL: nothing may outlive a failed attach
            try:
                driver.executor().delete(nlist, RuntimeConf(cid, netns, ifname))
            except CNIError:
                pass
            store.remove_endpoint(net, cid)
            raise
    hostsfile.follow(net, cid, ifname, joined=True)
    _names_follow(net, container if ifname == "eth0" else None)
    return ep


def _names_follow(net: networks.Network, primary: dict | None = None) -> None:
    """The network's DNS server runs while it has endpoints (a container
    whose first network it is asks it: primary); the services selecting its
    containers recompute their endpoints (one stat when there is none:
    nothing of services/ is imported on run's path). Failures here are
    reported, never undo the container's own change."""
    from minidocker.dns import lifecycle
    try:
        lifecycle.follow(net)
        if primary is not None:
            lifecycle.point_resolv_conf(primary, net)
    except (MinidockerError, OSError) as exc:
        print(f"minidocker: DNS of network {net.name}: {exc}", file=sys.stderr)
    _services_follow(net)


def _services_follow(net: networks.Network) -> None:
    """The services selecting containers of this network recompute their
    endpoints. Only when a service exists: otherwise this is one stat, and
    nothing of services/ is imported (run's path)."""
    if not os.path.isdir(paths.services_dir()):
        return
    from minidocker import services
    try:
        services.sync(net.id)
    except MinidockerError as exc:  # the container's own change stands
        print(f"minidocker: services on network {net.name}: {exc}", file=sys.stderr)


def _endpoint(container, net, nlist, result, ifname, netns, ports, aliases) -> dict:
    from cni_bridge import api
    cid = container["Id"]
    res = result.to_dict(result.cni_version)
    ifaces = res.get("interfaces") or []
    cidx = next((i for i, f in enumerate(ifaces) if f.get("name") == ifname and f.get("sandbox")), None)
    ips = [x for x in res.get("ips") or [] if cidx is None or x.get("interface") in (None, cidx)]
    v4 = next((x for x in ips if ":" not in x["address"]), None)
    v6 = next((x for x in ips if ":" in x["address"]), None)
    mac = ifaces[cidx]["mac"] if cidx is not None and ifaces[cidx].get("mac") else ""
    host_veth, host_index, cont_index = _link_facts(ifaces, cidx, ifname, netns)
    backend = driver.firewall_backend(nlist)
    return {
        "Name": _name(container), "ContainerID": cid, "Hostname":
            (container.get("Config") or {}).get("Hostname", ""),
        "Network": net.name, "NetworkID": net.id, "Driver": net.driver,
        "EndpointID": sha256(f"{net.id}/{cid}/{ifname}".encode()).hexdigest(),
        "IfName": ifname, "SandboxKey": netns, "MacAddress": mac,
        "IPv4Address": v4["address"] if v4 else "", "Gateway": (v4 or {}).get("gateway", ""),
        "IPv6Address": v6["address"] if v6 else "", "IPv6Gateway": (v6 or {}).get("gateway", ""),
        "HostVeth": host_veth, "HostVethIfindex": host_index, "ContainerIfindex": cont_index,
        "Ports": [{"HostIp": pm.host_ip, "HostPort": pm.host_port, "ContainerPort": pm.container_port,
                   "Protocol": pm.protocol} for pm in ports],
        "Aliases": list(aliases),
        "FirewallBackend": backend,
        "FirewallComment": api.owner_comment(net.name, cid, ifname) if backend else "",
        "CNIResult": res,
    }


def _link_facts(ifaces: list[dict], cidx, ifname: str, netns: str) -> tuple[str, int, int]:
    """(host veth name, its ifindex, the container interface's ifindex)."""
    from cni_bridge import api
    host_name, host_index, cont_index = "", 0, 0
    try:
        for f in reversed(ifaces[:cidx] if cidx is not None else ifaces):
            if f.get("sandbox"):
                continue
            link = api.link(f.get("name"))
            if link and link["kind"] == "veth":
                host_name, host_index = link["name"], link["index"]
                break
        link = api.link(ifname, netns)
        cont_index = link["index"] if link else 0
    except OSError:
        pass  # facts for people, never a reason to fail an attach
    return host_name, host_index, cont_index


def detach(container: dict, net: networks.Network) -> None:
    """Disconnect a container from a network: executor DEL (cached result and
    capability args), endpoint record gone; cni-bridge removes a native
    network's bridge with its last port. Idempotent."""
    from cni.errors import CNIError
    from minidocker.network.cni import RuntimeConf
    cid = container["Id"]
    ep = store.endpoint(net, cid) or {}
    ifname = ep.get("IfName") or "eth0"
    netns = ep.get("SandboxKey") or (container.get("NetworkSettings") or {}).get("SandboxKey") or ""
    ex = driver.executor()
    rt = RuntimeConf(cid, netns, ifname)
    try:
        nlist = ex.cached_config(net.name, rt)
        if nlist is None:
            if not ep:
                return  # never attached, nothing cached: nothing to undo
            nlist = driver.conflist(net)
        ex.delete(nlist, rt)
    except CNIError as err:
        raise MinidockerError(f"cannot detach container {_name(container)} from "
                              f"network {net.name}: {err}") from None
    store.remove_endpoint(net, cid)
    hostsfile.follow(net, cid, ifname, joined=False)
    _names_follow(net)


def detach_all(container: dict) -> None:
    """Every network the container is attached to (the teardown); keeps going
    past a failing network and raises the first error at the end."""
    first = None
    for ep in store.endpoints_of(container["Id"]):
        try:
            detach(container, store.network_of(ep))
        except MinidockerError as exc:
            first = first or exc
    if first:
        raise first
