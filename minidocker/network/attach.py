"""Attaching a container to a network and detaching it: the one place.

`run` (through the bridge modes), `network connect/disconnect` and
`network rm` all come here. A native network (a store record) runs the
conflist generated from its record (`conflist()`: cni-bridge with the
record's bridge, subnets and options); a network of the CNI configuration
directory runs its own chain. Either way the executor does ADD/DEL with the
`portMappings`, `ips` and `mac` capability args and caches the result, and
the endpoint record (store.add_endpoint) keeps what `network inspect` and a
person debugging need: host veth and its ifindex, the container's ifindex,
namespace path, MAC, addresses, the CNI result, port maps, aliases, the
comment of its firewall rules.

    ep = attach(record, "bridge", ifname="eth0", ports=[...], ip=None, ip6=None,
                aliases=[], mac=None)
    detach(record, "bridge")      # idempotent
"""
from __future__ import annotations

import hashlib
import ipaddress
import os

from minidocker import paths, state
from minidocker.errors import Conflict, MinidockerError, NotFound
from minidocker.network import store
from minidocker.network.ports import PortMapping

CNI_DRIVER = "cni"
PLUGIN = "cni-bridge"
CNI_VERSION = "1.1.0"
#: iptables (default) or nftables: the firewall backend of native networks.
FIREWALL_ENV = "MINIDOCKER_FIREWALL"
#: Networks whose containers find each other by name (Docker: not the default bridge).
NAMED_NETWORKS_EXCLUDE = (store.DEFAULT_NETWORK,)


# --- networks: native records and the CNI configuration directory ------------------

def _cni_id(name: str) -> str:
    return hashlib.sha256(f"cni/{name}".encode()).hexdigest()


_EXECUTOR = None


def executor():
    """One executor per process (it caches the config directory and VERSION probes)."""
    global _EXECUTOR
    if _EXECUTOR is None:
        from minidocker.network import inprocess
        from minidocker.network.cni import CNIExecutor
        from minidocker.network.cni.executor import log_call
        runner = inprocess.InProcessRunner([log_call]) if inprocess.enabled() else None
        _EXECUTOR = CNIExecutor(runner=runner, preferred={PLUGIN: paths.own_plugin_dirs()})
    return _EXECUTOR


def cni_networks() -> list[store.Network]:
    """Networks of the CNI configuration directory, as `network ls` shows
    them (driver `cni`); a name a native network has is shadowed by it."""
    from minidocker.network.cni import config as cni_config
    native = {n.name for n in store.records()} | set(store.BUILTIN_DRIVERS)
    out = []
    for conf in cni_config.load_dir(paths.cni_conf_dir(), warn=False).networks:
        if conf.name not in native:
            out.append(store.Network(name=conf.name, id=_cni_id(conf.name), driver=CNI_DRIVER,
                                     options={"source": conf.source}))
    return out


def lookup(ref: str) -> store.Network:
    """A native network (name, id, id prefix) or a CNI-directory network."""
    if ref in ("host", "none"):
        raise MinidockerError(f"network {ref!r} has no endpoints to attach to; "
                              "use --network host / none as the container's mode", 125)
    try:
        return store.get(ref)
    except NotFound:
        for net in cni_networks():
            if ref in (net.name, net.id):
                return net
        raise NotFound(f"network {ref!r} not found; accepted: bridge, host, none, "
                       "container:<id> or a network of `minidocker network ls`", 125) from None


def conflist(net: store.Network):
    """The network list ADD and DEL run (for a native network: generated)."""
    from cni.conf import NetworkConfigList
    if net.driver == CNI_DRIVER:
        return executor().network(net.name)
    ranges = []
    for cfg in net.ipam:
        r = {"subnet": cfg.subnet, "gateway": cfg.gateway}
        if cfg.ip_range:
            rng = ipaddress.ip_network(cfg.ip_range)
            hosts = [rng.network_address + 1, rng.broadcast_address - (1 if rng.version == 4 else 0)]
            if rng.prefixlen >= (31 if rng.version == 4 else 127):
                hosts = [rng.network_address, rng.broadcast_address]
            r["rangeStart"], r["rangeEnd"] = str(hosts[0]), str(hosts[1])
        ranges.append([r])
    plugin = {
        "type": PLUGIN, "bridge": net.bridge, "isGateway": True, "isDefaultGateway": True,
        "ipMasq": not net.internal, "hairpinMode": True,
        "firewallBackend": os.environ.get(FIREWALL_ENV) or "iptables",
        "isolation": True, "internal": net.internal, "icc": net.icc, "removeIdleBridge": True,
        "ipam": {"type": PLUGIN, "ranges": ranges, "dataDir": str(ipam_dir())},
        "capabilities": {"portMappings": True, "ips": True, "mac": True},
    }
    if net.mtu:
        plugin["mtu"] = net.mtu
    return NetworkConfigList.from_dict({"cniVersion": CNI_VERSION, "name": net.name,
                                        "plugins": [plugin]})


