"""Name resolution on user networks: each container's generated /etc/hosts.

The file is bind-mounted into the container, so it is rewritten in place
(same inode), never replaced. It holds the usual localhost lines, the
container's own addresses and `--add-host` entries, and one line per
address of every other container that shares a user network with it (its
name, `--network-alias`es and short id), so containers started later are
found too: every attach and detach on a user network rewrites the files of
all containers on it. The default `bridge` network has no names, as Docker's.
"""
from __future__ import annotations

import os

from minidocker import paths, records, state
from minidocker.etcfiles import HOSTS
from minidocker.network import store
from minidocker.network.networks import DEFAULT_NETWORK



def _lock():
    return state.locked(paths.locks_dir() / "hosts.lock")


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


def refresh(cids: set[str]) -> None:
    """Rewrite the hosts files of these containers from the endpoint records."""
    by_cid: dict[str, list[dict]] = {}
    by_net: dict[str, list[dict]] = {}
    for nid, cid, ep in store.all_endpoints():
        by_cid.setdefault(cid, []).append(ep)
        by_net.setdefault(nid, []).append(ep)
    with _lock():
        for cid in cids:
            record = records.load(cid)
            if record is None or not record.get("HostsPath"):
                continue
            own = by_cid.get(cid, [])
            peers, seen = [], set()
            for ep in own:
                if ep.get("Network") == DEFAULT_NETWORK:  # Docker: no names there
                    continue
                for other in by_net.get(ep["NetworkID"], []):
                    key = (other.get("ContainerID"), other.get("NetworkID"))
                    if other.get("ContainerID") != cid and key not in seen:
                        seen.add(key)
                        peers.append(other)
            if os.path.exists(record["HostsPath"]):
                write_in_place(record["HostsPath"], render(record, own, peers))

