"""A layer as a tar again: a stored layer's very tar (its tar-split and its
files) for `push` and `save`, so its diffID and its image's id survive; or
a directory written as a layer tar (overlay whiteouts and opaque
directories back to `.wh.` names) for `commit` and for a stored layer that
cannot be made again."""
from __future__ import annotations

import gzip
import io
import json
import os
import stat
import tarfile
from pathlib import Path

from minidocker import paths
from minidocker.images import layer, oci, store

_OVERLAY_XATTRS = "trusted.overlay."


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def dir_tar(root: str, out, skip=frozenset()) -> None:
    """Write the directory root to the binary file out as a layer tar, in
    sorted order (the same files give the same bytes). skip: paths relative
    to root ("etc/hosts") left out with what is under them. overlayfs's own
    attributes (trusted.overlay.*) are never copied: an opaque directory
    becomes its `.wh..wh..opq` member."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root)
            dirnames[:] = sorted(d for d in dirnames
                                 if (d if rel_dir == "." else f"{rel_dir}/{d}") not in skip)
            for name in sorted(dirnames + filenames):
                arc = name if rel_dir == "." else f"{rel_dir}/{name}"
                if arc not in skip:
                    _add(tar, os.path.join(dirpath, name), arc)


def _add(tar: tarfile.TarFile, path: str, arc: str) -> None:
    st = os.lstat(path)
    if _is_whiteout(st):
        tar.addfile(tarfile.TarInfo(os.path.join(os.path.dirname(arc), layer.WHITEOUT
                                                 + os.path.basename(arc))))
        return
    info = tar.gettarinfo(path, arc)
    if info is None:      # a socket: nothing a layer can hold
        return
    info.uname = info.gname = ""
    info.mtime = int(st.st_mtime)
    names = os.listxattr(path, follow_symlinks=False)
    info.pax_headers = {
        "SCHILY.xattr." + key: os.getxattr(path, key, follow_symlinks=False).decode(
            "utf-8", "surrogateescape")
        for key in names if not key.startswith(_OVERLAY_XATTRS)}
    if info.isreg():
        with open(path, "rb") as fh:
            tar.addfile(info, fh)
    else:
        tar.addfile(info)
    if info.isdir() and layer.OPAQUE_XATTR in names and \
            os.getxattr(path, layer.OPAQUE_XATTR, follow_symlinks=False) == b"y":
        tar.addfile(tarfile.TarInfo(f"{arc}/{layer.OPAQUE}"))


def original_tar(diff_id: str) -> bytes | None:
    """The layer's tar as it came, from its tar-split and its files; None
    when it cannot be made again (no tar-split, a file changed or lost to a
    later member of the same name)."""
    d = Path(paths.layer_dir(store.hexid(diff_id)))
    try:
        with open(d / "tar-split.gz", "rb") as fh:
            rest = gzip.decompress(fh.read())
        with open(d / "tar-split.json") as fh:
            files = json.load(fh)
    except (OSError, ValueError, EOFError):
        return None
    out, done = io.BytesIO(), 0
    for offset, name, size in files:
        data = layer.read_file(str(d / "diff"), name, size)
        if data is None or not done <= offset <= len(rest):
            return None
        out.write(rest[done:offset])
        out.write(data)
        done = offset
    out.write(rest[done:])
    tar = out.getvalue()
    return tar if oci.digest_of(tar) == diff_id else None


def layer_tar(diff_id: str) -> bytes:
    """The stored layer's tar: as it came when it can be, else written anew
    from its files (then its digest differs from diff_id)."""
    tar = original_tar(diff_id)
    if tar is None:
        raw = io.BytesIO()
        dir_tar(os.path.join(paths.layer_dir(store.hexid(diff_id)), "diff"), raw)
        tar = raw.getvalue()
    return tar
