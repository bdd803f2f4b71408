"""cni-bridge's public surface for a runtime that embeds it (minidocker).

A runtime drives the plugin as any CNI runtime does: ADD, CHECK, DEL, GC
and STATUS, exec'd or in-process with the same bytes (`handlers()`, for
cni.skel.dispatch). The plugin owns every object it makes (bridge, veths,
leases, rules); beyond the protocol a runtime may only:
- `reapply`: put back an attachment's firewall rules after another tool
  flushed them (`network reload`), from the cached ADD;
- read what the plugin names its objects, to show them to a person
  (`owner_comment`, `network_prefix`, `scaffold_comment`, `host_veth_name`,
  `veth_alias`), and
  read, never change, its rules (`rules`, `owned_rules`) and links (`link`).
Every other module of this package is the plugin's own. The plugin's
modules load on use: importing this costs nothing on `run`'s path.
"""
from __future__ import annotations


def handlers() -> dict:
    """command -> handler, for cni.skel.dispatch (the in-process call)."""
    from cni_bridge.plugin import HANDLERS
    return HANDLERS


def reapply(conf: dict, container_id: str, ifname: str) -> bool:
    """The firewall-only re-apply of one attachment; `conf` is the plugin's
    request as CHECK gets it (runtimeConfig and prevResult from the cached
    ADD). True if rules were re-added; a no-op when all are in place."""
    from cni_bridge.reapply import reapply as run
    return run(conf, container_id, ifname)


def owner_comment(network: str, cid: str, ifname: str) -> str:
    """The comment on every firewall rule of one attachment."""
    from cni_bridge.firewall import owner_comment as comment
    return comment(network, cid, ifname)


def network_prefix(network: str) -> str:
    """The comment on a network's shared rules (and the prefix of its attachments')."""
    from cni_bridge.firewall import network_prefix as prefix
    return prefix(network)


def scaffold_comment() -> str:
    """The comment on the rules every attachment shares (our chains' jumps,
    the nftables rules that look sets up): no container's, no network's."""
    from cni_bridge.firewall import SCAFFOLD_COMMENT
    return SCAFFOLD_COMMENT


def host_veth_name(network: str, cid: str, ifname: str) -> str:
    from cni_bridge.link import host_veth_name as name
    return name(network, cid, ifname)


def veth_alias(network: str, cid: str, ifname: str) -> str:
    from cni_bridge.link import veth_alias as alias
    return alias(network, cid, ifname)


def rules() -> list[dict]:
    """Every commented rule of ours, of every backend whose tools are
    installed (both families): {"backend", "family", "table", "chain",
    "handle", "comment", "text"}; `comment` is an owner comment, a
    network prefix or the scaffold's `minidocker` (our jumps and the
    nftables rules that look sets up). An nftables set element is an entry
    of its own with "set", "key" and "data" (and handle 0)."""
    import shutil
    from cni_bridge import firewall
    out: list[dict] = []
    for backend, tool in (("iptables", "iptables-save"), ("nftables", "nft")):
        if shutil.which(tool):
            try:
                out += firewall.driver(backend).rules()
            except Exception:  # noqa: BLE001 - a view: a backend that cannot be read shows nothing
                pass
    return out


def matched_element(rule_text: str, packet: str, entries: list[dict]) -> dict:
    """Of `entries` (nftables set elements from `rules`), the one the set
    lookup in `rule_text` finds for a packet as an nft trace event prints
    it (`packet: iif "br0" ip saddr ...`); {} when none or no lookup."""
    from cni_bridge.firewall.nftlisting import matched_element as match
    return match(rule_text, packet, entries)


def owned_rules() -> list[tuple[str, str]]:
    """(owner comment, the rule as a person would type it) of every
    attachment's or network's rule (`rules` without our jumps)."""
    from cni_bridge.firewall import COMMENT_PREFIX
    return [(r["comment"], r["text"]) for r in rules() if r["comment"].startswith(COMMENT_PREFIX)]


def link(name: str, netns_path: str = "") -> dict | None:
    """Link `name` here, or in the namespace at netns_path, as {"name",
    "index", "kind"}; None when there is none. Cheap (no pyroute2): `run`
    records a veth's index."""
    import os
    from cni_bridge import netlink, netns
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC) if netns_path else -1
    try:
        with (netns.netlink_in(fd) if netns_path else netlink.Netlink()) as nl:
            found = nl.link(name)
    finally:
        if fd >= 0:
            os.close(fd)
    return {k: found[k] for k in ("name", "index", "kind")} if found else None
