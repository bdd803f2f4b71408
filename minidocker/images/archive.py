"""`import` and `load`: root filesystem tarballs, `docker save` archives and
OCI image layouts, from a file or standard input, in one pass.

The outer archive is read as a stream (no seek; it may come from a pipe,
and may itself be compressed): small members (JSON, VERSION files, tiny
layers) are kept in memory, every other member is extracted as a layer
while it is read (layer.py), into the transaction's scratch space. At the
end the manifest says which members are layers of which image; symlink
members (how `docker save` writes a layer repeated across images) are
followed inside the archive. Nothing reaches the store before everything
has been read and checked (Transaction).
"""
from __future__ import annotations

import io
import json
import os
import posixpath
import sys

from minidocker import clock
from minidocker.images import layer, oci, streams
from minidocker.images.refs import ImageError, normalize_ref
from minidocker.images.transaction import Transaction

SMALL = 1 << 20          # members kept in memory (JSON, tiny layers)
MAX_JSON = 16 << 20


def _open(source: str, verb: str):
    """(reader, label) for a path or '-' (standard input)."""
    if source == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise ImageError(f"cannot {verb} from standard input: it is a terminal "
                             "(pipe an archive in, or give a file)")
        return sys.stdin.buffer, "standard input"
    try:
        return open(source, "rb"), repr(source)
    except FileNotFoundError:
        raise ImageError(f"cannot {verb} {source!r}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"cannot {verb} {source!r}: a directory, not an archive") from None
    except OSError as exc:
        raise ImageError(f"cannot {verb} {source!r}: {exc.strerror}") from None


def import_rootfs(source: str, ref: str) -> dict:
    """`import`: one tarball (plain or compressed) as a one-layer image."""
    tag = normalize_ref(ref)
    fh, label = _open(source, "import")
    with Transaction() as tx:
        try:
            scratch = tx.scratch()
            res = layer.extract(fh, scratch, f"archive {label}")
        finally:
            if fh is not sys.stdin.buffer:
                fh.close()
        tx.add_layer(res.diff_id, scratch, res.size, res.split)
        name = "-" if source == "-" else os.path.basename(source)
        config = {"architecture": oci.machine_arch(), "os": "linux", "created": clock.now(),
                  "config": {}, "rootfs": {"type": "layers", "diff_ids": [res.diff_id]},
                  "history": [{"created": clock.now(), "created_by": f"minidocker import {name}"}]}
        blob = json.dumps(config, sort_keys=True).encode()
        tx.add_image(blob, config, [tag])
        image = tx.commit()[0]
    layer.warn_devices(res.devices)
    return image


class _Outer:
    """One pass over an image archive: what it holds, by cleaned name."""

    def __init__(self, fh, label: str, tx: Transaction):
        self.label, self.tx = label, tx
        self.small: dict[str, bytes] = {}
        self.extracted: dict[str, object] = {}   # name -> layer.Result or ImageError
        self.scratch: dict[str, str] = {}
        self.alias: dict[str, str] = {}
        self.added: set[str] = set()
        self.devices = 0
        try:
            stream = streams.Hashing(streams.decompressed(fh))
            with streams.open_tar(stream) as tar:
                for m in tar:
                    self._member(tar, m)
            streams.drain(stream, label, quiet=True)
        except ImageError:
            raise
        except Exception as exc:  # noqa: BLE001 - tarfile, zlib, EOFError...: a damaged archive
            raise ImageError(f"cannot load {label}: {streams.why(exc)}") from None

    def _member(self, tar, m) -> None:
        name = layer.clean_name(m.name, "archive member")
        if not name:
            return
        if m.issym() or m.islnk():
            target = m.linkname if m.islnk() else posixpath.join(posixpath.dirname(name), m.linkname)
            target = posixpath.normpath(target)
            if target.startswith("/") or target == ".." or target.startswith("../"):
                raise ImageError(f"refusing archive member {m.name!r} -> {m.linkname!r}: "
                                 "a link out of the archive")
            self.alias[name] = target
            return
        if not m.isreg():
            return
        f = tar.extractfile(m)
        head = f.read(1)
        if m.size <= SMALL or head in (b"{", b"["):
            if m.size > MAX_JSON:
                raise ImageError(f"refusing archive member {m.name!r}: {m.size} bytes of JSON "
                                 f"(at most {MAX_JSON >> 20} MiB)")
            self.small[name] = head + f.read()
            return
        self._extract(name, streams.Prefixed(head, f))

    def _extract(self, name: str, reader) -> None:
        scratch = self.tx.scratch()
        try:
            self.extracted[name] = layer.extract(reader, scratch, f"layer {name} of {self.label}")
            self.scratch[name] = scratch
        except ImageError as exc:
            self.extracted[name] = exc
            import shutil
            shutil.rmtree(scratch, ignore_errors=True)

    def resolve(self, name: str) -> str:
        clean = layer.clean_name(name, "archive member")
        for _ in range(16):
            if clean not in self.alias:
                return clean
            clean = self.alias[clean]
        raise ImageError(f"invalid image archive {self.label}: links loop at {name!r}")

    def __contains__(self, name: str) -> bool:
        name = self.resolve(name)
        return name in self.small or name in self.extracted

    def read(self, name: str) -> bytes:
        clean = self.resolve(name)
        if clean not in self.small:
            raise ImageError(f"invalid image archive {self.label}: missing {name}")
        return self.small[clean]

    def json(self, name: str, data: bytes | None = None):
        try:
            return json.loads(self.read(name) if data is None else data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ImageError(f"invalid image archive {self.label}: {name} is not JSON "
                             f"({' '.join(str(exc).split())[:80]})") from None

    def layer(self, name: str) -> layer.Result:
        """The extracted layer member name (a small one is extracted now)."""
        clean = self.resolve(name)
        if clean not in self.extracted and clean in self.small:
            self._extract(clean, io.BytesIO(self.small[clean]))
        if clean not in self.extracted:
            raise ImageError(f"invalid image archive {self.label}: missing {name}")
        res = self.extracted[clean]
        if isinstance(res, ImageError):
            raise res
        return res

    def keep(self, name: str, res: layer.Result) -> None:
        clean = self.resolve(name)
        if clean not in self.added:
            self.added.add(clean)
            self.devices += res.devices
            self.tx.add_layer(res.diff_id, self.scratch[clean], res.size, res.split)


def load(source: str) -> list[dict]:
    """`load`: a `docker save` archive or an OCI image layout (file or '-')."""
    fh, label = _open(source, "load")
    with Transaction() as tx:
        try:
            arc = _Outer(fh, label, tx)
        finally:
            if fh is not sys.stdin.buffer:
                fh.close()
        try:
            if "manifest.json" in arc:
                specs = _docker_images(arc)
            elif "index.json" in arc:
                specs = _oci_images(arc)
            else:
                raise ImageError(f"invalid image archive {label}: neither manifest.json "
                                 "(docker save) nor index.json (OCI layout) found")
            for blob, config, layers, tags, digests in specs:
                want = oci.diff_ids(config, f"invalid image archive {label}")
                if len(want) != len(layers):
                    raise ImageError(f"invalid image archive {label}: {len(layers)} layers "
                                     f"listed, the config has {len(want)} diffIDs")
                for (name, desc_digest), diff_id in zip(layers, want):
                    res = arc.layer(name)
                    if desc_digest and res.compressed != desc_digest:
                        raise ImageError(f"invalid image archive {label}: blob {desc_digest[:19]}... "
                                         "does not match its digest")
                    if res.diff_id != diff_id:
                        raise ImageError(f"invalid image archive {label}: layer {name} has diffID "
                                         f"{res.diff_id[:19]}..., its config says {diff_id[:19]}...")
                    arc.keep(name, res)
                tx.add_image(blob, config, tags, digests)
        except (KeyError, TypeError, AttributeError) as exc:   # a field of the wrong type
            raise ImageError(f"invalid image archive {label}: {type(exc).__name__}: "
                             f"{streams.why(exc)}") from None
        images = tx.commit()
    layer.warn_devices(arc.devices)
    return images


def _docker_images(arc: _Outer):
    manifest = arc.json("manifest.json")
    if not isinstance(manifest, list) or not manifest:
        raise ImageError(f"invalid image archive {arc.label}: manifest.json lists no images")
    out = []
    for entry in manifest:
        if not (isinstance(entry, dict) and isinstance(entry.get("Config"), str)
                and isinstance(entry.get("Layers"), list)
                and all(isinstance(l, str) for l in entry["Layers"])):
            raise ImageError(f"invalid image archive {arc.label}: manifest.json entry "
                             f"{json.dumps(entry)[:80]} needs Config (a file name) "
                             "and Layers (a list of file names)")
        for name in [entry["Config"], *entry["Layers"]]:
            layer.clean_name(name, "archive member")
        blob = arc.read(entry["Config"])
        tags = [normalize_ref(t) for t in entry.get("RepoTags") or []]
        out.append((blob, arc.json(entry["Config"], blob), [(l, None) for l in entry["Layers"]],
                    tags, []))
    return out


def _blob(arc: _Outer, digest: str) -> bytes:
    name = "blobs/sha256/" + oci.checked_digest(digest).split(":", 1)[1]
    return oci.verify(arc.read(name), digest, f"invalid image archive {arc.label}: blob")


def _oci_images(arc: _Outer, index=None, name=None, depth: int = 0):
    """(config blob, config, layers, tags, digests) of every image of an OCI
    index, nested indexes resolved to this machine's platform."""
    if depth > 4:
        raise ImageError(f"invalid image archive {arc.label}: index nesting too deep")
    index = arc.json("index.json") if index is None else index
    out = []
    for desc in index.get("manifests") or []:
        ann = desc.get("annotations") or {}
        ref = name or ann.get("io.containerd.image.name") or ann.get("org.opencontainers.image.ref.name")
        tags = []
        if ref and (":" in ref.rsplit("/", 1)[-1] or "/" in ref):
            tags = [normalize_ref(ref)]
        data = _blob(arc, desc.get("digest"))
        doc = arc.json(desc["digest"], data)
        if oci.is_index(desc) or oci.is_index(doc):
            pick = oci.pick_platform(doc, f"invalid image archive {arc.label}")
            sub = {"manifests": [pick]}
            out.extend(_oci_images(arc, sub, ref if tags else None, depth + 1))
            continue
        config_blob = _blob(arc, (doc.get("config") or {}).get("digest"))
        layers = oci.check_layers(doc, f"invalid image archive {arc.label}")
        out.append((config_blob, arc.json("config", config_blob),
                    [("blobs/sha256/" + l["digest"].split(":", 1)[1], l["digest"]) for l in layers],
                    tags, []))
    return out
