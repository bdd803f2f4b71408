"""`system prune`: bring the node back to exactly its running containers.

There is no daemon to notice a crash, so this reconciles on request:
containers whose shim is gone are marked exited and torn down (removed when
`--rm`), processes of no running container are killed, every network's
cached attachments and plugin state are garbage-collected through the
executor's GC with the running containers' attachments as the valid set
(cni-bridge's GC removes stray veths, rules and leases), and pinned
namespaces, mounts and state files that belong to no live container go.
Running containers are never touched. A second run finds nothing.
"""
from __future__ import annotations

import os
import signal
import sys

from minidocker import containers, paths, state, teardown
from minidocker.network import netns


def _running(records: list[dict]) -> set[str]:
    return {r["Id"] for r in records if r["State"].get("Running")}


def _detached_shims() -> set[str]:
    """Ids of containers whose detached shim runs (`python -m minidocker.shim
    ID FD`): one being started has a shim before its record says so."""
    out = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as fh:
                    argv = fh.read().split(b"\0")
            except OSError:
                continue
            if b"minidocker.shim" in argv:
                i = argv.index(b"minidocker.shim")
                if i + 1 < len(argv):
                    out.add(argv[i + 1].decode(errors="replace"))
    return out


def _starting(cid: str) -> bool:
    """A container being started right now holds its lock (start() and
    the shim's first update): leave it alone."""
    import fcntl
    try:
        fd = os.open(teardown.lock_path(cid), os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def container_processes() -> dict[str, list[int]]:
    """cid -> pids whose root is that container's overlay (found from
    /proc, so a process whose pid was never recorded is found too)."""
    marker = f"upperdir={paths.containers_dir()}/"
    out: dict[str, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/mountinfo") as fh:
                for line in fh:
                    fields = line.split()
                    if fields[4] == "/":
                        i = line.find(marker)
                        if i >= 0:
                            cid = line[i + len(marker):].split("/", 1)[0]
                            out.setdefault(cid, []).append(int(name))
                        break
        except (OSError, IndexError):
            continue
    return out


def _mounts_under(roots: list[str]) -> list[str]:
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4] for line in fh]
    return [p for p in points if any(p.startswith(r + "/") for r in roots)]


def _leases() -> set[str]:
    base = paths.state_root() / "ipam"
    if not base.is_dir():
        return set()
    return {str(p) for p in base.rglob("*") if p.is_file() and not p.name.startswith(("last_", "lock"))}


def _veths() -> set[str]:
    from cni_bridge.netlink import Netlink
    with Netlink() as nl:
        return {l["name"] for l in nl.links()
                if l["kind"] == "veth" and (l["alias"] or "").startswith("minidocker/")}


def _rules() -> set[str]:
    from cni_bridge import firewall
    out: set[str] = set()
    for backend in firewall.BACKENDS:
        try:
            out |= {f"{backend}:{c}" for c in firewall.driver(backend).owned()}
        except Exception:  # noqa: BLE001 - a backend whose tool is missing holds nothing
            pass
    return out


class Report:
    def __init__(self):
        self.lines: dict[str, list[str]] = {}

    def add(self, what: str, item: str) -> None:
        self.lines.setdefault(what, []).append(item)

    def total(self) -> int:
        return sum(len(v) for v in self.lines.values())


def prune() -> Report:
    report = Report()
    before = {"Removed veths": _veths(), "Removed firewall rules": _rules(), "Removed leases": _leases()}
    records = containers.all_records()
    live = _running(records)
    shims = _detached_shims()
    busy = {r["Id"] for r in records if r["Id"] not in live and (r["Id"] in shims or _starting(r["Id"]))}
    keep = live | busy
    # 1. processes of no running container (a killed shim's container, a
    # process started just before its shim died)
    for cid, pids in container_processes().items():
        if cid in keep:
            continue
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                report.add("Killed processes of no running container", f"{pid} ({cid[:12]})")
            except ProcessLookupError:
                pass
    # 2. containers that are not running: their network, mount, pin
    for record in records:
        cid = record["Id"]
        if cid in keep:
            continue
        _reconcile(cid, report)
    # 3. every network: the executor's GC with the valid attachments
    _gc_networks(keep, report)
    # 4. pinned namespaces, mounts and state of no container
    _stray_files(keep, report)
    after = {"Removed veths": _veths(), "Removed firewall rules": _rules(), "Removed leases": _leases()}
    for what in before:
        for item in sorted(before[what] - after[what]):
            report.add(what, item.rsplit("/ipam/", 1)[-1])
    return report


