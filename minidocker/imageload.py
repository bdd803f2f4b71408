"""Making images: the built-in busybox, `import` and `load`, and applying a
layer safely (images.py describes the store's layout).

Archives come from strangers: member names with `..` or a leading `/`,
absolute or escaping link targets, writes through symlinks, hard links out of
the image and device nodes are refused, and a layer is checked before any of
it is written. Work happens in a temporary directory that is renamed into
place only on success, so a refused archive leaves the store as it was.
"""
from __future__ import annotations

import datetime
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from pathlib import Path

from minidocker import paths, state
from minidocker.images import (BUILTIN, DEFAULT_PATH, KEPT_CONFIG, OPAQUE, WHITEOUT, ImageError,
                               _hex, _lock, _repositories, normalize_ref)


# --- storing ------------------------------------------------------------------

def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _workdir() -> Path:
    state.ensure_dir(paths.images_dir())
    return Path(tempfile.mkdtemp(prefix=".tmp-", dir=paths.images_dir()))


def _commit(work: Path, config_blob: bytes, config: dict, tags: list[str]) -> dict:
    """Move an extracted rootfs into the store under the config's digest."""
    image_id = "sha256:" + hashlib.sha256(config_blob).hexdigest()
    cfg = config.get("config") or {}
    record = {
        "Id": image_id,
        "Created": config.get("created") or _now(),
        "Architecture": config.get("architecture", "amd64"),
        "Os": config.get("os", "linux"),
        "Config": {k: cfg[k] for k in KEPT_CONFIG if cfg.get(k) is not None},
        "Size": _tree_size(work / "rootfs"),
    }
    state.write_json(work / "image.json", record)
    with _lock():
        final = paths.image_dir(_hex(image_id))
        if final.exists():
            shutil.rmtree(work, ignore_errors=True)
        else:
            os.rename(work, final)
        repos = _repositories()
        for tag in tags:
            repos[tag] = image_id
        state.write_json(paths.repositories_file(), repos)
    record["RepoTags"] = tags
    return record


