"""The Linux calls Python 3.11 lacks, through libc.

unshare, setns, mount, umount2, pivot_root, sethostname, prctl, capset,
statfs. setns/unshare of the network namespace affect only the calling
thread; the mount namespace can only be changed by a single-threaded process.

Built on `_ctypes`, the C half of ctypes: the `ctypes` package (with
struct and its own modules) is ~1.5 ms of every `run` for the few C types
and the one library handle wanted here, declared below as ctypes does.
"""
from __future__ import annotations

import _ctypes
import os


class _Int(_ctypes._SimpleCData):
    _type_ = "i"


class _UInt32(_ctypes._SimpleCData):
    _type_ = "I"


class _Long(_ctypes._SimpleCData):
    _type_ = "l"


class _ULong(_ctypes._SimpleCData):
    _type_ = "L"


class _CharP(_ctypes._SimpleCData):
    _type_ = "z"


_FLAGS = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO


class _Func(_ctypes.CFuncPtr):
    """A libc function as ctypes.CDLL(None, use_errno=True) makes them."""
    _flags_ = _FLAGS
    _restype_ = _Int


class _LongFunc(_ctypes.CFuncPtr):
    _flags_ = _FLAGS
    _restype_ = _Long


class _Libc:
    """The process's own symbols (libc), as ctypes.CDLL(None)."""
    _handle = _ctypes.dlopen(None, _ctypes.RTLD_LOCAL)

    def function(self, name: str, argtypes: list, long_result: bool = False):
        func = (_LongFunc if long_result else _Func)((name, self))
        func.argtypes = argtypes
        return func


_lib = _Libc()

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

NS_FLAGS = {
    "mount": CLONE_NEWNS, "uts": CLONE_NEWUTS, "ipc": CLONE_NEWIPC,
    "pid": CLONE_NEWPID, "network": CLONE_NEWNET, "cgroup": CLONE_NEWCGROUP,
    "user": CLONE_NEWUSER,
}
NS_PROC_NAMES = {"mount": "mnt", "uts": "uts", "ipc": "ipc", "pid": "pid",
                 "network": "net", "cgroup": "cgroup", "user": "user"}

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYSNO = {
    "x86_64": {"pivot_root": 155, "capset": 126},
    "aarch64": {"pivot_root": 41, "capset": 91},
}[os.uname().machine]

_mount = _lib.function("mount", [_CharP, _CharP, _CharP, _ULong, _CharP])
_umount2 = _lib.function("umount2", [_CharP, _Int])
_unshare = _lib.function("unshare", [_Int])
_setns = _lib.function("setns", [_Int, _Int])
_sethostname = _lib.function("sethostname", [_CharP, _ULong])
_prctl = _lib.function("prctl", [_Int, _ULong, _ULong, _ULong, _ULong])
_statfs = _lib.function("statfs", None)
_syscall = _lib.function("syscall", None, long_result=True)


def _check(ret: int, what: str, path=None) -> int:
    if ret < 0:
        err = _ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return ret


def _b(s):
    return None if s is None else os.fsencode(s)


def mount(source, target, fstype=None, flags: int = 0, data=None) -> None:
    _check(_mount(_b(source), _b(target), _b(fstype), flags, _b(data)),
           f"mount {target}", target)


def umount(target, flags: int = 0) -> None:
    _check(_umount2(_b(target), flags), f"umount {target}", target)


def unshare(flags: int) -> None:
    _check(_unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_setns(fd, nstype), "setns")


def pivot_root(new_root, put_old) -> None:
    _check(_syscall(_SYSNO["pivot_root"], _b(new_root), _b(put_old)),
           "pivot_root")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_sethostname(raw, len(raw)), "sethostname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


class _CapHeader(_ctypes.Structure):
    _fields_ = [("version", _UInt32), ("pid", _Int)]


class _CapData(_ctypes.Structure):
    _fields_ = [("effective", _UInt32), ("permitted", _UInt32), ("inheritable", _UInt32)]


class _StatFs(_ctypes.Structure):
    """struct statfs: f_type first, then 14 more words (120 bytes on
    x86_64 and aarch64), with room to spare."""
    _fields_ = [("f_type", _Long), ("rest", _Long * 31)]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's capability sets (64-bit masks)."""
    header = _CapHeader(0x20080522, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_syscall(_SYSNO["capset"], _ctypes.byref(header), data), "capset")


def statfs_type(path) -> int:
    """statfs(2)'s f_type of path's file system (a *_SUPER_MAGIC)."""
    buf = _StatFs()
    _check(_statfs(_b(path), _ctypes.byref(buf)), f"statfs {path}", path)
    return buf.f_type


def last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as fh:
        return int(fh.read())