def ipam_dir():
    """host-local's dataDir for native networks (under MINIDOCKER_ROOT)."""
    return paths.state_root() / "ipam"


# --- endpoints -----------------------------------------------------------------------

def all_endpoints():
    """(network id, container id, endpoint) of every endpoint on record."""
    base = paths.networks_dir()
    if not base.is_dir():
        return
    for entry in sorted(os.listdir(base)):
        eps = base / entry / "endpoints"
        if not eps.is_dir():
            continue
        for name in sorted(os.listdir(eps)):
            if name.endswith(".json"):
                ep = state.read_json(eps / name)
                if isinstance(ep, dict):
                    yield entry, name[:-5], ep


def endpoints_of(cid: str) -> list[dict]:
    """The endpoints of one container, on every network."""
    return [ep for _nid, c, ep in all_endpoints() if c == cid]


def _net_of(ep: dict) -> store.Network:
    if ep.get("Driver") == CNI_DRIVER:
        return store.Network(name=ep["Network"], id=ep["NetworkID"], driver=CNI_DRIVER)
    try:
        return store.get(ep["NetworkID"])
    except MinidockerError:
        return store.Network(name=ep["Network"], id=ep["NetworkID"])


def _net_lock(net: store.Network, shared: bool):
    """ADDs of a network share it; removing the network's bridge after its
    last endpoint takes it alone (no ADD may be between bridge and veth)."""
    return state.locked(paths.locks_dir() / f"network-{net.id[:24]}.lock", shared=shared)


def _check_ip(net: store.Network, ip: str | None, version: int, taken: dict) -> str | None:
    if not ip:
        return None
    flag = "--ip" if version == 4 else "--ip6"
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise MinidockerError(f"invalid {flag} {ip!r}: not an IPv{version} address", 125) from None
    if addr.version != version:
        raise MinidockerError(f"invalid {flag} {ip!r}: not an IPv{version} address", 125)
    if net.driver == CNI_DRIVER:
        return str(addr)
    subnets = [c for c in net.ipam if ipaddress.ip_network(c.subnet).version == version]
    if not subnets:
        raise MinidockerError(f"{flag} {ip}: network {net.name} has no IPv{version} subnet", 125)
    cfg = next((c for c in subnets if addr in ipaddress.ip_network(c.subnet)), None)
    if cfg is None:
        raise MinidockerError(f"{flag} {ip} is outside the subnets of network {net.name} "
                              f"({', '.join(c.subnet for c in subnets)})", 125)
    sub = ipaddress.ip_network(cfg.subnet)
    if addr == sub.network_address or (version == 4 and addr == sub.broadcast_address) \
            or str(addr) == cfg.gateway:
        raise MinidockerError(f"{flag} {ip} is the network address, broadcast or gateway of "
                              f"{cfg.subnet}; pick a host address", 125)
    if str(addr) in taken:
        raise Conflict(f"{flag} {ip} is already in use by container {taken[str(addr)]} on "
                       f"network {net.name}", 125)
    return str(addr)


def check(net: store.Network, *, ip=None, ip6=None, exclude_cid="") -> None:
    """Create-time checks of the requested addresses (nothing is reserved)."""
    taken = _taken_ips(net, exclude_cid)
    _check_ip(net, ip, 4, taken)
    _check_ip(net, ip6, 6, taken)


def _taken_ips(net: store.Network, exclude_cid: str) -> dict[str, str]:
    out = {}
    for cid, ep in store.endpoints(net).items():
        if cid != exclude_cid:
            for key in ("IPv4Address", "IPv6Address"):
                if ep.get(key):
                    out[ep[key].split("/")[0]] = ep.get("Name", cid[:12])
    return out


