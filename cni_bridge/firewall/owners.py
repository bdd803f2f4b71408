"""The firewall's owner index: one file per attachment that has rules or
set elements in this network namespace, holding what its ADD added, in a
directory per network.

DEL removes exactly what the file names (no listing of the whole table);
a network's directory left empty tells that its shared rules can go, and
the index left empty that our tables and chains can (one `scandir` that
stops at its first entry, whatever the number of attachments). The index
sits beside the firewall lock (`plan.lock_path`) and changes only under
it. It is trusted only as far as the kernel agrees: a missing file sends
DEL to the listing (rules made before the index, or under another
MINIDOCKER_RUN), a batch the kernel refuses is made again from a listing,
and the last DEL lists the (then small) tables before deleting them.
"""
from __future__ import annotations

import posix   # os's functions without importing os (~1.2 ms): HACKING.md

from cni import fastjson

from cni_bridge.firewall.plan import decide, lock_path


def directory() -> str:
    return lock_path()[:-len(".lock")] + ".d"


def _enc(name: str) -> str:
    # bijective: '%' first, then '/' (owner comments and prefixes hold '/')
    return name.replace("%", "%25").replace("/", "%2F")


def _dec(name: str) -> str:
    return name.replace("%2F", "/").replace("%25", "%")


def _file(prefix: str, owner: str) -> str:
    return f"{directory()}/{_enc(prefix)}/{_enc(owner)}"


def write(prefix: str, owner: str, entry: dict) -> None:
    """Record `entry` for `owner` (an owner comment) of the network whose
    comment prefix is `prefix`."""
    path = _file(prefix, owner)
    for d in (directory(), path.rpartition("/")[0]):   # private, as the rest of the state
        try:
            posix.mkdir(d, 0o700)
        except FileExistsError:
            pass
    fd = posix.open(path + ".tmp", posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC, 0o600)
    try:
        posix.write(fd, fastjson.dumps(entry).encode())
    finally:
        posix.close(fd)
    posix.replace(path + ".tmp", path)


def read(prefix: str, owner: str) -> dict | None:
    try:
        with open(_file(prefix, owner)) as fh:
            return fastjson.loads(fh.read())
    except (OSError, ValueError):
        return None


def remove(prefix: str, owner: str) -> None:
    try:
        posix.unlink(_file(prefix, owner))
    except FileNotFoundError:
        pass
    for path in (_file(prefix, owner).rpartition("/")[0], directory()):
        try:
            posix.rmdir(path)   # only when it held the network's last, then the last network
        except OSError:
            break


def take(prefix: str, owner: str | None, keep) -> dict | None:
    """Teardown's view of the index: `owner`'s entry, removed (None when
    unknown), or for a GC (`keep`, a set of comments) every owner of the
    network not kept removed and None (a GC reads the tables)."""
    if owner is not None:
        entry = read(prefix, owner)
        remove(prefix, owner)
        return entry
    for com in owners(prefix):
        if decide(com, prefix, None, keep) == "drop":
            remove(prefix, com)
    return None


def owners(prefix: str) -> list[str]:
    """Every indexed owner of a network (GC only: O(attachments))."""
    try:
        names = posix.listdir(f"{directory()}/{_enc(prefix)}")
    except FileNotFoundError:
        return []
    return [_dec(n) for n in names if not n.endswith(".tmp")]


def _empty(path: str) -> bool:
    try:
        with posix.scandir(path) as it:
            return not any(True for _ in it)
    except FileNotFoundError:
        return True


def network_empty(prefix: str) -> bool:
    """No attachment of the network is indexed."""
    return _empty(f"{directory()}/{_enc(prefix)}")


def empty() -> bool:
    """No attachment is indexed; removes the index's directory then."""
    if not _empty(directory()):
        return False
    try:
        posix.rmdir(directory())
    except OSError:
        pass
    return True
