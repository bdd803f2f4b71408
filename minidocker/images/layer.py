"""One layer tar, extracted safely into its own directory, read once.

A layer's members land in an empty directory (the layer's diff, an overlay
lower dir later), never in another layer, and every path is resolved from
that directory's file descriptor one component at a time (`openat` with
O_NOFOLLOW): extraction never follows a symlink, so a member cannot be
written outside the layer whatever its name or the links before it.

Symlinks are stored as they are, absolute or relative: they resolve at run
time inside the container's root. Setuid/setgid bits and extended
attributes (file capabilities among them) are kept, as Docker keeps them.
Device nodes are skipped and counted (a container gets its own /dev).
Whiteouts become what overlayfs reads: `.wh.NAME` a 0:0 character device
NAME, `.wh..wh..opq` the trusted.overlay.opaque attribute on its directory.

Refused (every one is named, up to REPORTED): names with `..` or a leading
`/`, names or targets over PATH_MAX, a member whose parent in the layer is
a symlink or a file, hard links to nothing earlier in the layer, unknown
member types, extended headers over streams.MAX_EXT_HEADER (tarfile would
read them whole), more than streams.MAX_TRAILER bytes after the archive's end.

The input is decompressed once, streaming (gzip, zstd, bzip2, xz or plain,
told by its first bytes), and the diffID is the digest of what tarfile read
plus what follows the end marker, so no seek and no second pass is needed.
"""
from __future__ import annotations

import base64
import errno
import os
import stat
import sys
import tarfile

from minidocker.images.refs import ImageError
from minidocker.images.streams import (CHUNK, Hashing, Prefixed, TarSplit, decompressed, drain, open_tar,
                                       why)

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
MAX_NAME = 4096
REPORTED = 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FD_CACHE = 256


class Refused(ImageError):
    """Members refused from one layer (or archive)."""


# --- reading: one pass, digests on the way ------------------------------------------