def attach(container: dict, network_ref: str, *, ifname: str = "eth0",
           ports: list[PortMapping] | None = None, ip: str | None = None,
           ip6: str | None = None, aliases: list[str] | None = None,
           mac: str | None = None) -> dict:
    """Connect a container (its record; SandboxKey pinned) to a network:
    executor ADD, then the endpoint record. Host ports are checked and
    random ones chosen here. Raises MinidockerError (code 125) and leaves
    nothing behind on failure."""
    from cni.errors import CNIError
    from minidocker.network import hostsfile, publish
    from minidocker.network.cni import RuntimeConf
    from minidocker.network.cni.executor import failure_text
    net = lookup(network_ref)
    cid = container["Id"]
    netns = (container.get("NetworkSettings") or {}).get("SandboxKey") or ""
    if not netns:
        raise MinidockerError(f"container {cid[:12]} has no network namespace to attach", 125)
    if cid in store.endpoints(net):
        raise Conflict(f"container {container['Name'].lstrip('/')} is already attached to "
                       f"network {net.name}", 125)
    taken = _taken_ips(net, cid)
    ip = _check_ip(net, ip, 4, taken)
    ip6 = _check_ip(net, ip6, 6, taken)
    ports = list(ports or [])
    import contextlib
    port_lock = publish.lock() if ports else contextlib.nullcontext()
    with port_lock, _net_lock(net, shared=True):
        if net.driver != CNI_DRIVER and not any(n.id == net.id for n in store.records()):
            # `network rm` won the race for the lock: attaching now would
            # bring back a bridge and an endpoint of a network that is gone
            raise NotFound(f"network {net.name} was removed while container "
                           f"{container['Name'].lstrip('/')} was being attached to it", 125)
        resolved = publish.resolve(ports, cid) if ports else []
        caps: dict = {}
        if resolved:
            caps["portMappings"] = [pm.to_cni() for pm in resolved]
        if ip or ip6:
            caps["ips"] = [a for a in (ip, ip6) if a]
        if mac:
            caps["mac"] = mac
        try:
            nlist = conflist(net)
            result = executor().add(nlist, RuntimeConf(cid, netns, ifname, capability_args=caps))
        except CNIError as err:
            raise MinidockerError(f"cannot attach container {container['Name'].lstrip('/')} to "
                                  f"network {net.name}: {failure_text(err)}", 125) from None
        try:
            ep = _endpoint(container, net, nlist, result, ifname, netns, resolved, aliases or [])
            store.add_endpoint(net, cid, ep)
        except BaseException:
            # every ADD is followed by a DEL: nothing may outlive a failed attach
            try:
                executor().delete(nlist, RuntimeConf(cid, netns, ifname))
            except CNIError:
                pass
            store.remove_endpoint(net, cid)
            raise
    if net.name not in NAMED_NETWORKS_EXCLUDE:
        hostsfile.refresh_network(net)
    return ep


def _endpoint(container, net, nlist, result, ifname, netns, ports, aliases) -> dict:
    from cni_bridge.firewall import owner_comment
    cid = container["Id"]
    res = result.to_dict(result.cni_version)
    ifaces = res.get("interfaces") or []
    cidx = next((i for i, f in enumerate(ifaces) if f.get("name") == ifname and f.get("sandbox")), None)
    ips = [x for x in res.get("ips") or [] if cidx is None or x.get("interface") in (None, cidx)]
    v4 = next((x for x in ips if ":" not in x["address"]), None)
    v6 = next((x for x in ips if ":" in x["address"]), None)
    mac = ifaces[cidx]["mac"] if cidx is not None and ifaces[cidx].get("mac") else ""
    host_veth, host_index, cont_index = _link_facts(ifaces, cidx, ifname, netns)
    backend = next((p.get("firewallBackend", "iptables") for p in nlist.plugins
                    if p.get("type") == PLUGIN), "")
    return {
        "Name": container["Name"].lstrip("/"), "ContainerID": cid, "Hostname":
            (container.get("Config") or {}).get("Hostname", ""),
        "Network": net.name, "NetworkID": net.id, "Driver": net.driver,
        "EndpointID": hashlib.sha256(f"{net.id}/{cid}/{ifname}".encode()).hexdigest(),
        "IfName": ifname, "SandboxKey": netns, "MacAddress": mac,
        "IPv4Address": v4["address"] if v4 else "", "Gateway": (v4 or {}).get("gateway", ""),
        "IPv6Address": v6["address"] if v6 else "", "IPv6Gateway": (v6 or {}).get("gateway", ""),
        "HostVeth": host_veth, "HostVethIfindex": host_index, "ContainerIfindex": cont_index,
        "Ports": [{"HostIp": pm.host_ip, "HostPort": pm.host_port, "ContainerPort": pm.container_port,
                   "Protocol": pm.protocol} for pm in ports],
        "Aliases": list(aliases),
        "FirewallBackend": backend,
        "FirewallComment": owner_comment(net.name, cid, ifname) if backend else "",
        "CNIResult": res,
    }