def ensure_busybox() -> dict:
    """Build busybox:latest from the host's static busybox (no network)."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        raise ImageError("the built-in busybox image needs the host's busybox-static "
                         "(apt-get install busybox-static)", 125)
    work = _workdir()
    try:
        root = work / "rootfs"
        for d, mode in (("bin", 0o755), ("sbin", 0o755), ("usr/bin", 0o755), ("usr/sbin", 0o755),
                        ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777), ("var/tmp", 0o1777),
                        ("var/www", 0o755), ("home", 0o755), ("proc", 0o555), ("sys", 0o555),
                        ("dev", 0o755), ("run", 0o755), ("mnt", 0o755)):
            (root / d).mkdir(parents=True, exist_ok=True)
            os.chmod(root / d, mode)
        shutil.copy2(busybox, root / "bin/busybox")
        listing = subprocess.run([busybox, "--list-full"], capture_output=True, text=True,
                                 timeout=10, check=True).stdout.split()
        for applet in listing:
            if applet in ("bin/busybox", "linuxrc") or ".." in applet.split("/"):
                continue
            link = root / applet
            link.parent.mkdir(parents=True, exist_ok=True)
            if not os.path.lexists(link):
                os.symlink(os.path.relpath("bin/busybox", os.path.dirname(applet) or "."), link)
        files = {
            "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n"
                          "nobody:x:65534:65534:nobody:/home:/bin/false\n",
            "etc/group": "root:x:0:\nnogroup:x:65534:\n",
            "etc/nsswitch.conf": "hosts: files dns\n",
        }
        for name, text in files.items():
            (root / name).write_text(text)
        config = {
            "architecture": "amd64", "os": "linux",
            "config": {"Env": [DEFAULT_PATH], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [{"created_by": f"minidocker: built in from {busybox}"}],
        }
        blob = json.dumps(config, sort_keys=True).encode() + _file_digest(busybox).encode()
        return _commit(work, blob, config, [BUILTIN])
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def import_rootfs(archive: str, ref: str) -> dict:
    """`import`: one tarball (optionally gzipped) as a single-layer image."""
    tag = normalize_ref(ref)
    work = _workdir()
    try:
        root = work / "rootfs"
        root.mkdir(mode=0o755)
        try:
            with tarfile.open(archive, "r:*", tarinfo=_BoundedTarInfo) as tar:
                apply_layer(tar, str(root), label=os.path.basename(archive))
        except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile, zlib.error) as exc:
            if isinstance(exc, FileNotFoundError) and not os.path.exists(archive):
                raise ImageError(f"cannot import {archive!r}: no such file") from None
            raise ImageError(f"cannot import {archive!r}: {_why(exc)}") from None
        digest = _file_digest(archive)
        config = {"architecture": "amd64", "os": "linux", "created": _now(), "config": {},
                  "rootfs": {"type": "layers", "diff_ids": ["sha256:" + digest]},
                  "history": [{"created_by": f"minidocker import {os.path.basename(archive)}"}]}
        blob = json.dumps(config, sort_keys=True).encode()
        return _commit(work, blob, config, [tag])
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


# --- load: docker save and OCI image layouts ------------------------------------

class _Archive:
    """Members of an outer image archive, looked up by cleaned name."""

    def __init__(self, path: str):
        self.path = path
        self.tar = tarfile.open(path, "r:*", tarinfo=_BoundedTarInfo)
        self.members = {}
        for m in self.tar.getmembers():
            name = _clean_name(m.name, archive=True)
            if name:
                self.members[name] = m

    def read(self, name: str) -> bytes:
        member = self._get(name)
        return self.tar.extractfile(member).read()

    def open(self, name: str):
        return self.tar.extractfile(self._get(name))

    def json(self, name: str):
        try:
            return json.loads(self.read(name))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ImageError(f"invalid image archive {self.path!r}: {name} is not JSON ({exc})") from None

    def _get(self, name: str):
        clean = _clean_name(name, archive=True)
        member = self.members.get(clean)
        if member is None or not member.isfile():
            raise ImageError(f"invalid image archive {self.path!r}: missing {name}")
        return member

    def __contains__(self, name: str) -> bool:
        return _clean_name(name, archive=True) in self.members


def _blob_name(digest: str) -> str:
    algo, _, value = digest.partition(":")
    if algo != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ImageError(f"unsupported or malformed digest {digest!r}")
    return f"blobs/sha256/{value}"


def _verified(arc: _Archive, digest: str) -> bytes:
    data = arc.read(_blob_name(digest))
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise ImageError(f"invalid image archive {arc.path!r}: blob {digest[:19]}... "
                         "does not match its digest")
    return data


def _oci_manifests(arc: _Archive, index: dict, depth: int = 0) -> list[tuple[dict, list[str]]]:
    """(manifest, tags) of every image in an OCI index, nested indexes too."""
    if depth > 4:
        raise ImageError(f"invalid image archive {arc.path!r}: index nesting too deep")
    out = []
    for desc in index.get("manifests", []):
        media = desc.get("mediaType", "")
        ann = desc.get("annotations") or {}
        name = ann.get("io.containerd.image.name") or ann.get("org.opencontainers.image.ref.name")
        tags = []
        if name and (":" in name.rsplit("/", 1)[-1] or "/" in name):
            tags = [normalize_ref(name)]
        if media.endswith("image.index.v1+json") or media.endswith("manifest.list.v2+json"):
            sub = json.loads(_verified(arc, desc["digest"]))
            pick = [d for d in sub.get("manifests", [])
                    if (d.get("platform") or {}).get("architecture", "amd64") in ("amd64", "x86_64")]
            sub["manifests"] = [dict(d, annotations={**(d.get("annotations") or {}),
                                                     **({"io.containerd.image.name": name} if tags else {})})
                                for d in pick[:1]]
            out.extend(_oci_manifests(arc, sub, depth + 1))
        else:
            out.append((json.loads(_verified(arc, desc["digest"])), tags))
    return out


def load(archive: str) -> list[dict]:
    """`load -i`: a `docker save` archive or an OCI image-layout archive."""
    if not os.path.exists(archive):
        raise ImageError(f"cannot load {archive!r}: no such file")
    try:
        arc = _Archive(archive)
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
        raise ImageError(f"cannot load {archive!r}: {_why(exc)}") from None
    try:
        with arc.tar:
            images = []  # (config blob, config, [layer openers], tags)
            if "manifest.json" in arc:
                manifest = arc.json("manifest.json")
                if not isinstance(manifest, list) or not manifest:
                    raise ImageError(f"invalid image archive {archive!r}: manifest.json lists no images")
                for entry in manifest:
                    if not (isinstance(entry, dict) and isinstance(entry.get("Config"), str)
                            and isinstance(entry.get("Layers"), list)
                            and all(isinstance(l, str) for l in entry["Layers"])):
                        raise ImageError(f"invalid image archive {archive!r}: manifest.json entry "
                                         f"{json.dumps(entry)[:80]} needs Config (a file name) "
                                         "and Layers (a list of file names)")
                    blob = arc.read(entry["Config"])
                    tags = [normalize_ref(t) for t in entry.get("RepoTags") or []]
                    images.append((blob, json.loads(blob), list(entry["Layers"]), tags))
            elif "index.json" in arc:
                for mf, tags in _oci_manifests(arc, arc.json("index.json")):
                    blob = _verified(arc, mf["config"]["digest"])
                    layers = []
                    for layer in mf.get("layers", []):
                        if "zstd" in layer.get("mediaType", ""):
                            raise ImageError(f"cannot load {archive!r}: zstd layers are not supported")
                        _verified(arc, layer["digest"])
                        layers.append(_blob_name(layer["digest"]))
                    images.append((blob, json.loads(blob), layers, tags))
            else:
                raise ImageError(f"invalid image archive {archive!r}: neither manifest.json "
                                 "(docker save) nor index.json (OCI layout) found")
            return [_load_one(arc, *img) for img in images]
    except (KeyError, TypeError, ValueError, AttributeError, tarfile.TarError, EOFError,
            gzip.BadGzipFile, zlib.error) as exc:  # AttributeError: a field of the wrong type
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"invalid image archive {archive!r}: {type(exc).__name__}: {_why(exc)}") from None


def _load_one(arc: _Archive, blob: bytes, config: dict, layers: list[str], tags: list[str]) -> dict:
    work = _workdir()
    try:
        root = work / "rootfs"
        root.mkdir(mode=0o755)
        for layer in layers:
            with arc.open(layer) as fh:
                with tarfile.open(fileobj=fh, mode="r:*", tarinfo=_BoundedTarInfo) as tar:
                    apply_layer(tar, str(root), label=layer)
        return _commit(work, blob, config, tags)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


# --- applying one layer ---------------------------------------------------------

# An extended header (pax, GNU long name) is read whole into memory by
# tarfile, whatever size it declares: a compressed one can inflate to GBs.
MAX_EXT_HEADER = 2 << 20


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile's TarInfo, refusing extended headers above MAX_EXT_HEADER
    before they are read (tarfile passes the error on as it is)."""

    def _check_ext(self):
        if self.size > MAX_EXT_HEADER:
            raise ImageError(f"refusing member after {self.name[:60]!r}: extended header of "
                             f"{self.size} bytes (at most {MAX_EXT_HEADER >> 20} MiB)")

    def _proc_pax(self, tarfile):
        self._check_ext()
        return super()._proc_pax(tarfile)

    def _proc_gnulong(self, tarfile):
        self._check_ext()
        return super()._proc_gnulong(tarfile)


