"""Networks as CNI: a native network's generated list, the executor, the
IPAM directory and the locks of attaching.

A native network is a CNI network whose list minidocker writes from its
record (cni-bridge with the record's bridge, subnets and options, the
`portMappings`, `ips` and `mac` capabilities), as nerdctl does; a CNI-file
network runs its own list. Either way the one executor of this process runs
ADD / CHECK / DEL / GC / STATUS. The plugin owns every kernel object and
lease; removing a network is a GC with nothing valid (`remove`).

Lock order: every path that takes more than one of these takes them in this
order, outermost first (each is an flock on a file under the locks dir):
  1. the container's lock (records.locked): start, teardown, connect,
     disconnect, prune's reconcile;
  2. the ports lock (`ports_lock`): from choosing host ports until the
     endpoint holding them is recorded;
  3. the network's lock (`network_lock`): shared by attaches, exclusive by
     `network rm` (no ADD is half-way while the network goes);
  4. the network records' lock (networks.lock): create, rm, the default's
     first use;
  5. the executor's: its GC lock (shared by ADD / CHECK / DEL, exclusive by
     GC), then the container's hashed lock (executor.py);
  6. cni-bridge's own: the bridge lock, the IPAM store's, the firewall's.
The hosts-file lock (hostsfile.py) and the container names lock
(records.names_lock) are taken alone, never around another. After an
attach or detach has released 2-6 (the container's lock still held): a
network's DNS lock (dns/lifecycle.py), then, alone, the services lock
(services/store.py), which `service create/rm` take outermost.
"""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from minidocker import paths, records, state
from minidocker.errors import Conflict, MinidockerError
from minidocker.network import networks, store

PLUGIN = "cni-bridge"
CNI_VERSION = "1.1.0"
#: iptables (default) or nftables: the firewall backend of native networks.
FIREWALL_ENV = "MINIDOCKER_FIREWALL"
#: backend -> the tool without which it has no rules to remove
FIREWALL_BACKENDS = {"iptables": "iptables-save", "nftables": "nft"}

_EXECUTOR = None


def executor():
    """One executor per process (it caches the config directory and VERSION
    probes); cni-bridge in-process unless MINIDOCKER_CNI_EXEC=1."""
    global _EXECUTOR
    if _EXECUTOR is None:
        from minidocker.network import inprocess
        from minidocker.network.cni import CNIExecutor
        from minidocker.network.cni.executor import log_call
        runner = inprocess.InProcessRunner([log_call]) if inprocess.enabled() else None
        _EXECUTOR = CNIExecutor(runner=runner, preferred={PLUGIN: paths.own_plugin_dirs()})
    return _EXECUTOR


def ipam_dir():
    """cni-bridge's IPAM dataDir for native networks (under MINIDOCKER_ROOT)."""
    return Path(paths.state_root()) / "ipam"


def network_lock(net, shared: bool):
    """Lock 3 of the order above."""
    return state.locked(Path(paths.locks_dir()) / f"network-{net.id[:24]}.lock", shared=shared)


def ports_lock():
    """Lock 2 of the order above."""
    return state.locked(Path(paths.locks_dir()) / "ports.lock")


def _ranges(net) -> list[list[dict]]:
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
    return ranges


def conflist(net, firewall: str = ""):
    """The network list ADD, DEL and GC run (for a native network: generated,
    with the firewall backend of MINIDOCKER_FIREWALL unless `firewall`)."""
    from cni.conf import NetworkConfigList
    if net.from_file:
        return executor().network(net.name)
    plugin = {
        "type": PLUGIN, "bridge": net.bridge, "isGateway": True, "isDefaultGateway": True,
        "ipMasq": not net.internal, "hairpinMode": True,
        "firewallBackend": firewall or os.environ.get(FIREWALL_ENV) or "iptables",
        "isolation": True, "internal": net.internal, "icc": net.icc, "removeIdleBridge": True,
        "ipam": {"type": PLUGIN, "ranges": _ranges(net), "dataDir": str(ipam_dir())},
        "capabilities": {"portMappings": True, "ips": True, "mac": True},
    }
    if net.mtu:
        plugin["mtu"] = net.mtu
    if net.no_masq_to:
        plugin["nonMasqueradeCIDRs"] = net.no_masq_to
    return NetworkConfigList.from_dict({"cniVersion": CNI_VERSION, "name": net.name,
                                        "plugins": [plugin]})


def firewall_backend(nlist) -> str:
    """The firewall backend of a list's cni-bridge ("" when it has none)."""
    return next((p.get("firewallBackend", "iptables") for p in nlist.plugins
                 if p.get("type") == PLUGIN), "")


def remove(net) -> list[str]:
    """What the kernel and disk still hold of a native network that is being
    removed (under its exclusive lock, its record gone): a GC with nothing
    valid, which makes cni-bridge delete every veth, rule, lease and, with
    the last port, the bridge; once per firewall backend, as attachments
    may have been made under either (MINIDOCKER_FIREWALL is per command).
    Then the network's lease directory, which is minidocker's (it chose the
    dataDir). Returns problems, one line each."""
    import shutil   # (not on `run`'s path)
    problems = []
    chosen = os.environ.get(FIREWALL_ENV) or "iptables"
    others = [b for b, tool in FIREWALL_BACKENDS.items() if b != chosen and shutil.which(tool)]
    for backend in [chosen, *others]:
        try:
            executor().gc(conflist(net, firewall=backend), valid=[])
        except Exception as exc:  # noqa: BLE001 - reported; the other steps still run
            problems.append(f"GC of network {net.name} ({backend}): {exc}")
    shutil.rmtree(ipam_dir() / net.name, ignore_errors=True)
    return problems


def remove_network(ref: str) -> networks.Network:
    """`network rm`: refuse built-ins and CNI files, forget the record (while
    containers are attached: refused; an endpoint whose container record is
    gone does not count), then GC the network's attachments away."""
    if ref in networks.BUILTIN_DRIVERS:
        return store.remove(ref)  # refuses, naming the pre-defined network
    target = networks.resolve(ref)
    if target.from_file:
        raise MinidockerError(f"network {target.name} is defined by the CNI configuration "
                              f"file {target.source} and cannot be removed here; "
                              "remove or edit that file instead")
    # taken alone: no ADD is half-way (bridge made, endpoint not yet
    # recorded) while endpoints are checked and the network goes
    with network_lock(target, shared=False):
        net = store.remove(target.id, stale=lambda cid: not records.exists(cid))
        problems = remove(net)
    if problems:
        raise MinidockerError(f"network {net.name} was removed, but: " + "; ".join(problems))
    return net


def prune_networks(report) -> None:
    """`network prune`: every user network no container is attached to;
    report(name) for each removed, report(None, error) for each failure."""
    for net in networks.records():
        if net.name in networks.BUILTIN_DRIVERS or any(records.exists(c) for c in store.endpoints(net)):
            continue
        try:
            remove_network(net.id)
            report(net.name, None)
        except Conflict:
            continue  # a container attached meanwhile: it is in use after all
        except MinidockerError as exc:
            report(None, exc)
