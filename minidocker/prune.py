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
import sys
from pathlib import Path

import psutil

from minidocker import containers, paths, records, teardown
from minidocker.network import netns


def _running(recs: list[dict]) -> set[str]:
    return {r["Id"] for r in recs if r["State"].get("Running")}


def _shims() -> set[str]:
    """Live shims, as the 8-hex id prefix each one names itself with (its
    comm, shimwait.COMM_PREFIX): one being started has a shim before its record
    says so, and an attached shim's argv is `run`'s."""
    from minidocker.shimwait import COMM_PREFIX
    out = set()
    for proc in psutil.process_iter(["name", "status"]):
        name, status = proc.info["name"] or "", proc.info["status"]
        if name.startswith(COMM_PREFIX) and status not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            out.add(name[len(COMM_PREFIX):])
    return out


def _started(record: dict) -> bool:
    """Anything of the container on the node, or an exit to record."""
    cid = record["Id"]
    return bool(record["State"].get("StartedAt", containers.NEVER) != containers.NEVER
                or record["NetworkSettings"].get("SandboxKey")
                or os.path.lexists(paths.netns_path(cid))
                or os.path.ismount(os.path.join(paths.container_dir(cid), "rootfs")))


def _starting(cid: str) -> bool:
    """A container being started right now holds its lock (start() and
    the shim's first update): leave it alone."""
    import fcntl
    try:
        fd = os.open(records.lock_path(cid), os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def container_processes() -> dict[str, list[psutil.Process]]:
    """cid -> processes whose root is that container's overlay (found from
    every process's mount table, so one whose pid was never recorded is
    found too)."""
    marker = f"upperdir={Path(paths.containers_dir())}/"
    out: dict[str, list[psutil.Process]] = {}
    for proc in psutil.process_iter():
        try:
            with open(f"/proc/{proc.pid}/mountinfo") as fh:
                for line in fh:
                    fields = line.split()
                    if fields[4] == "/":
                        i = line.find(marker)
                        if i >= 0:
                            cid = line[i + len(marker):].split("/", 1)[0]
                            out.setdefault(cid, []).append(proc)
                        break
        except (OSError, IndexError):
            continue
    return out


def _mounts_under(roots: list[str]) -> list[str]:
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4] for line in fh]
    return [p for p in points if any(p.startswith(r + "/") for r in roots)]


def _leases() -> set[str]:
    base = Path(paths.state_root()) / "ipam"
    if not base.is_dir():
        return set()
    return {str(p) for p in base.rglob("*") if p.is_file() and not p.name.startswith(("last_", "lock", "."))}


def _veths() -> set[str]:
    """The node's veths that name an attachment of ours in their alias (the
    census before and after), from the one reader of live kernel facts."""
    from minidocker.network import kernel
    return {l["name"] for l in kernel.Namespace().links.values()
            if l["kind"] == "veth" and l["alias"].startswith("minidocker/")}


def _rules() -> set[str]:
    """The owner comments of our rules, per backend (the census)."""
    from minidocker.network import kernel
    return {f"{r['backend']}:{r['comment']}" for r in kernel.Rules().all if r["comment"].startswith("md/")}


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
    recs = containers.all_records()
    live = _running(recs)
    # In this order: record, lock, shim. start() holds the lock until the
    # shim exists, so a container being started shows one of the three.
    # A `created` container without a pin or mount was never started (or
    # is between create() and start()): nothing of it to undo.
    candidates = [r for r in recs if r["Id"] not in live and _started(r)]
    candidates = [r for r in candidates if not _starting(r["Id"])]
    shims = _shims()
    # Dead: not running, not starting. One created while we work has a
    # record before anything else of it exists (create() writes it first),
    # so `gone()` never takes it for dead.
    dead = {r["Id"] for r in candidates if r["Id"][:8] not in shims}

    def gone(cid: str) -> bool:
        return cid in dead or not records.exists(cid)

    # 1. processes of no running container (a killed shim's container, a
    # process started just before its shim died)
    for cid, procs in container_processes().items():
        if not gone(cid):
            continue
        for proc in procs:
            try:
                proc.kill()
                report.add("Killed processes of no running container", f"{proc.pid} ({cid[:12]})")
            except psutil.NoSuchProcess:
                pass
    # 2. containers that are not running: their network, mount, pin
    for cid in sorted(dead):
        _reconcile(cid, report)
    # 3. every network: the executor's GC with the valid attachments
    _gc_networks(gone, report)
    # 4. pinned namespaces, mounts and state of no container
    _stray_files(gone, report)
    # 5. services and DNS servers: as the endpoint records now say
    from minidocker import services
    from minidocker.dns import lifecycle as dns
    services.sync()
    for name in dns.reap():
        report.add("Stopped DNS servers", name)
    after = {"Removed veths": _veths(), "Removed firewall rules": _rules(), "Removed leases": _leases()}
    for what in before:
        for item in sorted(before[what] - after[what]):
            report.add(what, item.rsplit("/ipam/", 1)[-1])
    return report


