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
    return os.path.join(paths.container_dir(cid), RECORD)


def exists(cid: str) -> bool:
    """A record is on disk (whatever its content)."""
    return os.path.exists(path(cid))


def lock_path(cid: str):
    return os.path.join(paths.locks_dir(), "containers", f"{cid}.lock")


def locked(cid: str):
    """The container's lock: held by every read-modify-write of its record,
    its start and its teardown."""
    return state.locked(lock_path(cid))


def names_lock():
    """Held while a new container's name is chosen and its directory made."""
    return state.locked(os.path.join(paths.locks_dir(), "containers.lock"))


def ids() -> list[str]:
    """The ids of every container directory (with or without a record)."""
    base = paths.containers_dir()
    return sorted(os.listdir(base)) if os.path.isdir(base) else []


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
    if not os.path.exists(base):
        return out
    for name in os.listdir(base):
        record = load(name)
        if record:
            out.append(refresh(record))
    out.sort(key=lambda r: r.get("Created", ""), reverse=True)
    return out


# --- the name index: one file per name, so a name is found without reading
# every record. An entry is trusted only when the record it names carries the
# name (a crash between the two leaves a stale entry, which is ignored).

def _name_file(name: str):
    return os.path.join(paths.names_dir(), name.lstrip("/"))


def _named(name: str) -> dict | None:
    try:
        with open(_name_file(name)) as fh:
            cid = fh.read().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    record = load(cid) if cid and "/" not in cid and cid not in (".", "..") else None
    return record if record and record["Name"] == "/" + name.lstrip("/") else None


def _ensure_name_index() -> None:
    """Made once from the records of a state root older than the index.
    Call under names_lock()."""
    if os.path.isdir(paths.names_dir()):
        return
    for record in all_records():
        if record["Name"]:
            state.write_text(_name_file(record["Name"]), record["Id"])
    state.ensure_dir(paths.names_dir())


def name_holder(name: str) -> str | None:
    """The id of the container named `name`, None if the name is free.
    Call under names_lock()."""
    _ensure_name_index()
    record = _named(name)
    return record["Id"] if record else None


def claim_name(name: str, cid: str) -> None:
    """Record that cid is named `name`; under names_lock(), after name_holder."""
    state.write_text(_name_file(name), cid)


def release_name(name: str, cid: str) -> None:
    """Drop `name` from the index if it still names cid."""
    if not name:
        return
    try:
        with open(_name_file(name)) as fh:
            if fh.read().strip() != cid:
                return
        os.unlink(_name_file(name))
    except FileNotFoundError:
        pass


def find(ref: str) -> dict:
    """A container by name, full id or unique id prefix: the id and name
    through their files, a prefix through the directory's listing, so the
    cost does not grow with the number of containers' records."""
    name = "/" + ref.lstrip("/")
    if len(ref) == 64 and "/" not in ref:
        record = load(ref)
        if record:
            return refresh(record)
    if not os.path.isdir(paths.names_dir()):  # a root older than the name index
        for record in all_records():
            if record["Id"] == ref or record["Name"] == name:
                return record
    elif "/" not in ref.lstrip("/") and ref.lstrip("/") not in ("", ".", ".."):
        record = _named(ref)
        if record:
            return refresh(record)
    if 0 < len(ref) <= 64 and all(c in "0123456789abcdef" for c in ref):
        hits = [r for r in (load(c) for c in ids() if c.startswith(ref)) if r]
        if len(hits) == 1:
            return refresh(hits[0])
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise MinidockerError(f"container id prefix {ref!r} is ambiguous: it matches "
                                  f"{len(hits)} containers")
    raise NotFound(f"no such container: {ref!r} (give a name, an id or a unique id prefix; "
                   "see `minidocker ps -a`)")
