"""A container's file system from the host: `cp`, `diff`, `export`.

Paths inside the container are resolved in its root the way the kernel
would resolve them after pivot_root (fsutil.secure_join): a symlink of the
container never leads out of it. A stopped container's overlay is mounted
for the command and unmounted after, under the container's lock.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
from pathlib import Path

from minidocker import containers, fsutil, images, paths, records, teardown
from minidocker.errors import MinidockerError

# What minidocker itself puts in a container's root (mount points), kept out of `diff`.
OWN_PATHS = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/dev", "/proc", "/sys")


@contextlib.contextmanager
def root_of(record: dict):
    """The container's merged root directory on the host."""
    cid = record["Id"]
    root = os.path.join(paths.container_dir(cid), "rootfs")
    with records.locked(cid):
        if os.path.ismount(root):
            yield root
            return
        d = Path(paths.container_dir(cid))
        images.mount_rootfs(images.lookup(record["Image"]), root, str(d / "upper"), str(d / "work"))
        try:
            yield root
        finally:
            teardown.unmount(root)


# --- cp -------------------------------------------------------------------------------

def _split(arg: str) -> tuple[str | None, str]:
    """CONTAINER:PATH -> (container, path); a host path -> (None, path)."""
    head, colon, tail = arg.partition(":")
    if colon and head and "/" not in head:
        return head, tail
    return None, arg


def cp(src: str, dest: str, follow: bool = False) -> None:
    """`docker cp`: exactly one side is CONTAINER:PATH."""
    (sref, spath), (dref, dpath) = _split(src), _split(dest)
    if (sref is None) == (dref is None):
        raise MinidockerError("cp copies between a container and the host: give CONTAINER:PATH "
                              "as exactly one of SRC and DEST")
    if sref:
        record = containers.find(sref)
        with root_of(record) as root:
            _from_container(root, spath, dpath, follow)
    else:
        record = containers.find(dref)
        with root_of(record) as root:
            _to_container(root, spath, dpath)


def _in_root(root: str, path: str, follow_last: bool) -> str:
    """path in the container's root; its last component followed only if asked."""
    if not path.startswith("/"):
        path = "/" + path
    if follow_last:
        return fsutil.secure_join(root, path)
    parent, name = os.path.split(path.rstrip("/") or "/")
    base = fsutil.secure_join(root, parent)
    return os.path.join(base, name) if name not in ("", ".", "..") else fsutil.secure_join(root, path)


def _target(dest: str, src_name: str, src_is_dir: bool, contents_only: bool) -> str:
    """Docker's rules: into an existing directory, else at dest."""
    if os.path.isdir(dest) and not os.path.islink(dest):
        return dest if contents_only else os.path.join(dest, src_name)
    if dest.endswith("/") and not src_is_dir:
        raise MinidockerError(f"destination directory {dest!r} does not exist")
    return dest


def _from_container(root: str, path: str, dest: str, follow: bool) -> None:
    source = _in_root(root, path, follow)
    if not os.path.lexists(source):
        raise MinidockerError(f"no such file or directory in the container: {path!r}")
    is_dir = os.path.isdir(source) and not os.path.islink(source)
    target = _target(dest, os.path.basename(path.rstrip("/").rstrip(".").rstrip("/")) or "root",
                     is_dir, path.endswith("/."))
    if is_dir:
        shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
    elif os.path.islink(source):
        if os.path.lexists(target):
            os.unlink(target)
        os.symlink(os.readlink(source), target)
    else:
        shutil.copy2(source, target)


def _to_container(root: str, src: str, path: str) -> None:
    if not os.path.lexists(src):
        raise MinidockerError(f"no such file or directory: {src!r}")
    is_dir = os.path.isdir(src) and not os.path.islink(src)
    cdest = path if path.startswith("/") else "/" + path
    resolved = fsutil.secure_join(root, cdest)  # every link of the container resolved inside it
    if os.path.isdir(resolved):
        name = os.path.basename(src.rstrip("/"))
        ctarget = cdest if src.endswith("/.") else cdest.rstrip("/") + "/" + name
    elif cdest.endswith("/") and not is_dir:
        raise MinidockerError(f"destination directory {path!r} does not exist in the container")
    elif not os.path.isdir(os.path.dirname(resolved)):
        raise MinidockerError(f"the parent directory of {path!r} does not exist in the container")
    else:
        ctarget = cdest
    if not is_dir:
        _put(src, _in_root(root, ctarget, follow_last=False))
        return
    for top, dirs, files in os.walk(src):
        rel = os.path.relpath(top, src)
        crel = ctarget if rel == "." else f"{ctarget.rstrip('/')}/{rel}"
        here = fsutil.secure_join(root, crel)
        os.makedirs(here, exist_ok=True)
        shutil.copymode(top, here)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            _put(os.path.join(top, name), _in_root(root, f"{crel.rstrip('/')}/{name}", False))


def _put(src: str, target: str) -> None:
    """One file or link, never written through a link already at target."""
    if os.path.lexists(target) and (os.path.islink(target) or not os.path.isdir(target)):
        os.unlink(target)
    if os.path.islink(src):
        os.symlink(os.readlink(src), target)
        return
    mode = stat.S_IMODE(os.stat(src).st_mode)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
        shutil.copyfileobj(inp, out)
    os.chmod(target, mode)


# --- diff, export ---------------------------------------------------------------------

def diff(ref: str) -> list[str]:
    """`docker diff`: A added, C changed, D deleted, from the upper layer."""
    record = containers.find(ref)
    upper = paths.container_upper(record["Id"])
    from minidocker.images.store import layer_ids, short_link
    layers = [str(Path(paths.images_dir()) / "l" / short_link(d))
              for d in layer_ids(images.lookup(record["Image"]))]
    changes = {}
    for top, dirs, files in os.walk(upper):
        for name in dirs + files:
            full = os.path.join(top, name)
            rel = "/" + os.path.relpath(full, upper)
            st = os.lstat(full)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # an overlay whiteout
                changes[rel] = "D"
            elif any(os.path.lexists(layer + rel) for layer in layers):
                changes[rel] = "C"
            else:
                changes[rel] = "A"
    own = [p for p in changes if p in OWN_PATHS or p.startswith(tuple(o + "/" for o in OWN_PATHS))]
    for p in own:
        del changes[p]
    # a directory copied up only for our mount points is no change of the user's
    for p in sorted((p for p, k in changes.items() if k == "C"), key=len, reverse=True):
        full = upper + p
        if os.path.isdir(full) and not os.path.islink(full) and not any(
                q.startswith(p + "/") for q in changes):
            if any(o.startswith(p + "/") for o in OWN_PATHS):
                del changes[p]
    return [f"{kind} {path}" for path, kind in sorted(changes.items())]


def export(ref: str, out) -> None:
    """The container's file system as a tar stream (out: a binary file)."""
    record = containers.find(ref)
    with root_of(record) as root, tarfile.open(fileobj=out, mode="w|") as tar:
        for name in sorted(os.listdir(root)):
            tar.add(os.path.join(root, name), arcname=name, recursive=True)
