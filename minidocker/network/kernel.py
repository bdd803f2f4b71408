"""The live kernel facts minidocker shows a person, read in one place:
a network namespace's links, addresses and default routes (`Namespace`,
pyroute2: start-up does not matter here) and our firewall rules (`Rules`,
through cni_bridge.api). `network inspect`'s Debug blocks, `network
diagram` and `trace` all see the kernel through the model wiring.py builds
from these two readers; nothing else reads the same facts.

cni-bridge makes and removes the objects (bridge, host veths with the alias
`minidocker/<net>/<cid>/<ifname>`, rules commented `md/<net>/<cid>/<ifname>`,
shared per-network rules commented `md/<net>/`); this module only reads
them, by the names the plugin's public surface gives.
"""
from __future__ import annotations

import os

from cni_bridge import api

FAMILIES = {2: 4, 10: 6}   # AF_INET, AF_INET6 -> 4, 6


def in_namespace(path: str, make):
    """make() called inside the network namespace at `path` ("" = this one):
    enter, call, come back. Sockets it opens stay in that namespace."""
    if not path:
        return make()
    from minidocker.syscalls import setns
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(target)
        try:
            return make()
        finally:
            setns(home)
    finally:
        os.close(target)
        os.close(home)


def _ipr_in(path: str):
    """An IPRoute socket of the namespace at `path` ("" = this one)."""
    from pyroute2 import IPRoute
    return in_namespace(path, IPRoute)


def _link(msg) -> dict:
    info = msg.get_attr("IFLA_LINKINFO")
    nsid = msg.get_attr("IFLA_LINK_NETNSID")
    return {"name": msg.get_attr("IFLA_IFNAME"), "index": msg["index"],
            "kind": (info.get_attr("IFLA_INFO_KIND") if info else "") or "",
            "alias": msg.get_attr("IFLA_IFALIAS") or "",
            "peer": msg.get_attr("IFLA_LINK") or 0,
            "peer_netnsid": -1 if nsid is None else nsid,
            "master": msg.get_attr("IFLA_MASTER") or 0,
            "mac": msg.get_attr("IFLA_ADDRESS") or "",
            "up": bool(msg["flags"] & 1), "addresses": []}


class Namespace:
    """One network namespace as it is now, read once: links by index (name,
    kind, alias, peer ifindex and its namespace id, master, MAC, up,
    addresses with prefix) and the default route per family."""

    def __init__(self, path: str = ""):
        self.path = path
        self.links: dict[int, dict] = {}
        self.default_route = {4: "", 6: ""}
        self.readable = self._read()

    def _read(self) -> bool:
        from pyroute2.netlink.exceptions import NetlinkError
        if self.path and not os.path.exists(self.path):
            return False
        try:
            with _ipr_in(self.path) as ipr:
                for msg in ipr.get_links():
                    self.links[msg["index"]] = _link(msg)
                for msg in ipr.get_addr():
                    link = self.links.get(msg["index"])
                    if link is not None and msg["family"] in FAMILIES:
                        link["addresses"].append(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
                for family, fam in FAMILIES.items():
                    for route in ipr.get_default_routes(family=family, table=254):
                        self.default_route[fam] = self.default_route[fam] or route.get_attr("RTA_GATEWAY") or ""
        except (NetlinkError, OSError):
            return False
        return True

    def by_name(self, name: str) -> dict:
        return next((l for l in self.links.values() if l["name"] == name), {}) if name else {}

    def holding(self, address: str) -> dict:
        """The link that holds `address` (without prefix), or {}."""
        return next((l for l in self.links.values()
                     if any(a.split("/")[0] == address for a in l["addresses"])), {})

    def veth_peer_nsids(self) -> set[int]:
        """Namespace ids (as this namespace numbers them) of its veths' peers."""
        return {l["peer_netnsid"] for l in self.links.values() if l["kind"] == "veth" and l["peer_netnsid"] >= 0}

    def netnsid_of(self, path: str) -> int:
        """This namespace's id for the namespace at `path`; -1 when it has
        none (no link of ours leads there)."""
        from pyroute2.netlink.exceptions import NetlinkError
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return -1
        try:
            with _ipr_in(self.path) as ipr:
                reply = ipr.get_netnsid(fd=fd)
            nsid = reply.get("nsid") if isinstance(reply, dict) else None
            return -1 if nsid is None else int(nsid)
        except (NetlinkError, OSError, TypeError, ValueError):
            return -1
        finally:
            os.close(fd)


class Rules:
    """The firewall as it is now, read once (both families, both backends):
    every commented rule of ours with its table, chain and nft handle."""

    def __init__(self):
        self.all = api.rules()

    def owned_by(self, comment: str) -> list[dict]:
        return [r for r in self.all if r["comment"] == comment]

    def under(self, prefix: str) -> list[dict]:
        return [r for r in self.all if r["comment"].startswith(prefix)]

    def by_handle(self, family: str, table: str, chain: str, handle: int) -> dict:
        """The rule an nft trace event names (family "ip"/"ip6"), or {}."""
        fam = 6 if family == "ip6" else 4
        return next((r for r in self.all if r["handle"] == handle and r["family"] == fam
                     and r["table"] == table and r["chain"] == chain), {})

    def element(self, rule: dict, packet: str) -> dict:
        """The set element of ours that `rule` (an nft rule that looks a set
        up) matched for a packet a trace event shows, or {}."""
        fam = rule.get("family")
        return api.matched_element(rule.get("text", ""), packet,
                                   [r for r in self.all if "set" in r and r["family"] == fam
                                    and r["table"] == rule.get("table")])
