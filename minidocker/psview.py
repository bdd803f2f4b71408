"""`ps --filter` and `ps --format`: which containers, and how each is shown.

Filters as Docker: `label=KEY` or `label=KEY=VALUE`, `status=` (created,
restarting, running, removing, paused, exited, dead), `name=` (a substring
or regular expression of the name), `id=` (a prefix); the same key given
twice matches either, different keys must all match. `--format` takes
Go-template-like text with `{{.Field}}`, `{{.Label "key"}}` and
`{{json .Field}}` (`table ` in front adds a header and aligns columns;
`\\t` and `\\n` are a tab and a newline), or `json` (a JSON object a line).
"""
from __future__ import annotations

import json
import re

from minidocker.errors import MinidockerError

STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")
FILTER_KEYS = ("label", "status", "name", "id")
HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND",
           "CreatedAt": "CREATED AT", "RunningFor": "CREATED", "Ports": "PORTS",
           "State": "STATE", "Status": "STATUS", "Size": "SIZE", "Names": "NAMES",
           "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS", "Label": "LABEL"}
_ACTION = re.compile(r"\{\{\s*(json\s+)?\.([A-Za-z]*)(?:\s+\"([^\"]*)\")?\s*\}\}")


def parse_filters(items: list[str], keys=FILTER_KEYS) -> dict[str, list[str]]:
    """--filter KEY=VALUE items (KEY one of keys) by key; `events` uses it too."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or key not in keys:
            raise MinidockerError(f"invalid filter {item!r}: expected KEY=VALUE with KEY one of "
                                  f"{', '.join(keys)}")
        if key == "status" and value not in STATUSES:
            raise MinidockerError(f"invalid filter 'status={value}': accepted are "
                                  f"{', '.join(STATUSES)}")
        out.setdefault(key, []).append(value)
    return out


def _status(record: dict) -> str:
    st = record["State"]
    return "paused" if st.get("Paused") else st.get("Status", "created")


def _label_match(labels: dict, want: str) -> bool:
    key, eq, value = want.partition("=")
    return key in labels and (not eq or labels[key] == value)


def _name_match(name: str, pattern: str) -> bool:
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return pattern in name


def matches(record: dict, filters: dict[str, list[str]]) -> bool:
    labels = record["Config"].get("Labels") or {}
    name = record["Name"].lstrip("/")
    tests = {"label": lambda v: _label_match(labels, v),
             "status": lambda v: _status(record) == v,
             "name": lambda v: _name_match(name, v),
             "id": lambda v: record["Id"].startswith(v)}
    if "label" in filters and not all(tests["label"](v) for v in filters["label"]):
        return False  # Docker: every label filter must hold
    return all(any(tests[k](v) for v in values) for k, values in filters.items() if k != "label")


def render(rows: list[dict], fmt: str) -> list[str]:
    """rows: Docker's ps fields per container (ID, Names, Labels as a dict...)."""
    if fmt == "json":
        return [json.dumps({**r, "Labels": _labels_text(r["Labels"])}) for r in rows]
    table = fmt.startswith("table")
    text = fmt[len("table"):].strip() if table else fmt
    text = text.replace("\\t", "\t").replace("\\n", "\n")
    for m in _ACTION.finditer(text):
        field = m.group(2)
        if field and field not in HEADERS:
            raise MinidockerError(f"invalid --format {fmt!r}: no field {field!r}; known are "
                                  f"{', '.join(sorted(HEADERS))}")
        if field == "Label" and m.group(3) is None:
            raise MinidockerError(f'invalid --format {fmt!r}: use {{{{.Label "KEY"}}}}')
    if re.sub(_ACTION, "", text).count("{{"):
        raise MinidockerError(f"invalid --format {fmt!r}: only {{{{.Field}}}}, "
                              '{{.Label "KEY"}} and {{json .Field}} are understood')
    lines = [_fill(text, r) for r in rows]
    if not table:
        return lines
    header = _ACTION.sub(lambda m: HEADERS.get(m.group(2), ""), text)
    return align([header] + lines)


def _fill(text: str, row: dict) -> str:
    def one(m):
        as_json, field, arg = m.group(1), m.group(2), m.group(3)
        if field == "Label":
            value = row["Labels"].get(arg, "")
        elif not field:
            value = {**row, "Labels": _labels_text(row["Labels"])}
        else:
            value = row[field]
            if field == "Labels":  # a string in Docker's ps, KEY=VALUE,...
                value = _labels_text(value)
        return json.dumps(value) if as_json else str(value)
    return _ACTION.sub(one, text)


def _labels_text(labels: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def align(lines: list[str]) -> list[str]:
    """Go's tabwriter as docker uses it: tab-separated cells padded to the
    widest of their column plus 3 spaces."""
    cells = [l.split("\t") for l in lines]
    widths: dict[int, int] = {}
    for row in cells:
        for i, c in enumerate(row[:-1]):
            widths[i] = max(widths.get(i, 0), len(c))
    return ["".join(c.ljust(widths[i] + 3) if i < len(row) - 1 else c
                    for i, c in enumerate(row)).rstrip() for row in cells]
