"""A container's network settings in Docker's record shapes.

The record keeps what `start` needs to attach the same way again:
HostConfig.PortBindings / PublishAllPorts and
NetworkingConfig.EndpointsConfig[<network>] (NetworkID, IPAMConfig,
Aliases, MacAddress); NetworkSettings shows what is attached now.
"""
from __future__ import annotations


def endpoint_config(ep_ipam: dict, aliases, mac, network_id: str = "") -> dict:
    """What NetworkingConfig.EndpointsConfig keeps of one network, so that
    `start` attaches it the same way again (NetworkID: resolved at create)."""
    out = {"IPAMConfig": dict(ep_ipam or {}), "Aliases": list(aliases or []),
           "MacAddress": (mac or "").lower()}
    if network_id:
        out["NetworkID"] = network_id
    return out


def endpoints_config(record: dict) -> dict:
    """NetworkingConfig.EndpointsConfig: network reference -> its config."""
    return (record.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}


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


def network_settings(ep: dict, network: str, ports: dict) -> dict:
    """NetworkSettings in Docker's shape for the container's first endpoint."""
    net = endpoint_settings(ep)
    return {"Networks": {network: net}, "Ports": ports, "IPAddress": net["IPAddress"],
            "IPPrefixLen": net["IPPrefixLen"], "Gateway": net["Gateway"],
            "GlobalIPv6Address": net["GlobalIPv6Address"], "MacAddress": net["MacAddress"]}