def _reconcile(cid: str, report: Report) -> None:
    """Under the container's lock: record the shim's death, tear down."""
    from minidocker.network import store
    with records.locked(cid):
        record = records.load(cid)
        if record is None:
            return
        was_running = record["State"].get("Running")
        containers.refresh(record)
        if record["State"].get("Running") or cid[:8] in _shims():
            return  # started while we looked
        rootfs = os.path.join(paths.container_dir(cid), "rootfs")
        pin = paths.netns_path(cid)
        traces = (was_running or bool(store.endpoints_of(cid)) or os.path.ismount(rootfs)
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
            records.save(record)
            report.add("Torn down containers (shim or process gone)", cid)


def _networks():
    """(network name, conflist) of native networks, CNI-directory networks,
    and networks only the CNI cache still names (their file is gone)."""
    from cni.conf import NetworkConfigList
    from minidocker.network import driver, networks
    seen: dict[str, object] = {}
    for net in networks.records() + networks.file_networks():
        try:
            seen[net.name] = driver.conflist(net)
        except Exception as exc:  # noqa: BLE001 - one broken network must not stop the rest
            print(f"minidocker: prune: network {net.name}: {exc}", file=sys.stderr)
    for entry in driver.executor().cache.attachments():
        if entry.network not in seen and entry.config:
            try:
                seen[entry.network] = NetworkConfigList.from_bytes(entry.config)
            except Exception:  # noqa: BLE001
                continue
    return seen


def _gc_networks(gone, report: Report) -> None:
    """Endpoint records of dead containers go; then every network's GC keeps
    the attachments of every container that is not dead (so one being
    started meanwhile keeps its own). cni-bridge's GC removes what is not
    valid: veths, rules, leases, and a bridge left without ports."""
    from minidocker.network import driver, store
    for nid, cid, ep in list(store.all_endpoints()):
        if gone(cid):
            store.remove_endpoint(store.network_of(ep), cid)
            report.add("Removed endpoint records", f"{ep.get('Network', nid)}/{cid[:12]}")
    ex = driver.executor()
    before = ex.cache.attachments()

    def valid():  # under the GC lock: what was ADDed while GC waited counts
        return sorted({(e.container_id, e.ifname) for e in ex.cache.attachments() if not gone(e.container_id)}
                      | {(cid, ep.get("IfName") or "eth0") for _n, cid, ep in store.all_endpoints()})

    for name, nlist in _networks().items():
        try:
            ex.gc(nlist, valid=valid)
        except Exception as exc:  # noqa: BLE001 - GC keeps going; say what failed
            print(f"minidocker: prune: GC of network {name}: {exc}", file=sys.stderr)
    after = {(e.network, e.container_id, e.ifname) for e in ex.cache.attachments()}
    for net, cid, ifname in sorted({(e.network, e.container_id, e.ifname) for e in before} - after):
        report.add("Removed network attachments (executor GC)", f"{net}/{cid[:12]}/{ifname}")


def _owner(point: str) -> str | None:
    """The container a mount under our roots belongs to (its rootfs or
    pinned namespace), None for anything else."""
    for base, tail in ((paths.containers_dir() + "/", "/rootfs"), (paths.netns_dir() + "/", "")):
        if point.startswith(base):
            rest = point[len(base):]
            cid = rest[:-len(tail)] if tail and rest.endswith(tail) else rest
            if "/" not in cid:
                return cid
    return None


def _stray_files(gone, report: Report) -> None:
    known = set()
    base = Path(paths.containers_dir())
    if base.is_dir():
        with records.names_lock():  # create() makes the directory, then the record
            for entry in sorted(os.listdir(base)):
                if records.exists(entry):
                    known.add(entry)
                else:  # a directory without a record (crash inside create, lost state)
                    teardown.remove_files(entry)
                    report.add("Removed state without a record", entry)
    ns_dir = Path(paths.netns_dir())
    if ns_dir.is_dir():
        for name in sorted(os.listdir(ns_dir)):
            if gone(name):
                netns.unpin(str(ns_dir / name))
                report.add("Removed pinned network namespaces", name)
    for point in sorted(_mounts_under([paths.state_root(), paths.run_root()]),
                        key=len, reverse=True):
        cid = _owner(point)
        if cid is None or gone(cid):
            teardown.unmount(point)
            report.add("Removed mounts", point)
    locks = Path(paths.locks_dir()) / "containers"
    if locks.is_dir():
        for name in os.listdir(locks):
            if name.endswith(".lock") and name[:-5] not in known:
                try:
                    os.unlink(locks / name)
                except FileNotFoundError:
                    pass
