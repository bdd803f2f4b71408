"""`network reload`: put back the firewall rules of every running container's
endpoints (and so every network's shared rules and our chains) after
another tool flushed them. cni-bridge attachments are re-applied in process
from the cached ADD (config, capability args, result); other plugin types
have no firewall-only path and are left alone. Idempotent."""
from __future__ import annotations

import sys

from cni.conf import NetworkConfigList
from cni.types import Result
from cni_bridge import api
from minidocker import records
from minidocker.network import driver, store


def reload() -> tuple[int, int]:
    """(endpoints checked, endpoints whose rules were re-added)."""
    running = {r["Id"] for r in records.all_records() if r["State"].get("Running")}
    ex = driver.executor()
    checked = changed = 0
    for cid, ifname, entry, ep in _in_add_order(ex, running):
        if entry is None or not entry.config or entry.result is None:
            print(f"minidocker: reload: {ep.get('Network')}/{cid[:12]} has no cached attachment",
                  file=sys.stderr)
            continue
        nlist = NetworkConfigList.from_bytes(entry.config)
        prev = Result.from_dict(entry.result, nlist.cni_version).to_dict(nlist.cni_version)
        checked += 1
        for i, plugin in enumerate(nlist.plugins):
            if plugin.get("type") != driver.PLUGIN:
                continue
            conf = nlist.plugin_request(
                i, runtime_config=ex.runtime_config(plugin, entry.capability_args), prev_result=prev)
            changed += api.reapply(conf, cid, ifname)
    return checked, changed


def _in_add_order(ex, running: set[str]):
    """(cid, ifname, cache entry, endpoint) of running containers, oldest ADD
    first: the shared rules an ADD makes depend on what came before it (the
    forward rules exist only where FORWARD can drop), so the same order
    rebuilds the same set."""
    import os
    out = []
    for _nid, cid, ep in list(store.all_endpoints()):
        if cid not in running:
            continue
        ifname = ep.get("IfName") or "eth0"
        net = ep.get("Network", "")
        entry = ex.cache.read(net, cid, ifname)
        try:
            when = os.stat(ex.cache.path(net, cid, ifname)).st_mtime_ns
        except OSError:
            when = 0
        out.append((when, cid, ifname, entry, ep))
    out.sort(key=lambda t: t[:3])
    return [t[1:] for t in out]
