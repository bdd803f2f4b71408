"""The lifecycle commands beyond run/start/stop/rm: kill, wait, pause and
unpause (the freezer cgroup), rename, restart. Each journals its event."""
from __future__ import annotations

import re
import time

from minidocker import containers, events, records
from minidocker.errors import Conflict, MinidockerError
from minidocker.runtime import cgroups


def _running(ref: str) -> dict:
    record = containers.find(ref)
    if not record["State"].get("Running"):
        raise MinidockerError(f"container {record['Name'].lstrip('/')} ({record['Id'][:12]}) "
                              "is not running")
    return record


def kill(ref: str, sig_text: str = "KILL") -> dict:
    """Send a signal to the container's main process (SIGKILL by default).
    The restart policy leaves a killed container be, as Docker's."""
    sig = containers.parse_signal(sig_text, "kill -s")
    record = _running(ref)
    containers.mark_stopped(record["Id"])
    events.append("kill", record, signal=sig)
    containers.signal_container(record, sig)
    return record


def wait(ref: str) -> int:
    """Block until the container stops; its exit code."""
    record = containers.find(ref)
    while True:
        current = records.load(record["Id"])
        if current is None:
            return record["State"].get("ExitCode", 0)
        if not containers.shim_alive(current):
            return current["State"].get("ExitCode", 0)
        time.sleep(0.05)


def pause(ref: str) -> dict:
    record = _running(ref)
    if record["State"].get("Paused"):
        raise Conflict(f"container {record['Id'][:12]} is already paused")
    cgroups.freeze(record.get("Cgroups") or {}, True)
    containers.set_paused(record, True)
    events.append("pause", record)
    return record


def unpause(ref: str) -> dict:
    record = _running(ref)
    if not record["State"].get("Paused"):
        raise Conflict(f"container {record['Id'][:12]} is not paused")
    containers.thaw(record)
    events.append("unpause", record)
    return record


def rename(ref: str, new: str) -> dict:
    if not re.match(containers.NAME_RE, new):
        raise MinidockerError(f"invalid container name {new!r}: use [a-zA-Z0-9] then "
                              "[a-zA-Z0-9_.-], at least 2 characters")
    record = containers.find(ref)
    name = "/" + new.lstrip("/")
    with records.names_lock():
        for other in containers.all_records():
            if other["Name"] == name:
                raise Conflict(f"the container name {name!r} is already in use by container "
                               f"{other['Id'][:12]}: pick another name")
        with records.locked(record["Id"]):
            current = records.load(record["Id"])
            old = current["Name"]
            current["Name"] = name
            records.save(current)
    events.append("rename", current, oldName=old)
    return current


def restart(ref: str, timeout: float | None = None) -> dict:
    containers.stop(ref, timeout)
    record = containers.find(ref)
    containers.start(record["Id"])
    events.append("restart", record)
    return record

