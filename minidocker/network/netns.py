"""Pinned network namespaces: an nsfs bind mount keeps a namespace alive
without a process, so networking can be attached before the container's
process exists (as CNI runtimes do) and removed after it is gone."""
from __future__ import annotations

import _socket
import _struct
import _thread
import errno
import fcntl
import os

from minidocker import syscalls as sc

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def pin(path: str) -> None:
    """Create a new network namespace bound at path, with lo up."""
    start_pin(path)()


def start_pin(path: str):
    """pin() in the background; returns the function that waits for it (and
    raises its error). Creating a namespace is kernel work that can overlap
    the caller's own (mounting the rootfs).

    A short-lived thread unshares (the network namespace is per thread), so
    the calling process never leaves its own namespace."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)
    failure: list[BaseException] = []
    done = _thread.allocate_lock()
    done.acquire()

    def worker():
        try:
            sc.unshare(sc.CLONE_NEWNET)
            sc.mount(f"/proc/self/task/{_thread.get_native_id()}/ns/net", path, None, sc.MS_BIND)
            _lo_up()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            failure.append(exc)
        finally:
            done.release()

    # _thread, not threading: this runs on every `run`, and the low-level
    # modules cost nothing to import.
    _thread.start_new_thread(worker, ())

    def wait() -> None:
        done.acquire()
        done.release()  # a second wait() returns at once
        if failure:
            unpin(path)
            raise failure[0]

    return wait


def _lo_up() -> None:
    """SIOCSIFFLAGS on a socket made in the new namespace (no netlink needed)."""
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        req = _struct.pack("16sH14x", b"lo", 0)
        flags = _struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, _struct.pack("16sH14x", b"lo", flags | IFF_UP))
    finally:
        s.close()


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