def _why(exc: BaseException) -> str:
    """A tar/gzip failure in a few words (tarfile's own can span lines)."""
    if isinstance(exc, tarfile.ReadError) and "could not be opened" in str(exc):
        return "not a tar archive (plain, gzip, bzip2 or xz)"
    return " ".join(str(exc).split()) or type(exc).__name__


def _clean_name(name: str, archive: bool = False) -> str:
    what = "archive member" if archive else "member"
    if name.startswith("/"):
        raise ImageError(f"refusing {what} {name!r}: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"refusing {what} {name!r}: path with '..'")
    return "/".join(parts)


# PATH_MAX: a longer name cannot be made anyway, and a deep one costs a
# directory per level (a pax header can hold a name of any size).
MAX_NAME = 4096


def _check_member(m: tarfile.TarInfo, name: str) -> None:
    if len(m.name) > MAX_NAME or len(m.linkname) > MAX_NAME:
        raise ImageError(f"refusing member {m.name[:60]!r}...: name or link target longer "
                         f"than {MAX_NAME} bytes")
    if m.ischr() or m.isblk():
        raise ImageError(f"refusing member {m.name!r}: device node")
    if m.isreg() and m.mode & 0o6000:
        raise ImageError(f"refusing member {m.name!r}: setuid/setgid file (mode {m.mode:04o})")
    if m.issym():
        target = m.linkname
        if target.startswith("/"):
            raise ImageError(f"refusing symlink {m.name!r} -> {target!r}: absolute link target")
        joined = os.path.normpath(os.path.join(os.path.dirname(name), target))
        if joined == ".." or joined.startswith("../") or joined.startswith("/"):
            raise ImageError(f"refusing symlink {m.name!r} -> {target!r}: escapes the image root")
    elif m.islnk():
        _clean_name(m.linkname)
    elif not (m.isreg() or m.isdir() or m.isfifo()):
        raise ImageError(f"refusing member {m.name!r}: unsupported type {m.type!r}")


def _real_parent(root: str, name: str, create: bool) -> str | None:
    """The host path of name's parent, refusing any symlink on the way.
    None if it does not exist and create is False."""
    current = root
    for part in name.split("/")[:-1]:
        current = os.path.join(current, part)
        if os.path.islink(current):
            raise ImageError(f"refusing member {name!r}: its parent "
                             f"{os.path.relpath(current, root)!r} is a symlink")
        if not os.path.isdir(current):
            if os.path.lexists(current):
                if not create:
                    return None
                os.unlink(current)
            elif not create:
                return None
            os.mkdir(current, 0o755)
    return current


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def apply_layer(tar: tarfile.TarFile, root: str, label: str = "layer") -> None:
    """Apply one layer tar onto root: whiteouts first (they hide the lower
    layers only), then the entries, each checked before anything is written."""
    entries = []
    for m in tar.getmembers():
        name = _clean_name(m.name)
        if not name:
            continue
        base = os.path.basename(name)
        if base.startswith(WHITEOUT):
            entries.append(("whiteout", name, m))
            continue
        _check_member(m, name)
        entries.append(("entry", name, m))
    for kind, name, m in entries:
        if kind != "whiteout":
            continue
        parent = _real_parent(root, name, create=False)
        if parent is None:
            continue
        base = os.path.basename(name)
        if base == OPAQUE:
            for child in os.listdir(parent):
                _remove(os.path.join(parent, child))
        else:
            _remove(os.path.join(parent, base[len(WHITEOUT):]))
    for kind, name, m in entries:
        if kind != "entry":
            continue
        parent = _real_parent(root, name, create=True)
        path = os.path.join(parent, os.path.basename(name))
        if os.path.lexists(path):
            if m.isdir() and os.path.isdir(path) and not os.path.islink(path):
                _set_meta(path, m)
                continue
            _remove(path)
        if m.isdir():
            os.mkdir(path, 0o755)
        elif m.isreg():
            src = tar.extractfile(m)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        elif m.issym():
            os.symlink(m.linkname, path)
        elif m.islnk():
            target_name = _clean_name(m.linkname)
            tparent = _real_parent(root, target_name, create=False)
            target = os.path.join(tparent, os.path.basename(target_name)) if tparent else None
            if not target or not os.path.lexists(target) or (os.path.isdir(target) and not os.path.islink(target)):
                raise ImageError(f"refusing hard link {m.name!r} -> {m.linkname!r}: "
                                 f"target is not a file of the image ({label})")
            os.link(target, path, follow_symlinks=False)
            continue
        elif m.isfifo():
            os.mkfifo(path, 0o600)
        _set_meta(path, m)
    _drain(tar, label)


# What may follow the end of a layer's archive (padding, a checksum trailer).
MAX_TRAILER = 64 << 20


def _drain(tar: tarfile.TarFile, label: str) -> None:
    """Read a compressed layer to its end: gzip, bzip2 and xz check their
    checksum only there, and tarfile stops at the archive's end marker, so a
    damaged stream would otherwise go in silently (and a bomb hidden after the
    marker is refused, not inflated)."""
    stream = tar.fileobj
    if not hasattr(stream, "read") or type(stream).__name__ not in ("GzipFile", "BZ2File", "LZMAFile"):
        return
    left = MAX_TRAILER
    while left > 0:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            return
        left -= len(chunk)
    raise ImageError(f"refusing layer {label}: more than {MAX_TRAILER >> 20} MiB of data after "
                     "the end of its archive")


def _set_meta(path: str, m: tarfile.TarInfo) -> None:
    os.lchown(path, m.uid, m.gid)
    if not m.issym():
        os.chmod(path, m.mode & 0o7777)
    try:
        os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)
    except (OSError, OverflowError):
        pass

