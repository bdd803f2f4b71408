"""Name resolution on user networks: each container's generated /etc/hosts.

The file is bind-mounted into the container, so it is rewritten in place
(same inode), never replaced. It holds the usual localhost lines, the
container's own addresses and `--add-host` entries. On a native user
network that is a container's first (eth0) the others' names come from the
network's DNS server (minidocker/dns/; its resolv.conf names that one), as
Docker's: an attach or detach there rewrites only that container's file,
whatever the number of containers. Peers are listed, one line per address
(name, `--network-alias`es, short id), for the networks a container joined
later (`network connect`: another network's server answers its queries),
and on networks without a DNS server (CNI-file, IPv6-only). Those files
follow every attach and detach on the network: the `hosts-listed` markers
under the network's directory name the containers that list its peers
(all of them where there is no DNS server). The default `bridge` network
has no names, as Docker's.
"""
from __future__ import annotations

import os
from pathlib import Path

from minidocker import paths, records, state
from minidocker.etcfiles import HOSTS
from minidocker.network import store
from minidocker.network.networks import DEFAULT_NETWORK



def _lock():
    return state.locked(Path(paths.locks_dir()) / "hosts.lock")


def _addrs(ep: dict) -> list[str]:
    return [ep[k].split("/")[0] for k in ("IPv4Address", "IPv6Address") if ep.get(k)]


def render(record: dict, own: list[dict], peers: list[dict]) -> str:
    """The hosts text of one container from its endpoints and its peers'."""
    lines = [HOSTS.rstrip("\n")]
    for entry in (record.get("HostConfig") or {}).get("ExtraHosts") or []:
        name, _, ip = entry.partition(":")
        lines.append(f"{ip}\t{name}")
    hostname = (record.get("Config") or {}).get("Hostname") or record["Id"][:12]
    seen = set()
    for ep in own:
        for ip in _addrs(ep):
            if ip not in seen:
                seen.add(ip)
                lines.append(f"{ip}\t{hostname}")
    for ep in peers:
        names = [ep.get("Name", "")] + list(ep.get("Aliases") or []) + [ep.get("ContainerID", "")[:12]]
        names = [n for i, n in enumerate(names) if n and n not in names[:i]]
        for ip in _addrs(ep):
            lines.append(f"{ip}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"


def write_in_place(path: str, text: str) -> None:
    """Same inode: a bind mount of the file sees the new content."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        data = text.encode()
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.pwrite(fd, view, len(data) - len(view)):]
    finally:
        os.close(fd)


def _served(net_id: str) -> bool:
    """The network's names are answered by its DNS server."""
    from minidocker.dns import lifecycle
    from minidocker.network import networks
    net = networks.by_id(net_id)
    return net is not None and bool(lifecycle.address(net))


def _markers(net_id: str):
    return Path(paths.networks_dir()) / net_id / "hosts-listed"


def follow(net, cid: str, ifname: str, joined: bool) -> None:
    """After `cid` joined or left `net` as `ifname`: rewrite the hosts files
    that change (its own, and those that list the network's peers)."""
    if not net.names_containers:
        return
    if not _served(net.id):
        refresh(set(store.endpoints(net)) | {cid})
        return
    marker = _markers(net.id) / cid
    if joined and ifname != "eth0":
        state.ensure_dir(marker.parent)
        marker.touch()
    elif not joined:
        try:
            marker.unlink()
        except FileNotFoundError:
            pass
    try:
        listed = set(os.listdir(_markers(net.id)))
    except FileNotFoundError:
        listed = set()
    refresh(listed | {cid})


def refresh(cids: set[str]) -> None:
    """Rewrite the hosts files of these containers from the endpoint records."""
    by_net: dict[str, list[dict]] = {}  # read once per network, only where names are kept
    with _lock():
        for cid in cids:
            record = records.load(cid)
            if record is None or not record.get("HostsPath"):
                continue
            own = store.endpoints_of(cid)
            peers, seen = [], set()
            for ep in own:
                if ep.get("Network") == DEFAULT_NETWORK:  # Docker: no names there
                    continue
                if (ep.get("IfName") or "eth0") == "eth0" and _served(ep["NetworkID"]):
                    continue  # its DNS server answers these names
                if ep["NetworkID"] not in by_net:
                    by_net[ep["NetworkID"]] = list(store.endpoints_by_id(ep["NetworkID"]).values())
                for other in by_net[ep["NetworkID"]]:
                    key = (other.get("ContainerID"), other.get("NetworkID"))
                    if other.get("ContainerID") != cid and key not in seen:
                        seen.add(key)
                        peers.append(other)
            if os.path.exists(record["HostsPath"]):
                write_in_place(record["HostsPath"], render(record, own, peers))

