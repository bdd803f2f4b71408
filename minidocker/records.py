"""The container record store: the one way to read, write, lock and find a
container's record (`containers/<id>/container.json`, Docker's inspect shape).

Every reader goes through `load()`, so a hand-edited, truncated or hostile
record is one error naming the file wherever it is met. Writers hold the
container's lock (`locked(cid)`) around load-modify-`save`. Stdlib only:
the shim imports it.
"""
from __future__ import annotations

import os

from minidocker import clock, paths, state
from minidocker.errors import MinidockerError, NotFound

RECORD = "container.json"

# The record's fields every command relies on, with their types.
_SHAPE = (("Id", str), ("Name", str), ("Path", str), ("Args", list), ("Image", str),
          ("State", dict), ("Config", dict), ("HostConfig", dict), ("NetworkSettings", dict))


def path(cid: str):
    return paths.container_dir(cid) / RECORD


def exists(cid: str) -> bool:
    """A record is on disk (whatever its content)."""
    return path(cid).exists()


def lock_path(cid: str):
    return paths.locks_dir() / "containers" / f"{cid}.lock"


def locked(cid: str):
    """The container's lock: held by every read-modify-write of its record,
    its start and its teardown."""
    return state.locked(lock_path(cid))


def names_lock():
    """Held while a new container's name is chosen and its directory made."""
    return state.locked(paths.locks_dir() / "containers.lock")


def ids() -> list[str]:
    """The ids of every container directory (with or without a record)."""
    base = paths.containers_dir()
    return sorted(os.listdir(base)) if base.is_dir() else []


def load(cid: str) -> dict | None:
    """The container's record, None if it has none; a record that is not
    JSON, has the wrong shape or another container's Id (which rm would
    follow out of the state directory) is an error naming the file."""
    where = path(cid)
    record = state.read_json(where)
    if record is None:
        return None
    if not isinstance(record, dict):
        raise state.corrupt(where, "not a JSON object")
    for key, kind in _SHAPE:
        if not isinstance(record.get(key), kind):
            kind_name = {dict: "an object", list: "a list", str: "a string"}[kind]
            raise state.corrupt(where, f"field {key} is missing or not {kind_name}")
    if record["Id"] != cid:
        raise state.corrupt(where, f"its Id {record['Id'][:80]!r} is not its directory's name")
    return record


def save(record: dict) -> None:
    state.write_json(path(record["Id"]), record)


# --- finding ---------------------------------------------------------------------

def start_time(pid: int) -> int:
    """The process's start time (clock ticks since boot; 0 if it is gone or
    a zombie): with the pid it names one process for good, whatever its
    cmdline (an attached shim is a fork of `run` and carries run's)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return 0 if fields[0] in (b"Z", b"X") else int(fields[19])
    except (OSError, IndexError, ValueError):
        return 0


def shim_alive(record: dict) -> bool:
    pid = record.get("ShimPid") or 0
    if pid <= 0:
        return False
    if record.get("ShimStart"):
        return start_time(pid) == record["ShimStart"]
    try:  # a record from before ShimStart: the detached shim's argv names the container
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return record["Id"].encode() in fh.read()
    except OSError:
        return False


def refresh(record: dict) -> dict:
    """A record claiming `running` whose shim is gone (killed, rebooted)."""
    st = record["State"]
    if st.get("Running") and not shim_alive(record):
        st.update(Running=False, Status="exited", ExitCode=st.get("ExitCode") or 255,
                  Error="the container's shim is gone", FinishedAt=st.get("FinishedAt") or clock.now())
    return record


def all_records() -> list[dict]:
    """Every container's record, newest first, `running` checked against its shim."""
    out = []
    base = paths.containers_dir()
    if not base.exists():
        return out
    for entry in base.iterdir():
        record = load(entry.name)
        if record:
            out.append(refresh(record))
    out.sort(key=lambda r: r.get("Created", ""), reverse=True)
    return out


def find(ref: str) -> dict:
    """A container by name, full id or unique id prefix."""
    recs = all_records()
    name = "/" + ref.lstrip("/")
    for record in recs:
        if record["Id"] == ref or record["Name"] == name:
            return record
    if 0 < len(ref) <= 64 and all(c in "0123456789abcdef" for c in ref):
        hits = [r for r in recs if r["Id"].startswith(ref)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise MinidockerError(f"container id prefix {ref!r} is ambiguous: it matches "
                                  f"{len(hits)} containers")
    raise NotFound(f"no such container: {ref!r} (give a name, an id or a unique id prefix; "
                   "see `minidocker ps -a`)")