def clean_name(name: str, what: str = "member") -> str:
    if name.startswith("/"):
        raise ImageError(f"refusing {what} {name!r}: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"refusing {what} {name!r}: path with '..'")
    return "/".join(parts)


# --- writing: every path from the layer's directory fd ------------------------------

class _Tree:
    """The layer directory, walked from its fd without following links."""

    def __init__(self, root: str):
        self.root = os.open(root, _DIR_FLAGS)
        self.fds: dict[str, int] = {"": self.root}

    def close(self):
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def dir(self, rel: str, create: bool = True) -> int | None:
        """The fd of directory rel (made when missing and create); an error
        naming the component when it is a symlink or not a directory."""
        fd = self.fds.get(rel)
        if fd is not None:
            return fd
        parent, _, base = rel.rpartition("/")
        pfd = self.dir(parent, create)
        if pfd is None:
            return None
        try:
            fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
        except FileNotFoundError:
            if not create:
                return None
            os.mkdir(base, 0o755, dir_fd=pfd)
            fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
        except (NotADirectoryError, OSError) as exc:
            if not create:
                return None
            kind = "a symlink" if stat.S_ISLNK(os.lstat(base, dir_fd=pfd).st_mode) else "not a directory"
            raise ImageError(f"its parent {rel!r} is {kind}") from exc
        if len(self.fds) > _FD_CACHE:
            self.forget("")
        self.fds[rel] = fd
        return fd

    def forget(self, rel: str) -> None:
        """Drop cached fds at and below rel (it is being replaced)."""
        for key in [k for k in self.fds if k and (not rel or k == rel or k.startswith(rel + "/"))]:
            os.close(self.fds.pop(key))

    def clear(self, pfd: int, base: str, rel: str, keep_dir: bool = False) -> bool:
        """Remove what is at base (never following it); True if a directory
        was kept because keep_dir."""
        try:
            st = os.lstat(base, dir_fd=pfd)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            self.forget(rel)
            fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
            try:
                _rmtree_fd(fd)
            finally:
                os.close(fd)
            os.rmdir(base, dir_fd=pfd)
        else:
            os.unlink(base, dir_fd=pfd)
        return False


def _rmtree_fd(fd: int) -> None:
    """Empty the directory open as fd, never following a link."""
    for entry in os.scandir(fd):
        if entry.is_dir(follow_symlinks=False):
            sub = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
            try:
                _rmtree_fd(sub)
            finally:
                os.close(sub)
            os.rmdir(entry.name, dir_fd=fd)
        else:
            os.unlink(entry.name, dir_fd=fd)


def _xattrs(m: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    out = []
    for key, value in (m.pax_headers or {}).items():
        if key.startswith("SCHILY.xattr."):
            out.append((key[len("SCHILY.xattr."):], value.encode("utf-8", "surrogateescape")))
        elif key.startswith("LIBARCHIVE.xattr."):
            try:
                out.append((key[len("LIBARCHIVE.xattr."):], base64.b64decode(value + "==")))
            except ValueError:
                pass
    return out


class Result:
    """One extracted layer: diffID, size (files counted once), devices
    skipped, the digest and size of the bytes read, and its tar-split
    (streams.TarSplit: the gzip'ed rest, the files' places)."""

    def __init__(self, diff_id: str, size: int, devices: int, compressed: str, raw_size: int,
                 split: tuple[bytes, list]):
        self.diff_id, self.size, self.devices = diff_id, size, devices
        self.compressed, self.raw_size, self.split = compressed, raw_size, split


def extract(raw, dest: str, label: str) -> Result:
    """Extract the layer read from raw (compressed or not) into the empty
    directory dest. Returns its diffID, its size (a hard-linked file counted
    once), the device nodes skipped and the digest of raw's bytes; raises
    Refused naming every refused member after reading it all."""
    outer = Hashing(raw)
    try:
        inner = decompressed(outer)
        # plain input: one digest serves as diffID and as the blob's digest
        plain = inner if isinstance(inner, Prefixed) else Hashing(inner)
        plain_hash = outer if plain is inner else plain
        refused: list[str] = []
        size = devices = 0
        tree = _Tree(dest)
        split = TarSplit()
        try:
            with open_tar(plain, split) as tar:
                for m in tar:
                    if m.isreg() and m.size:
                        split.file(m.offset_data, m.size, m.name)
                    try:
                        size += _member(tar, tree, m)
                    except _Device:
                        devices += 1
                    except ImageError as exc:
                        refused.append(f"{m.name[:200]!r} ({exc.message})")
                    except OSError as exc:
                        refused.append(f"{m.name[:200]!r} ({exc.strerror or exc})")
        finally:
            tree.close()
        drain(tar.fileobj, label)
        if plain_hash is not outer:
            drain(outer, label, quiet=True)
    except ImageError:
        raise
    except OSError as exc:
        if exc.errno:   # the store's disk, not the input (ENOSPC, EIO)
            raise ImageError(f"cannot extract {label}: {why(exc)}") from None
        raise ImageError(f"invalid layer {label}: {why(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - tarfile, EOFError, zlib, lzma, zstandard: a damaged stream
        raise ImageError(f"invalid layer {label}: {why(exc)}") from None
    if refused:
        more = f" and {len(refused) - REPORTED} more" if len(refused) > REPORTED else ""
        raise Refused(f"refusing {len(refused)} member(s) of {label}: "
                      + "; ".join(refused[:REPORTED]) + more)
    return Result(plain_hash.digest, size, devices, outer.digest, outer.count,
                  (split.finish(), split.files))


class _Device(Exception):
    pass


def _member(tar: tarfile.TarFile, tree: _Tree, m: tarfile.TarInfo) -> int:
    """Write one member; returns the bytes it adds to the layer's size."""
    if len(m.name) > MAX_NAME or len(m.linkname) > MAX_NAME:
        raise ImageError(f"name or link target longer than {MAX_NAME} bytes")
    name = clean_name(m.name)
    if not name:
        if m.isdir():
            _meta_dir(tree.root, m)
        return 0
    if m.ischr() or m.isblk():
        raise _Device()
    parent, _, base = name.rpartition("/")
    if base.startswith(WHITEOUT):
        _whiteout(tree, parent, base)
        return 0
    if not (m.isreg() or m.isdir() or m.issym() or m.islnk() or m.isfifo()):
        raise ImageError(f"unsupported member type {m.type!r}")
    pfd = tree.dir(parent)
    if m.islnk():
        _hard_link(tree, pfd, name, base, m)
        return 0
    if m.isdir():
        if not tree.clear(pfd, base, name, keep_dir=True):
            os.mkdir(base, 0o700, dir_fd=pfd)
        _meta_dir(tree.dir(name), m)
        return 0
    tree.clear(pfd, base, name)
    if m.issym():
        _symlink(pfd, base, m)
        return len(m.linkname)
    if m.isfifo():
        os.mkfifo(base, 0o600, dir_fd=pfd)
        fd = os.open(base, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
    else:
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=pfd)
    try:
        if m.isreg() and m.size:
            src = tar.extractfile(m)
            while True:
                chunk = src.read(CHUNK)
                if not chunk:
                    break
                os.write(fd, chunk)
        _meta_fd(fd, m)
    finally:
        os.close(fd)
    return m.size if m.isreg() else 0


def _whiteout(tree: _Tree, parent: str, base: str) -> None:
    """`.wh..wh..opq`: the directory hides the layers below; `.wh.NAME`: NAME
    is a 0:0 character device, which hides it."""
    if base == OPAQUE:
        os.setxattr(tree.dir(parent), OPAQUE_XATTR, b"y")
        return
    hidden = base[len(WHITEOUT):]
    if not hidden or hidden in (".", ".."):
        raise ImageError("whiteout of nothing")
    pfd = tree.dir(parent)
    tree.clear(pfd, hidden, f"{parent}/{hidden}".lstrip("/"))
    os.mknod(hidden, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)


def _hard_link(tree: _Tree, pfd: int, name: str, base: str, m: tarfile.TarInfo) -> None:
    """A hard link to a file written earlier in this layer (never through a link)."""
    target = clean_name(m.linkname, "hard link target")
    tparent, _, tbase = target.rpartition("/")
    tfd = tree.dir(tparent, create=False) if target else None
    try:
        st = os.lstat(tbase, dir_fd=tfd) if tfd is not None else None
    except FileNotFoundError:
        st = None
    if st is None or stat.S_ISDIR(st.st_mode):
        raise ImageError(f"hard link to {m.linkname!r}, which is not a file earlier in the layer")
    if target != name:
        tree.clear(pfd, base, name)
        os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)


def _symlink(pfd: int, base: str, m: tarfile.TarInfo) -> None:
    """The link as it is: its target is never looked at here."""
    os.symlink(m.linkname, base, dir_fd=pfd)
    os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
    for key, value in _xattrs(m):
        if not key.startswith("user."):   # the kernel allows no user.* on symlinks
            os.setxattr(f"/proc/self/fd/{pfd}/{base}", key, value, follow_symlinks=False)
    _utime(base, pfd, m)


def _setxattrs(fd: int, m: tarfile.TarInfo) -> None:
    """m's extended attributes; one the store's file system does not support
    (security.selinux without SELinux...) is passed over, as Docker does."""
    for key, value in _xattrs(m):
        try:
            os.setxattr(fd, key, value)
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise


def _meta_fd(fd: int, m: tarfile.TarInfo) -> None:
    """Owner, then mode (chown clears setuid bits), then xattrs (chown clears
    security.capability too), then times."""
    os.fchown(fd, m.uid, m.gid)
    os.fchmod(fd, m.mode & 0o7777)
    _setxattrs(fd, m)
    try:
        os.utime(fd, (m.mtime, m.mtime))
    except (OSError, OverflowError):
        pass


def _meta_dir(fd: int, m: tarfile.TarInfo) -> None:
    os.fchown(fd, m.uid, m.gid)
    os.fchmod(fd, m.mode & 0o7777)
    _setxattrs(fd, m)


def _utime(base: str, pfd: int, m: tarfile.TarInfo) -> None:
    try:
        os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)
    except (OSError, OverflowError):
        pass


def read_file(root: str, name: str, size: int) -> bytes | None:
    """The contents of member name in an extracted layer, resolved from its
    directory without following a link; None unless a file of that size."""
    try:
        parent, _, base = clean_name(name).rpartition("/")
    except ImageError:
        return None
    tree = _Tree(root)
    try:
        pfd = tree.dir(parent, create=False)
        if pfd is None:
            return None
        fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
    except OSError:
        return None
    finally:
        tree.close()
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return None
        data = fh.read(size + 1)
    return data if len(data) == size else None


def warn_devices(count: int) -> None:
    """The one warning line of a command that skipped device nodes."""
    if count:
        print(f"Warning: skipped {count} device node(s) of the image's layers "
              "(a container gets its own /dev)", file=sys.stderr)
