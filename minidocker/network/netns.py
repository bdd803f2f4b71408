"""Pinned network namespaces: an nsfs bind mount keeps a namespace alive
without a process, so networking can be attached before the container's
process exists (as CNI runtimes do) and removed after it is gone."""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import threading

from minidocker import syscalls as sc

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def pin(path: str) -> None:
    """Create a new network namespace bound at path, with lo up.

    A short-lived thread unshares (the network namespace is per thread), so
    the calling process never leaves its own namespace."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)
    failure: list[BaseException] = []

    def worker():
        try:
            sc.unshare(sc.CLONE_NEWNET)
            sc.mount(f"/proc/self/task/{threading.get_native_id()}/ns/net", path, None, sc.MS_BIND)
            _lo_up()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            failure.append(exc)

    t = threading.Thread(target=worker, name="netns-pin")
    t.start()
    t.join()
    if failure:
        unpin(path)
        raise failure[0]


def _lo_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def unpin(path: str) -> None:
    """Unmount and remove a pinned namespace; idempotent."""
    try:
        sc.umount(path, sc.MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):
            raise
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def is_pinned(path: str) -> bool:
    try:
        return os.stat(path).st_dev != os.stat(os.path.dirname(path)).st_dev
    except OSError:
        return False
