"""A container's log: Docker's json-file format, one JSON object a line,
{"log": TEXT, "stream": "stdout"|"stderr", "time": RFC 3339}, so `logs`
can keep stdout and stderr apart and select by time. The shim writes it
while it waits (minidocker/shimwait.py), so writing imports no `json`: that
pulls in `re`, about 1 MB in every shim; _json's string encoder is the one
json.dumps uses, so the lines are the same; nor `os` (posix is built in;
os pulls in _collections_abc and posixpath), nor __future__.
`logs` and `attach` read it."""
import posix

from _json import encode_basestring_ascii as _quote

from minidocker import clock


class Stream:
    """One output stream of the container, appended to the log fd."""

    def __init__(self, fd: int, name: str):
        self.fd = fd
        self.name = name

    def write(self, data: bytes) -> None:
        stamp = clock.now()
        text = data.decode("utf-8", errors="replace")
        tail = f',"stream":{_quote(self.name)},"time":{_quote(stamp)}}}\n'
        out = "".join('{"log":' + _quote(line) + tail for line in text.splitlines(keepends=True))
        view = memoryview(out.encode())
        while view:
            view = view[posix.write(self.fd, view):]


def parse(line: bytes) -> dict | None:
    """One entry, None for a line that is not one (a torn write)."""
    import json
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("log"), str):
        return None
    return entry


def entries(fh) -> list[dict]:
    return [e for e in (parse(l) for l in fh) if e]


def parse_time(text: str, flag: str) -> float:
    """--since/--until: RFC 3339 (2026-01-02T15:04:05Z, or a date), a Unix
    timestamp (1700000000.5) or a duration before now (10m, 1h30m, 42s)."""
    import re
    import time
    value = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    m = re.fullmatch(r"((\d+(\.\d+)?)(h|m|s|ms))+", value)
    if m:
        scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
        total = sum(float(n) * scale[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)(ms|h|m|s)", value))
        return time.time() - total
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            value += "T00:00:00Z"
        return clock.parse(value if value.endswith("Z") or "+" in value[10:] else value + "Z")
    except ValueError:
        from minidocker.errors import MinidockerError
        raise MinidockerError(f"invalid {flag} {text!r}: a time (2026-01-02T15:04:05Z), a Unix "
                              "timestamp or a duration before now (10m, 1h30m)") from None
