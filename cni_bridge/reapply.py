"""Firewall-only re-apply of one attachment (`minidocker network reload`).

After another tool flushed the tables (`iptables -F`, `nft flush ruleset`)
the links, addresses and leases are intact and only rules are gone; a full
DEL+ADD would renumber nothing but cost a veth and break connections. This
reads the attachment from its plugin request (prevResult + runtimeConfig,
as CHECK gets it), and when its rules are not all there removes what is
left of them and adds them again with the network's shared rules and our
chains (setup adds exactly what is missing of those). All present: no-op.
"""
from __future__ import annotations

import ipaddress

from cni.env import PluginArgs
from cni_bridge import config as bconfig, firewall
from cni_bridge.plugin import _attachment, _needs_firewall


def reapply(conf: dict, container_id: str, ifname: str) -> bool:
    """conf: the plugin's request with prevResult. True if rules were re-added."""
    c = bconfig.parse(conf, PluginArgs("CHECK", container_id, "", ifname), with_env=False)
    if not _needs_firewall(c) or c.prev_result is None:
        return False
    prev = c.prev_result
    idx = next((i for i, itf in enumerate(prev.interfaces) if itf.name == ifname and itf.sandbox), None)
    ips = [ip for ip in prev.ips if idx is None or ip.interface == idx]
    att = _attachment(c, container_id, ifname, ips)
    families = tuple(sorted(att.families())) or (4,)
    drv = firewall.driver(c.firewall)
    if drv.owned(families).get(att.comment, 0) >= firewall.expected_count(att, c.firewall) \
            and _scaffold_intact(c.firewall, families):
        return False
    drv.teardown(c.network, owner=att.comment, families=families).wait()
    drv.setup(att).wait()
    return True


def _scaffold_intact(backend: str, families) -> bool:
    """Our chains and the jumps into them (iptables); nftables keeps them in
    our own table, which goes with its rules."""
    if backend != "iptables":
        return True
    from cni_bridge.firewall.iptables import SCAFFOLD, _jump_spec, _read
    for saved in _read(families).values():
        for table, chain, jumps in SCAFFOLD:
            if chain not in saved.chains(table):
                continue  # made when a rule needs it
            present = {_jump_spec(l) for l in saved.lines(table)}
            if any(_jump_spec(j) not in present for j in jumps):
                return False
    return True
