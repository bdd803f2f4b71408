"""The network modes that attach: `bridge`, a user network, a network of the
CNI configuration directory, and `container:<id>` (which joins another
container's namespace). Registered in modes.py; attach.py does the work.

A container's network settings live in its record as Docker keeps them:
HostConfig.PortBindings / PublishAllPorts / Dns / ExtraHosts and
NetworkingConfig.EndpointsConfig[<network>] (IPAMConfig, Aliases, MacAddress),
so `start` attaches the same way again.
"""
from __future__ import annotations

from minidocker.errors import MinidockerError, NotFound
from minidocker.network import modes


def _endpoint_config(record: dict, network: str) -> dict:
    return ((record.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}).get(network) or {}


def mappings(record: dict) -> list:
    """The container's -p mappings, and -P's exposed ports not given with -p."""
    from minidocker.network import ports, publish
    hc = record.get("HostConfig") or {}
    out = publish.from_bindings(hc.get("PortBindings") or {})
    if hc.get("PublishAllPorts"):
        given = {pm.docker_key() for pm in out}
        for key in sorted((record.get("Config") or {}).get("ExposedPorts") or {}):
            pm = ports.parse_exposed(key)
            if pm.docker_key() not in given:
                out.append(pm)
    return out


def endpoint_settings(ep: dict, network_id: str | None = None) -> dict:
    """Docker's NetworkSettings.Networks entry for one endpoint."""
    v4, v6 = ep.get("IPv4Address") or "", ep.get("IPv6Address") or ""
    return {
        "IPAMConfig": None, "Links": None, "Aliases": ep.get("Aliases") or None,
        "NetworkID": network_id or ep["NetworkID"], "EndpointID": ep.get("EndpointID", ""),
        "Gateway": ep.get("Gateway", ""), "IPAddress": v4.split("/")[0],
        "IPPrefixLen": int(v4.split("/")[1]) if "/" in v4 else 0,
        "IPv6Gateway": ep.get("IPv6Gateway", ""), "GlobalIPv6Address": v6.split("/")[0],
        "GlobalIPv6PrefixLen": int(v6.split("/")[1]) if "/" in v6 else 0,
        "MacAddress": ep.get("MacAddress", ""),
    }


def settings(ep: dict, network: str, ports_: dict) -> dict:
    """NetworkSettings in Docker's shape for the container's first endpoint."""
    net = endpoint_settings(ep)
    return {"Networks": {network: net}, "Ports": ports_, "IPAddress": net["IPAddress"],
            "IPPrefixLen": net["IPPrefixLen"], "Gateway": net["Gateway"],
            "GlobalIPv6Address": net["GlobalIPv6Address"], "MacAddress": net["MacAddress"]}


def endpoint_config(ep_ipam: dict, aliases, mac) -> dict:
    """What NetworkingConfig.EndpointsConfig keeps of one network, so that
    `start` attaches it the same way again."""
    return {"IPAMConfig": dict(ep_ipam or {}), "Aliases": list(aliases or []),
            "MacAddress": (mac or "").lower()}


