"""Undoing a started container: network, rootfs mount, pinned namespace and,
for `--rm`, the container itself. Called by the shim when the process has
exited and by `rm -f`/`start`; every step tolerates having been done.

Kept apart from containers.py so the shim imports only this at exit.
"""
from __future__ import annotations

import errno
import os
import sys

from minidocker import paths, records, syscalls as sc
from minidocker.errors import MinidockerError
from minidocker.faults import fault
from minidocker.network import modes, netns

def unmount(path: str) -> None:
    try:
        sc.umount(path, sc.MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):
            raise


def release(record: dict, reaped: bool = False) -> None:
    """Network teardown, unmount, unpin (no lock taken; no removal).
    reaped: the caller (the shim) has reaped the process, nothing can be left."""
    cid = record["Id"]
    if not reaped:
        _kill_orphan(record)
    try:
        modes.parse(record["HostConfig"]["NetworkMode"]).detach(record)
    except Exception as exc:  # noqa: BLE001 - the rest must still be undone
        print(f"minidocker: network teardown of {cid[:12]}: {exc}", file=sys.stderr)
    if record["NetworkSettings"].get("SandboxKey"):  # not start()'s clean-up of nothing
        fault("teardown:half")
    unmount(os.path.join(paths.container_dir(cid), "rootfs"))
    netns.unpin(paths.netns_path(cid))
    try:
        os.unlink(paths.shim_socket(cid))  # a killed shim's terminal socket
    except FileNotFoundError:
        pass
    try:
        from minidocker.runtime import cgroups
        cgroups.remove(record.get("Cgroups") or {})
    except OSError as exc:
        print(f"minidocker: cgroup removal of {cid[:12]}: {exc}", file=sys.stderr)
    settings = record.setdefault("NetworkSettings", {})
    settings["SandboxKey"] = ""
    settings["Networks"] = {}
    settings["Ports"] = {}


def _kill_orphan(record: dict) -> None:
    """A container whose shim died (kill -9, OOM) still runs: its pid 1 is
    recognised by its root mount being our overlay, and killed with its
    pid namespace."""
    pid = record.get("State", {}).get("Pid") or 0
    if pid > 0 and root_is_container(pid, record["Id"]):
        try:
            os.kill(pid, 9)
        except OSError:
            pass


def root_is_container(pid: int, cid: str) -> bool:
    """True if pid's root mount is this container's overlay."""
    marker = f"upperdir={paths.container_upper(cid)},"
    try:
        with open(f"/proc/{pid}/mountinfo") as fh:
            return any(line.split()[4] == "/" and marker in line for line in fh)
    except OSError:
        return False


def _rmtree(path: str) -> None:
    """rm -rf without importing shutil (a few ms on every `run --rm`);
    symlinks are removed, never followed."""
    if not os.path.lexists(path):
        return
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            os.unlink(os.path.join(root, name))
        for name in dirs:
            full = os.path.join(root, name)
            if os.path.islink(full):
                os.unlink(full)
            else:
                os.rmdir(full)
    os.rmdir(path)


def remove_files(cid: str) -> None:
    try:
        record = records.load(cid)
    except MinidockerError:  # a corrupt record is removed all the same
        record = None
    if record:
        records.release_name(record["Name"], cid)
    unmount(os.path.join(paths.container_dir(cid), "rootfs"))
    _rmtree(paths.container_dir(cid))
    try:
        os.unlink(records.lock_path(cid))
    except FileNotFoundError:
        pass


def run(cid: str, auto_remove: bool = True, reaped: bool = False) -> None:
    """The teardown: idempotent, under the container's lock."""
    with records.locked(cid):
        record = records.load(cid)
        if record is None:
            return
        release(record, reaped)
        if record["HostConfig"].get("Runtime") == "runc":
            from minidocker.runtime import runc
            runc.delete(cid)
        if auto_remove and record["HostConfig"].get("AutoRemove") and not record["State"].get("Running"):
            remove_files(cid)
            if record.get("Mounts"):  # --rm takes the anonymous volumes with it, as Docker
                from minidocker import volumes
                volumes.remove_anonymous(record)
            from minidocker import events
            events.append("destroy", record)
        else:
            records.save(record)