def _reconcile(cid: str, report: Report) -> None:
    """Under the container's lock: record the shim's death, tear down."""
    from minidocker.network import attach
    with state.locked(teardown.lock_path(cid)):
        record = teardown.load(cid)
        if record is None:
            return
        was_running = record["State"].get("Running")
        containers._refresh(record)
        if record["State"].get("Running"):
            return
        rootfs = str(paths.container_dir(cid) / "rootfs")
        pin = str(paths.netns_path(cid))
        traces = (was_running or bool(attach.endpoints_of(cid)) or os.path.ismount(rootfs)
                  or os.path.lexists(pin) or bool(record["NetworkSettings"].get("SandboxKey")))
        if not traces:
            return
        teardown.release(record)
        if record["HostConfig"].get("Runtime") == "runc":
            from minidocker.runtime import runc
            runc.delete(cid)
        if record["HostConfig"].get("AutoRemove"):
            teardown.remove_files(cid)
            report.add("Removed containers (--rm)", cid)
        else:
            teardown.save(record)
            report.add("Torn down containers (shim or process gone)", cid)


def _networks():
    """(network name, conflist) of native networks, CNI-directory networks,
    and networks only the CNI cache still names (their file is gone)."""
    from cni.conf import NetworkConfigList
    from minidocker.network import attach, store
    seen: dict[str, object] = {}
    for net in store.records() + attach.cni_networks():
        try:
            seen[net.name] = attach.conflist(net)
        except Exception as exc:  # noqa: BLE001 - one broken network must not stop the rest
            print(f"minidocker: prune: network {net.name}: {exc}", file=sys.stderr)
    for entry in attach.executor().cache.attachments():
        if entry.network not in seen and entry.config:
            try:
                seen[entry.network] = NetworkConfigList.from_bytes(entry.config)
            except Exception:  # noqa: BLE001
                continue
    return seen


def _gc_networks(keep: set[str], report: Report) -> None:
    from minidocker.network import attach, store
    valid = []
    for nid, cid, ep in list(attach.all_endpoints()):
        if cid in keep:
            valid.append((cid, ep.get("IfName") or "eth0"))
        else:
            net = attach._net_of(ep)
            store.remove_endpoint(net, cid)
            report.add("Removed endpoint records", f"{ep.get('Network', nid)}/{cid[:12]}")
    ex = attach.executor()
    cached = {(e.network, e.container_id, e.ifname) for e in ex.cache.attachments()}
    for name, nlist in _networks().items():
        try:
            ex.gc(nlist, valid=valid)
        except Exception as exc:  # noqa: BLE001 - GC keeps going; say what failed
            print(f"minidocker: prune: GC of network {name}: {exc}", file=sys.stderr)
    for net, cid, ifname in sorted(cached - {(e.network, e.container_id, e.ifname)
                                             for e in ex.cache.attachments()}):
        report.add("Removed network attachments (executor GC)", f"{net}/{cid[:12]}/{ifname}")
    for net in store.records():
        if net.bridge and not store.endpoints(net):
            attach._drop_idle_bridge(net)


def _stray_files(keep: set[str], report: Report) -> None:
    known = set()
    base = paths.containers_dir()
    if base.is_dir():
        with containers._global_lock():
            for entry in sorted(os.listdir(base)):
                if (base / entry / teardown.RECORD).exists():
                    known.add(entry)
                else:  # a directory without a record (crash inside create)
                    teardown.remove_files(entry)
                    report.add("Removed state without a record", entry)
    ns_dir = paths.netns_dir()
    if ns_dir.is_dir():
        for name in sorted(os.listdir(ns_dir)):
            if name not in keep:
                netns.unpin(str(ns_dir / name))
                report.add("Removed pinned network namespaces", name)
    mine = {str(paths.container_dir(c) / "rootfs") for c in keep} | {str(paths.netns_path(c)) for c in keep}
    for point in sorted(_mounts_under([str(paths.state_root()), str(paths.run_root())]),
                        key=len, reverse=True):
        if point not in mine:
            teardown.unmount(point)
            report.add("Removed mounts", point)
    locks = paths.locks_dir() / "containers"
    if locks.is_dir():
        for name in os.listdir(locks):
            if name.endswith(".lock") and name[:-5] not in known:
                os.unlink(locks / name)
