"""Entering network namespaces for the plugin's netlink work: setns(2)
through `_ctypes` (no `ctypes`, no `os`), a socket bound inside another
namespace, and a block run inside one. Per thread (`/proc/thread-self`)."""
from __future__ import annotations

import posix   # os's functions without importing os (~1.2 ms): HACKING.md

from cni_bridge.netlink import Netlink

CLONE_NEWNET = 0x40000000
_setns_fn = None


def setns(fd: int) -> None:
    """setns(2) for the calling thread (3.11 has no os.setns). `_ctypes`
    directly: `import ctypes` alone costs ~4 ms."""
    global _setns_fn
    import _ctypes
    if _setns_fn is None:
        _setns_fn = _ctypes.dlsym(_ctypes.dlopen(None, 0), "setns")
    if _ctypes.call_function(_setns_fn, (fd, CLONE_NEWNET)) != 0:
        raise OSError(22, "setns failed: not a network namespace?")


def netlink_in(netns_fd: int) -> Netlink:
    """A netlink socket bound inside another network namespace: enter, open
    the socket (it stays in that namespace), come back."""
    home = posix.open("/proc/thread-self/ns/net", posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        setns(netns_fd)
        try:
            return Netlink()
        finally:
            setns(home)
    finally:
        posix.close(home)


class InNetns:
    """Context manager: run a block (sysctl writes) inside a namespace."""

    def __init__(self, fd: int):
        self.fd = fd

    def __enter__(self):
        self.home = posix.open("/proc/thread-self/ns/net", posix.O_RDONLY | posix.O_CLOEXEC)
        setns(self.fd)
        return self

    def __exit__(self, *exc):
        try:
            setns(self.home)
        finally:
            posix.close(self.home)
