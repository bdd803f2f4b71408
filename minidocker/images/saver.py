"""`save`: images as a `docker save` archive (manifest.json, repositories,
<id>.json configs, <diffID>/layer.tar), what `docker load` and our own
`load` read. Each layer is its very tar (layertar.original_tar), so a
save/load round trip keeps every diffID and image id; a layer shared by
several images is written once."""
from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile

from minidocker.images import layertar, oci, store
from minidocker.images.refs import ImageError, Reference


def _wanted(refs: list[str]) -> list[tuple[dict, list[str]]]:
    """(image, tags to name) for each ref, as Docker: a tag names itself, an
    id names no tag; an image given twice is written once."""
    out: dict[str, tuple[dict, list[str]]] = {}
    for ref in refs:
        image = store.lookup(ref)
        try:
            parsed = Reference(ref)
            tags = [parsed.tagged] if parsed.tagged in image["RepoTags"] else []
        except ImageError:
            tags = []
        held = out.setdefault(image["Id"], (image, []))
        held[1].extend(t for t in tags if t not in held[1])
    return list(out.values())


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def _write(tar: tarfile.TarFile, wanted) -> None:
    manifest, repos, written = [], {}, set()
    for image, tags in wanted:
        blob = store.config_blob(image)
        config = json.loads(blob)
        diff_ids = list(store.layer_ids(image))
        layers = []
        for i, diff_id in enumerate(diff_ids):
            name = f"{store.hexid(diff_id)}/layer.tar"
            if diff_id not in written:
                data = layertar.layer_tar(diff_id)
                diff_ids[i] = oci.digest_of(data)
                if diff_ids[i] != diff_id:      # made anew: the config must say so
                    name = f"{store.hexid(diff_ids[i])}/layer.tar"
                _member(tar, name, data)
                _member(tar, os.path.dirname(name) + "/VERSION", b"1.0")
                written.add(diff_id)
            layers.append(name)
        if diff_ids != store.layer_ids(image):
            config.setdefault("rootfs", {})["diff_ids"] = diff_ids
            blob = json.dumps(config, separators=(",", ":")).encode()
        config_name = oci.digest_of(blob).split(":", 1)[1] + ".json"
        _member(tar, config_name, blob)
        manifest.append({"Config": config_name, "RepoTags": tags or None, "Layers": layers})
        for t in tags:
            repo, _, tag = t.rpartition(":")
            repos.setdefault(repo, {})[tag] = os.path.dirname(layers[-1])
    _member(tar, "manifest.json", json.dumps(manifest, separators=(",", ":")).encode())
    if repos:
        _member(tar, "repositories", json.dumps(repos, separators=(",", ":")).encode())


def save(refs: list[str], output: str | None, stdout) -> None:
    """Write the archive to output (made beside it, renamed at the end, so a
    failure leaves no half archive) or to the binary file stdout."""
    wanted = _wanted(refs)
    if output is None:
        with tarfile.open(fileobj=stdout, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            _write(tar, wanted)
        stdout.flush()
        return
    target = os.path.abspath(output)
    if os.path.isdir(target):
        raise ImageError(f"cannot save to {output!r}: a directory; give a file name")
    fd, tmp = tempfile.mkstemp(prefix=".save-", dir=os.path.dirname(target) or ".")
    try:
        with os.fdopen(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _write(tar, wanted)
        os.chmod(tmp, 0o644)
        os.rename(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
