"""A native network's kernel objects, seen and removed from this namespace.

cni-bridge makes them (bridge, host veths with the alias
`minidocker/<net>/<cid>/<ifname>`, rules commented `md/<net>/<cid>/<ifname>`,
shared per-network rules commented `md/<net>/`, leases under the IPAM data
dir) and removes an attachment's part on DEL. The network-level remainder
(the bridge, shared forward rules, empty chains, the lease directory) is no
single attachment's to remove, so `network rm` does it here, reusing the
plugin's own firewall and netlink code so both agree on every name.
All of it is idempotent: a network that never had a container has nothing.
"""
from __future__ import annotations

import os
import shutil
import subprocess

from minidocker import paths
from minidocker.network.store import Network

TOOL_TIMEOUT = 10


def _attach():
    try:
        from minidocker.network import attach
        return attach
    except ImportError:
        return None


def cni_name(net: Network) -> str:
    """The name the network's CNI list (and so its rules, veth aliases and
    lease directory) carries: attach.py generates that list."""
    fn = getattr(_attach(), "conflist_name", None)
    return fn(net) if fn else net.name


def ipam_dirs(net: Network) -> list[str]:
    """Where the network's leases live: host-local's `<dataDir>/<name>`."""
    fn = getattr(_attach(), "ipam_dir", None)
    base = fn() if fn else paths.state_root() / "ipam"
    return [os.path.join(str(base), cni_name(net))]


def network_lock(net: Network):
    """attach.py's per-network lock, exclusive (ADDs take it shared)."""
    fn = getattr(_attach(), "_net_lock", None)
    if fn:
        return fn(net, shared=False)
    from minidocker import state
    return state.locked(paths.locks_dir() / f"network-{net.id[:24]}.lock")


# --- removal -------------------------------------------------------------------

def remove_objects(net: Network) -> list[str]:
    """Delete what the kernel and disk still hold of `net`; returns problems
    (one line each) instead of raising, so every step is tried."""
    problems = []
    name = cni_name(net)
    for backend in ("iptables", "nftables"):
        try:
            _firewall_teardown(backend, name)
        except Exception as exc:  # noqa: BLE001 - reported, the other steps still run
            problems.append(f"{backend} rules of network {net.name}: {exc}")
    try:
        _delete_links(net, name)
    except OSError as exc:
        problems.append(f"links of network {net.name}: {exc}")
    for d in ipam_dirs(net):
        shutil.rmtree(d, ignore_errors=True)
    _forget_cached_results(name)
    return problems


def _forget_cached_results(name: str) -> None:
    """libcni cache entries of the network (left by containers that went
    without a teardown): a later network of the same name must not DEL
    with their config."""
    from minidocker.network.cni.cache import ResultCache
    cache = ResultCache(paths.cni_cache_dir())
    for entry in cache.attachments(network=name):
        cache.delete(entry.network, entry.container_id, entry.ifname)


def _firewall_teardown(backend: str, name: str) -> None:
    """Every rule of the network (attachments' and shared) and our chains or
    tables once nothing else uses them: GC with nothing to keep."""
    tool = "iptables-save" if backend == "iptables" else "nft"
    if not shutil.which(tool):
        return
    from cni_bridge.firewall import driver
    driver(backend).teardown(name, keep=set()).wait()


def _delete_links(net: Network, name: str) -> None:
    """Left-over host veths of the network (found by alias), then its bridge,
    only when that is a bridge: a stranger's link of that name stays."""
    from cni_bridge.link import stale_veths
    from cni_bridge.netlink import Netlink
    stale_veths(name, set())
    if not net.bridge:
        return
    with Netlink() as nl:
        link = nl.link(net.bridge)
        if link is not None and link["kind"] == "bridge":
            nl.del_link(link["index"])


# --- live view for `network inspect` -----------------------------------------------

def _link(name: str) -> dict:
    """A link of this namespace by name, with its peer's ifindex (IFLA_LINK,
    which the plugin's parser leaves out), or {}."""
    from struct import calcsize, unpack_from
    from cni_bridge import netlink as nlm
    if not name:
        return {}
    with nlm.Netlink() as nl:
        body = nlm.pack(nlm.IFINFO, nlm.AF_UNSPEC, 0, 0, 0, 0) + nlm.attr(nlm.IFLA_IFNAME, nlm.strz(name))
        try:
            replies = nl.request(nlm.RTM_GETLINK, 0, body, f"get link {name}")
        except nlm.NetlinkError:
            return {}
    if not replies:
        return {}
    payload = replies[0][1]
    link = nlm._link(payload)
    attrs = nlm.parse_attrs(payload, calcsize(nlm.IFINFO), len(payload))
    link["peer"] = unpack_from("=I", attrs[nlm.IFLA_LINK])[0] if nlm.IFLA_LINK in attrs else 0
    return link


def _container_ifname(sandbox: str, index: int) -> str:
    """The name of link `index` inside the container's namespace (read there
    through a netlink socket opened in it)."""
    if not sandbox or not index:
        return ""
    from cni_bridge.netlink import netlink_in
    try:
        fd = os.open(sandbox, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        with netlink_in(fd) as nl:
            link = nl.link(index=index)
            return link["name"] if link else ""
    except OSError:
        return ""
    finally:
        os.close(fd)


class Rules:
    """The firewall as it is now, read once per `inspect` (both families,
    both backends), searched by owner comment."""

    def __init__(self):
        self.lines: list[tuple[str, str]] = []  # (comment, shown text)
        from cni_bridge.firewall import iptables as ipt, nftables as nft
        for fam, (save, _restore) in ipt.TOOLS.items():
            if not shutil.which(save):
                continue
            text = _tool([save])
            table = ""
            for line in text.splitlines():
                if line.startswith("*"):
                    table = line[1:]
                elif line.startswith("-A "):
                    com = ipt._comment(line)
                    if com:
                        tool = "iptables" if fam == 4 else "ip6tables"
                        self.lines.append((com, f"{tool} -t {table} {line}"))
        if shutil.which("nft"):
            for fam, family in nft.FAMILY.items():
                text = _tool(["nft", "-a", "list", "table", family, "minidocker"])
                for chain, com, handle, rule in nft._parse(text):
                    if com:
                        rule = rule.split(" # handle", 1)[0]
                        self.lines.append((com, f"nft {family} minidocker {chain}: {rule}"))

    def owned_by(self, comment: str) -> list[str]:
        return [text for com, text in self.lines if com == comment]


def _tool(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def endpoint_debug(name: str, cid: str, ifname: str, sandbox: str, rules: Rules,
                   recorded_veth: str = "") -> dict:
    """What a person debugging would dig out by hand: the host veth and the
    container interface it is paired with, the namespace, the rules.
    `name` is the CNI network name; cni-bridge's veth is found by its name
    and alias, another plugin's by the name the endpoint recorded."""
    from cni_bridge.firewall import owner_comment
    from cni_bridge.link import host_veth_name, veth_alias
    veth = host_veth_name(name, cid, ifname)
    link = _link(veth)
    if link.get("alias") != veth_alias(name, cid, ifname):
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
        "Rules": rules.owned_by(owner_comment(name, cid, ifname)),
    }


def network_debug(net: Network, rules: Rules) -> dict:
    """The network's own objects: its bridge and its shared rules."""
    from cni_bridge.firewall import network_prefix
    link = _link(net.bridge)
    return {"Bridge": net.bridge, "BridgeIfindex": link.get("index", 0),
            "CNINetwork": cni_name(net),
            "Rules": rules.owned_by(network_prefix(cni_name(net)))}
