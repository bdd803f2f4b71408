"""A network's kernel objects as they are now: the live `Debug` blocks of
`network inspect`, read through pyroute2 (start-up does not matter here).

cni-bridge makes and removes them (bridge, host veths with the alias
`minidocker/<net>/<cid>/<ifname>`, rules commented `md/<net>/<cid>/<ifname>`,
shared per-network rules commented `md/<net>/`); this module only reads
them, by the names the plugin's public surface (cni_bridge.api) gives.
"""
from __future__ import annotations

from cni_bridge import api


def _link(name: str, netns: str = "", index: int = 0) -> dict:
    """A link of this namespace (or the one at netns) by name or index:
    {"name", "index", "kind", "alias", "peer"} (peer: IFLA_LINK), or {}."""
    from pyroute2 import IPRoute, NetNS
    from pyroute2.netlink.exceptions import NetlinkError
    if not name and not index:
        return {}
    try:
        with (NetNS(netns) if netns else IPRoute()) as ipr:
            found = ipr.get_links(index) if index else ipr.get_links(ifname=name)
    except (NetlinkError, OSError):
        return {}
    if not found:
        return {}
    link = found[0]
    info = link.get_attr("IFLA_LINKINFO")
    return {"name": link.get_attr("IFLA_IFNAME"), "index": link["index"],
            "kind": (info.get_attr("IFLA_INFO_KIND") if info else "") or "",
            "alias": link.get_attr("IFLA_IFALIAS") or "", "peer": link.get_attr("IFLA_LINK") or 0}


def _container_ifname(sandbox: str, index: int) -> str:
    """The name of link `index` inside the container's namespace."""
    if not sandbox or not index:
        return ""
    return _link("", netns=sandbox, index=index).get("name", "")


class Rules:
    """The firewall as it is now, read once per `inspect` (both families,
    both backends), searched by owner comment."""

    def __init__(self):
        self.lines = api.owned_rules()   # (comment, shown text)

    def owned_by(self, comment: str) -> list[str]:
        return [text for com, text in self.lines if com == comment]


def endpoint_debug(name: str, cid: str, ifname: str, sandbox: str, rules: Rules,
                   recorded_veth: str = "") -> dict:
    """What a person debugging would dig out by hand: the host veth and the
    container interface it is paired with, the namespace, the rules.
    `name` is the CNI network name; cni-bridge's veth is found by its name
    and alias, another plugin's by the name the endpoint recorded."""
    veth = api.host_veth_name(name, cid, ifname)
    link = _link(veth)
    if link.get("alias") != api.veth_alias(name, cid, ifname):
        link = {}  # gone, or a stranger's link of that name
        if recorded_veth:
            other = _link(recorded_veth)
            if other.get("kind") == "veth" and _container_ifname(sandbox, other["peer"]) == ifname:
                veth, link = recorded_veth, other
    peer = link.get("peer", 0)
    return {
        "HostVeth": veth if link else "",
        "HostVethIfindex": link.get("index", 0),
        "ContainerIfname": _container_ifname(sandbox, peer) or ifname,
        "ContainerIfindex": peer,
        "SandboxKey": sandbox,
        "Rules": rules.owned_by(api.owner_comment(name, cid, ifname)),
    }


def network_debug(net, rules: Rules) -> dict:
    """The network's own objects: its bridge and its shared rules."""
    link = _link(net.bridge)
    return {"Bridge": net.bridge, "BridgeIfindex": link.get("index", 0),
            "CNINetwork": net.name,
            "Rules": rules.owned_by(api.network_prefix(net.name))}
