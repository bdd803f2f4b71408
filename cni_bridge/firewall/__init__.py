"""Firewall rules of one attachment: masquerade, port maps, forwarding.

One interface (netavark's FirewallDriver shape) with two backends that
behave the same: `iptables` (one `iptables-restore --noflush` batch per
family) and `nftables` (one `nft -f` batch of set elements under a fixed
set of rules). Every rule or element carries a comment naming network,
container and interface (`owner_comment`), which is how GC and the views
find what each owns; DEL removes what its ADD recorded in the owner index
(owners.py), or finds it by comment when the index does not know it.
The plan (rules as data, names, the Driver interface) is in plan.py; the
backends in iptables.py and nftables.py; this module picks one.
"""
from __future__ import annotations

from cni_bridge.firewall.plan import (  # noqa: F401 - the package's surface
    BACKENDS, CHAIN_DNAT, CHAIN_FORWARD, CHAIN_ISOLATION, CHAIN_POLICY, CHAIN_POSTROUTING,
    COMMENT_PREFIX, NFT_CHAINS, NFT_TABLE, SCAFFOLD_COMMENT, Attachment, Driver, Early, Lock, Pending,
    decide, isolation_plan, lock_path, network_plan, network_prefix,
    owner_comment, plan)


def driver(name: str) -> Driver:
    """The backend named `name` (iptables unless "nftables"), imported only
    when asked for: a plugin run needs one of the two."""
    if name == "nftables":
        from cni_bridge.firewall.nftables import NftDriver
        return NftDriver()
    from cni_bridge.firewall.iptables import IptablesDriver
    return IptablesDriver()


def expected_count(att: Attachment, backend: str) -> int:
    """Rules or set elements carrying the attachment's comment (CHECK)."""
    return driver(backend).count(att)
