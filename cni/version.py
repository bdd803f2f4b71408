"""CNI specification versions and their ordering."""
from __future__ import annotations

from cni.errors import CNIError, INCOMPATIBLE_VERSION, DECODE_FAILURE

# Every version whose config and result formats this package reads and writes.
SUPPORTED: tuple[str, ...] = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT = "1.1.0"


def _numbers(version) -> tuple[int, int, int] | None:
    """MAJOR.MINOR.PATCH of decimal digits (what `^(\\d+)\\.(\\d+)\\.(\\d+)$`
    matched, a trailing newline included), without `re` (~5 ms of start-up)."""
    if not isinstance(version, str):
        return None
    parts = (version[:-1] if version.endswith("\n") else version).split(".")
    if len(parts) != 3 or not all(p.isdecimal() for p in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])


def parse(version: str) -> tuple[int, int, int]:
    """'1.0.0' -> (1, 0, 0); a malformed version is a decode failure."""
    numbers = _numbers(version)
    if numbers is None:
        raise CNIError(DECODE_FAILURE, f"invalid version {version!r}",
                       "a version is MAJOR.MINOR.PATCH, e.g. 1.0.0")
    return numbers


def at_least(version: str, other: str) -> bool:
    return parse(version) >= parse(other)


def check_supported(version: str, supported: tuple[str, ...] = SUPPORTED) -> str:
    """Raise the spec's code 1 unless `version` is one we implement."""
    parse(version)
    if version not in supported:
        raise CNIError(INCOMPATIBLE_VERSION, f"incompatible CNI versions; config is {version!r}, "
                       f"plugin supports {list(supported)}")
    return version


def highest(candidates, supported: tuple[str, ...] = SUPPORTED) -> str | None:
    """The highest of `candidates` that is also in `supported` (libcni's choice)."""
    usable = [v for v in candidates if _numbers(v) and v in supported]
    return max(usable, key=parse) if usable else None
