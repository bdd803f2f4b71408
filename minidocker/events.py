"""The events journal: one JSON line per container event (Docker's
`events` shape: Type, Action, Actor.ID, Actor.Attributes, time, timeNano),
appended by the commands and the shim that cause them, read by `events`.
Appends are single O_APPEND writes, so concurrent writers do not tear lines.
Stdlib only: the shim writes `start` and `die`."""
from __future__ import annotations

import os
import time

from cni import fastjson
from minidocker import paths


def append(action: str, record: dict, **attributes) -> None:
    """Journal `action` of the container record (never fails the caller)."""
    ns = time.time_ns()
    attrs = {"image": (record.get("Config") or {}).get("Image", ""),
             "name": record.get("Name", "").lstrip("/")}
    attrs.update({k: str(v) for k, v in attributes.items()})
    line = fastjson.dumps({"status": action, "id": record.get("Id", ""), "from": attrs["image"],
                           "Type": "container", "Action": action,
                           "Actor": {"ID": record.get("Id", ""), "Attributes": attrs},
                           "scope": "local", "time": ns // 10**9, "timeNano": ns},
                          separators=(",", ":")) + "\n"
    try:
        fd = os.open(paths.events_file(), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        os.write(fd, line.encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def read() -> list[dict]:
    try:
        with open(paths.events_file(), "rb") as fh:
            return [e for e in (_parse(l) for l in fh) if e]
    except FileNotFoundError:
        return []


def _parse(line: bytes) -> dict | None:
    try:
        event = fastjson.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "timeNano" in event else None