def _link_facts(ifaces: list[dict], cidx, ifname: str, netns: str) -> tuple[str, int, int]:
    """(host veth name, its ifindex, the container interface's ifindex)."""
    from cni_bridge import netlink
    host_name, host_index, cont_index = "", 0, 0
    try:
        with netlink.Netlink() as nl:
            for f in reversed(ifaces[:cidx] if cidx is not None else ifaces):
                if f.get("sandbox"):
                    continue
                link = nl.link(f.get("name"))
                if link and link["kind"] == "veth":
                    host_name, host_index = link["name"], link["index"]
                    break
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with netlink.netlink_in(fd) as cnl:
                link = cnl.link(ifname)
                cont_index = link["index"] if link else 0
        finally:
            os.close(fd)
    except OSError:
        pass  # facts for people, never a reason to fail an attach
    return host_name, host_index, cont_index


def detach(container: dict, network_ref: str) -> None:
    """Disconnect a container from a network: executor DEL (cached result and
    capability args), endpoint record gone; a native network's bridge goes
    with its last endpoint. Idempotent."""
    from cni.errors import CNIError
    from minidocker.network import hostsfile
    from minidocker.network.cni import RuntimeConf
    cid = container["Id"]
    try:
        net = lookup(network_ref)
    except NotFound:
        eps = [e for e in endpoints_of(cid) if network_ref in (e.get("Network"), e.get("NetworkID"))]
        if not eps:
            return
        net = _net_of(eps[0])
    ep = store.endpoints(net).get(cid) or {}
    ifname = ep.get("IfName") or "eth0"
    netns = ep.get("SandboxKey") or (container.get("NetworkSettings") or {}).get("SandboxKey") or ""
    ex = executor()
    rt = RuntimeConf(cid, netns, ifname)
    try:
        nlist = ex.cached_config(conflist_name(net), rt)
        if nlist is None:
            if not ep:
                return  # never attached, nothing cached: nothing to undo
            nlist = conflist(net)
        ex.delete(nlist, rt)
    except CNIError as err:
        raise MinidockerError(f"cannot detach container {container['Name'].lstrip('/')} from "
                              f"network {net.name}: {err}") from None
    store.remove_endpoint(net, cid)
    if net.driver != CNI_DRIVER:
        _drop_idle_bridge(net)
    if net.name not in NAMED_NETWORKS_EXCLUDE:
        hostsfile.refresh(set(store.endpoints(net)) | {cid})


def conflist_name(net: store.Network) -> str:
    return net.name


def detach_all(container: dict) -> None:
    """Every network the container is attached to (the teardown); keeps going
    past a failing network and raises the first error at the end."""
    first = None
    for ep in endpoints_of(container["Id"]):
        try:
            detach(container, ep["NetworkID"] if ep.get("Driver") != CNI_DRIVER else ep["Network"])
        except MinidockerError as exc:
            first = first or exc
    if first:
        raise first


def _drop_idle_bridge(net: store.Network) -> None:
    """The bridge of a native network goes with its last endpoint, so a host
    with no containers holds none of our links (it comes back on the next ADD)."""
    if not net.bridge:
        return
    with _net_lock(net, shared=False):
        if store.endpoints(net):
            return
        from cni_bridge import netlink
        with netlink.Netlink() as nl:
            br = nl.link(net.bridge)
            if br and br["kind"] == "bridge" and not any(l["master"] == br["index"] for l in nl.links()):
                nl.del_link(br["index"])


def firewall_rules(ep: dict) -> list[str]:
    """The firewall rules of an endpoint, as the backend lists them (for inspect)."""
    import subprocess
    comment = ep.get("FirewallComment")
    if not comment:
        return []
    out = []
    if ep.get("FirewallBackend") == "nftables":
        for fam in ("ip", "ip6"):
            proc = subprocess.run(["nft", "list", "table", fam, "minidocker"], capture_output=True,
                                  text=True, timeout=10)
            out += [f"{fam}: {l.strip()}" for l in proc.stdout.splitlines() if f'"{comment}"' in l]
        return out
    for tool in ("iptables-save", "ip6tables-save"):
        proc = subprocess.run([tool], capture_output=True, text=True, timeout=10)
        table = ""
        for line in proc.stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif comment in line:
                out.append(f"{tool.split('-')[0]} -t {table} {line}")
    return out
