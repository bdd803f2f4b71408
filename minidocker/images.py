"""The local image store: finding, listing and removing images.

Making images (the built-in busybox, `import`, `load`) lives in
imageload.py, imported only by the commands that need it.

An image is stored flattened: images/<hex>/rootfs holds its layers applied in
order (whiteouts done), images/<hex>/image.json its id and config. The
rootfs is the read-only lower layer of every container's overlay, so layers
are applied once, at load time. Tags live in one index (repositories.json)
so that moving a tag is a single atomic write.
"""
from __future__ import annotations

import re
from pathlib import Path

from minidocker import paths, state
from minidocker.errors import MinidockerError, NotFound

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUILTIN = "busybox:latest"
KEPT_CONFIG = ("Env", "Entrypoint", "Cmd", "WorkingDir", "User", "ExposedPorts",
               "StopSignal", "Labels")
_NAME_RE = re.compile(r"^[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*\Z")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


class ImageError(MinidockerError):
    pass


# --- references ---------------------------------------------------------------

def normalize_ref(ref: str) -> str:
    """NAME[:TAG] -> NAME:TAG, checked against Docker's reference grammar."""
    name, tag = ref, "latest"
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = ref.rsplit(":", 1)
    if name.startswith("docker.io/library/"):
        name = name[len("docker.io/library/"):]
    if not _NAME_RE.match(name) or not _TAG_RE.match(tag):
        raise ImageError(f"invalid image reference {ref!r}: expected NAME[:TAG] "
                         "with a lower-case name", 125)
    return f"{name}:{tag}"


def _lock():
    return state.locked(paths.locks_dir() / "images.lock")


def _repositories() -> dict[str, str]:
    path = paths.repositories_file()
    repos = state.read_json(path, {}) or {}
    if not isinstance(repos, dict) or not all(
            isinstance(v, str) and v.startswith("sha256:") for v in repos.values()):
        raise state.corrupt(path, "expected an object of NAME:TAG -> sha256:ID")
    return repos


def _checked_image(path) -> dict | None:
    """image.json, None if absent; an error naming it when it is unusable."""
    img = state.read_json(path)
    if img is not None and not (isinstance(img, dict) and isinstance(img.get("Id"), str)
                                and isinstance(img.get("Config", {}), dict)):
        raise state.corrupt(path, "expected an object with an Id")
    return img


def _image_json(hexid: str) -> dict | None:
    return _checked_image(paths.image_dir(hexid) / "image.json")


def _hex(image_id: str) -> str:
    return image_id.split(":", 1)[-1]


def list_images() -> list[dict]:
    repos = _repositories()
    out = []
    for entry in sorted(paths.images_dir().glob("*/image.json")):
        img = _checked_image(entry)
        if not img:
            continue
        img["RepoTags"] = sorted(t for t, i in repos.items() if i == img["Id"])
        out.append(img)
    out.sort(key=lambda i: i.get("Created", ""), reverse=True)
    return out


def lookup(ref: str) -> dict:
    """An image by NAME[:TAG], full id or unique id prefix."""
    repos = _repositories()
    try:
        norm = normalize_ref(ref)
    except ImageError:
        norm = None
    if norm and norm in repos:
        img = _image_json(_hex(repos[norm]))
        if img:
            img["RepoTags"] = sorted(t for t, i in repos.items() if i == img["Id"])
            return img
    prefix = _hex(ref).lower()
    if re.fullmatch(r"[0-9a-f]{4,64}", prefix):
        hits = [p.name for p in paths.images_dir().glob(prefix + "*") if (p / "image.json").exists()]
        if len(hits) == 1:
            img = _image_json(hits[0])
            img["RepoTags"] = sorted(t for t, i in repos.items() if i == img["Id"])
            return img
        if len(hits) > 1:
            raise ImageError(f"image id prefix {ref!r} is ambiguous: it matches {len(hits)} images", 125)
    raise NotFound(f"unknown image {ref!r}: not in the local store (see `minidocker images`; "
                   f"{BUILTIN.split(':')[0]!r} is built in, others come from `import` or `load -i`)", 125)


def resolve(ref: str) -> dict:
    """lookup(), making the built-in busybox image on first use."""
    try:
        return lookup(ref)
    except NotFound:
        try:
            norm = normalize_ref(ref)
        except ImageError:
            norm = None
        if norm == BUILTIN:
            ensure_busybox()
            return lookup(ref)
        raise


def rootfs(image: dict) -> Path:
    return paths.image_dir(_hex(image["Id"])) / "rootfs"


def remove(ref: str, in_use: set[str]) -> list[str]:
    """Untag ref; delete the image once no tag is left. in_use: image ids of
    existing containers (an image under a container is never deleted)."""
    with _lock():
        image = lookup(ref)
        repos = _repositories()
        tags = [t for t, i in repos.items() if i == image["Id"]]
        try:
            named = normalize_ref(ref)
        except ImageError:
            named = None
        untag = [named] if named in tags else tags
        remaining = [t for t in tags if t not in untag]
        if not remaining and image["Id"] in in_use:
            raise ImageError(f"cannot remove image {ref!r}: it is used by a container "
                             "(remove the container first)")
        for t in untag:
            repos.pop(t, None)
        state.write_json(paths.repositories_file(), repos)
        done = [f"Untagged: {t}" for t in untag]
        if not remaining:
            import shutil
            shutil.rmtree(paths.image_dir(_hex(image["Id"])), ignore_errors=True)
            done.append(f"Deleted: {image['Id']}")
        return done


# --- making images (imageload.py, loaded on demand) -------------------------------

def ensure_busybox() -> dict:
    from minidocker import imageload
    return imageload.ensure_busybox()


def import_rootfs(archive: str, ref: str) -> dict:
    from minidocker import imageload
    return imageload.import_rootfs(archive, ref)


def load(archive: str) -> list[dict]:
    from minidocker import imageload
    return imageload.load(archive)