class AttachMode(modes.NetworkMode):
    """`bridge`, a user network, or a CNI network: one endpoint (eth0)."""

    name = "bridge"

    def validate(self) -> None:
        from minidocker.network import attach
        attach.lookup(self.spec)

    def check(self, record: dict) -> None:
        """Create time: fixed host ports free, requested addresses usable."""
        from minidocker.network import attach, publish
        epc = _endpoint_config(record, self.spec)
        ipam = epc.get("IPAMConfig") or {}
        attach.check(attach.lookup(self.spec), ip=ipam.get("IPv4Address"), ip6=ipam.get("IPv6Address"),
                     exclude_cid=record["Id"])
        publish.check_fixed(mappings(record))

    def setup(self, container: dict) -> dict:
        from minidocker.network import attach, hostsfile, publish
        epc = _endpoint_config(container, self.spec)
        ipam = epc.get("IPAMConfig") or {}
        ep = attach.attach(container, self.spec, ifname="eth0", ports=mappings(container),
                           ip=ipam.get("IPv4Address") or None, ip6=ipam.get("IPv6Address") or None,
                           aliases=list(epc.get("Aliases") or []), mac=epc.get("MacAddress") or None)
        from minidocker.network.ports import PortMapping
        pms = [PortMapping(p["ContainerPort"], p["HostPort"], p["Protocol"], p["HostIp"])
               for p in ep["Ports"]]
        out = settings(ep, attach.lookup(self.spec).name, publish.docker_ports(pms))
        # networks joined later with `network connect` come back on `start`, as in Docker
        extra = ((container.get("NetworkingConfig") or {}).get("EndpointsConfig") or {})
        for n, (name, cfg) in enumerate((k, v) for k, v in extra.items() if k != self.spec):
            cfg = cfg or {}
            ipam = cfg.get("IPAMConfig") or {}
            more = attach.attach(container, name, ifname=f"eth{n + 1}",
                                 ip=ipam.get("IPv4Address") or None,
                                 ip6=ipam.get("IPv6Address") or None,
                                 aliases=list(cfg.get("Aliases") or []),
                                 mac=cfg.get("MacAddress") or None)
            out["Networks"][attach.lookup(name).name] = endpoint_settings(more)
        hostsfile.refresh({container["Id"]})
        return out

    def teardown(self, container: dict) -> None:
        from minidocker.network import attach
        attach.detach_all(container)


class ContainerMode(modes.NetworkMode):
    """`container:<id>`: the process joins that container's pinned namespace;
    nothing is attached, so there is nothing to undo."""

    name = "container"

    @property
    def ref(self) -> str:
        return self.spec.partition(":")[2]

    def validate(self) -> None:
        if not self.ref:
            raise modes.NetworkModeError("--network container: needs a container name or id, "
                                         "e.g. container:web", 125)

    def _target(self) -> dict:
        from minidocker import containers
        try:
            target = containers.find(self.ref)
        except NotFound:
            raise MinidockerError(f"--network {self.spec}: no such container {self.ref!r}", 125) from None
        sandbox = (target.get("NetworkSettings") or {}).get("SandboxKey") or ""
        if not target["State"].get("Running") or not sandbox:
            raise MinidockerError(f"--network {self.spec}: container {target['Name'].lstrip('/')} "
                                  "is not running (start it first)", 125)
        return target

    def check(self, record: dict) -> None:
        if self._target()["Id"] == record["Id"]:
            raise MinidockerError("a container cannot join its own network namespace", 125)

    def join(self, record: dict) -> str:
        """The namespace to enter instead of pinning a new one."""
        return self._target()["NetworkSettings"]["SandboxKey"]

    def setup(self, container: dict) -> dict:
        return {"Networks": {}}


class GoneNetworkMode(AttachMode):
    """A network that vanished while containers were attached (its CNI file
    was deleted): nothing can attach to it, but the teardown still detaches
    its endpoints (the DEL runs the cached configuration)."""

    def validate(self) -> None:
        pass

    def check(self, record: dict) -> None:
        self.setup(record)

    def setup(self, container: dict) -> dict:
        raise NotFound(f"network {self.spec!r} not found; see `minidocker network ls`", 125)


def _find(spec: str):
    """Fallback: a user network or a CNI-directory network by name or id."""
    from minidocker.network import attach
    try:
        attach.lookup(spec)
    except MinidockerError:
        if any(spec in (ep.get("Network"), ep.get("NetworkID")) for _n, _c, ep in attach.all_endpoints()):
            return GoneNetworkMode(spec)
        return None
    return AttachMode(spec)


def register() -> None:
    """Plug the modes in (idempotent; never replaces a mode registered first)."""
    if "bridge" not in modes._EXACT:
        modes.register("bridge", AttachMode)
    if "container:" not in modes._PREFIX:
        modes.register("container:", ContainerMode, prefix=True)
    if _find not in modes._FALLBACK:
        modes.register_fallback(_find)
