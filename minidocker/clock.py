"""Timestamps as Docker writes them: RFC 3339 in UTC with nanoseconds.

Formatted from time.time_ns() (datetime is not needed on the hot path of
`run` or in the shim). No __future__ import: the shim's lean stage loads
this (minidocker/shimwait.py)."""
import time

NEVER = "0001-01-01T00:00:00Z"


def now() -> str:
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"


def parse(stamp: str) -> float:
    """Seconds since the epoch of a stamp written by now() (or Docker)."""
    import calendar
    base, _, frac = stamp.rstrip("Z").partition(".")
    if stamp.endswith("Z") and (not frac or frac.isdigit()):
        seconds = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
        return seconds + (float("0." + frac) if frac else 0.0)
    import datetime  # an offset (+01:00): rarer, from image configs
    import re
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", stamp.replace("Z", "+00:00"))
    return datetime.datetime.fromisoformat(trimmed).timestamp()
