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
from cni_bridge.plugin import attachment, needs_firewall


def reapply(conf: dict, container_id: str, ifname: str) -> bool:
    """conf: the plugin's request with prevResult. True if rules were re-added."""
    c = bconfig.parse(conf, PluginArgs("CHECK", container_id, "", ifname), with_env=False)
    if not needs_firewall(c) or c.prev_result is None:
        return False
    prev = c.prev_result
    idx = next((i for i, itf in enumerate(prev.interfaces) if itf.name == ifname and itf.sandbox), None)
    ips = [ip for ip in prev.ips if idx is None or ip.interface == idx]
    att = attachment(c, container_id, ifname, ips)
    families = tuple(sorted(att.families())) or (4,)
    drv = firewall.driver(c.firewall)
    if drv.owned(families).get(att.comment, 0) >= firewall.expected_count(att, c.firewall) \
            and drv.scaffold_intact(families) and drv.shared_intact(att):
        return False
    drv.teardown(c.network, owner=att.comment, families=families).wait()
    drv.setup(att, repair=True).wait()
    return True

