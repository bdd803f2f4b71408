"""The container record store: the one way to read and write a container's
record (`containers/<id>/container.json`, Docker's inspect shape).

Every reader goes through `load()`, so a hand-edited, truncated or hostile
record is one error naming the file wherever it is met. Writers hold the
container's lock (`locked(cid)`) around load-modify-`save`. Stdlib only: the
shim imports this at exit.
"""
from __future__ import annotations

import os

from minidocker import paths, state

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
