"""`events`: the journal (events.py) filtered, formatted, and followed."""
from __future__ import annotations

import json
import re
import sys
import time

from minidocker import events
from minidocker.errors import MinidockerError

FILTERS = ("container", "event", "type", "image")


def _matches(e: dict, wanted: dict[str, list[str]]) -> bool:
    attrs = e["Actor"]["Attributes"]
    tests = {"container": lambda v: e["Actor"]["ID"].startswith(v) or attrs.get("name") == v,
             "event": lambda v: e["Action"] == v,
             "type": lambda v: e["Type"] == v,
             "image": lambda v: attrs.get("image") == v}
    return all(any(tests[k](v) for v in values) for k, values in wanted.items())


def line(e: dict, fmt: str | None) -> str:
    if fmt == "json":
        return json.dumps(e, separators=(",", ":"))
    if fmt:
        fields = {"Type": e["Type"], "Action": e["Action"], "ID": e["Actor"]["ID"],
                  "Status": e["status"], "From": e["from"], "Time": str(e["time"]),
                  "TimeNano": str(e["timeNano"])}

        def one(m):
            if m.group(1) == "Actor.Attributes.name":
                return e["Actor"]["Attributes"].get("name", "")
            if m.group(1) not in fields:
                raise MinidockerError(f"invalid --format {fmt!r}: no field {m.group(1)!r}; known "
                                      f"are {', '.join(fields)}, Actor.Attributes.name")
            return fields[m.group(1)]
        return re.sub(r"\{\{\s*\.([\w.]+)\s*\}\}", one, fmt.replace("\\t", "\t"))
    ns = e["timeNano"]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"
    attrs = ", ".join(f"{k}={v}" for k, v in sorted(e["Actor"]["Attributes"].items()))
    return f"{stamp} {e['Type']} {e['Action']} {e['Actor']['ID']} ({attrs})"


def show(since: str | None, until: str | None, filters: list[str], fmt: str | None) -> None:
    from minidocker.logfile import parse_time
    from minidocker.psview import parse_filters
    wanted = parse_filters(filters, FILTERS)
    lo = parse_time(since, "--since") if since else time.time()
    hi = parse_time(until, "--until") if until else None
    seen = 0
    while True:
        journal = events.read()
        for e in journal[seen:]:
            t = e["timeNano"] / 1e9
            if t >= lo and (hi is None or t <= hi) and _matches(e, wanted):
                sys.stdout.write(line(e, fmt) + "\n")
        sys.stdout.flush()
        seen = len(journal)
        if hi is not None and time.time() >= hi:
            return
        time.sleep(0.2)
