"""The local image store: references, images, shared layers, tags.

Layout under images/ (paths.py): layers/<diffID hex>/diff is one layer's
files as overlayfs wants them (whiteouts as 0:0 character devices, opaque
directories marked with trusted.overlay.opaque), layers/<hex>/layer.json its
size; l/<16 hex> a short link to a diff dir; <image hex>/image.json an
image (its config and its layers' diffIDs, bottom first); repositories.json
the tags. A layer is stored once, whatever number of images share it, and is
deleted with the last image using it. A container's root is an overlay of
its image's layers (lower) and its own upper dir.

This module is on `run`'s path: stdlib `os` and the state helpers only.
"""
from __future__ import annotations

import os

from minidocker import paths, state, syscalls as sc
from minidocker.errors import NotFound
from minidocker.images.refs import ImageError, Reference, normalize_ref

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUILTIN = "busybox:latest"
KEPT_CONFIG = ("Env", "Entrypoint", "Cmd", "WorkingDir", "User", "ExposedPorts",
               "StopSignal", "Labels")
# Docker refuses images of more than 125 layers (its overlay2 limit); so do we.
MAX_LAYERS = 125
LINK_CHARS = 16
def lock():
    return state.locked(os.path.join(paths.locks_dir(), "images.lock"))


def repositories() -> dict[str, str]:
    path = paths.repositories_file()
    repos = state.read_json(path, {}) or {}
    if not isinstance(repos, dict) or not all(
            isinstance(v, str) and v.startswith("sha256:") for v in repos.values()):
        raise state.corrupt(path, "expected an object of NAME:TAG -> sha256:ID")
    return repos


def checked_image(path) -> dict | None:
    """image.json, None if absent; an error naming it when it is unusable."""
    img = state.read_json(path)
    if img is not None and not (isinstance(img, dict) and isinstance(img.get("Id"), str)
                                and isinstance(img.get("Config", {}), dict)
                                and isinstance(img.get("RootFS", {}).get("Layers", []), list)):
        raise state.corrupt(path, "expected an object with an Id")
    return img


def _image_json(hexid: str) -> dict | None:
    return checked_image(os.path.join(paths.image_dir(hexid), "image.json"))


def hexid(digest: str) -> str:
    return digest.split(":", 1)[-1]


def image_files() -> list[str]:
    """Every image's image.json."""
    root = paths.images_dir()
    names = os.listdir(root) if os.path.isdir(root) else []
    return sorted(os.path.join(root, n, "image.json") for n in names
                  if len(n) == 64 and all(c in "0123456789abcdef" for c in n)
                  and os.path.exists(os.path.join(root, n, "image.json")))


def _with_tags(img: dict, repos: dict) -> dict:
    img["RepoTags"] = sorted(t for t, i in repos.items() if i == img["Id"])
    return img


def list_images() -> list[dict]:
    repos = repositories()
    out = [_with_tags(img, repos) for img in map(checked_image, image_files()) if img]
    out.sort(key=lambda i: i.get("Created", ""), reverse=True)
    return out


def lookup(ref: str) -> dict:
    """An image by NAME[:TAG], NAME@DIGEST, full id or unique id prefix."""
    repos = repositories()
    try:
        parsed = Reference(ref)
    except ImageError:
        parsed = None
    if parsed and parsed.tagged in repos and not parsed.digest:
        img = _image_json(hexid(repos[parsed.tagged]))
        if img:
            return _with_tags(img, repos)
    if parsed and parsed.digest:
        want = f"{parsed.name}@{parsed.digest}"
        for img in map(checked_image, image_files()):
            if img and want in (img.get("RepoDigests") or []):
                return _with_tags(img, repos)
    prefix = hexid(ref).lower()
    if 4 <= len(prefix) <= 64 and all(c in "0123456789abcdef" for c in prefix):
        root = paths.images_dir()
        hits = [n for n in (os.listdir(root) if os.path.isdir(root) else ())
                if n.startswith(prefix) and os.path.exists(os.path.join(root, n, "image.json"))]
        if len(hits) == 1:
            return _with_tags(_image_json(hits[0]), repos)
        if len(hits) > 1:
            raise ImageError(f"image id prefix {ref!r} is ambiguous: it matches {len(hits)} images", 125)
    raise NotFound(f"unknown image {ref!r}: not in the local store (see `minidocker images`; "
                   f"{BUILTIN.split(':')[0]!r} is built in, others come from `import`, `load` "
                   "or `pull`)", 125)


def layer_ids(image: dict) -> list[str]:
    return list((image.get("RootFS") or {}).get("Layers") or [])


def short_link(diff_id: str) -> str:
    return hexid(diff_id)[:LINK_CHARS]


def mount_rootfs(image: dict, target: str, upper: str, work: str, volatile: bool = False) -> None:
    """Mount the container's root: the image's layers as overlay lower dirs
    (top first), upper and work its own. The lower dirs are named by their
    short links relative to images/ (the process's cwd during the mount), so
    125 layers fit in the page the kernel allows for mount options."""
    # A layer repeated in one image (Docker's empty layers often are) is
    # stacked once, at its top position: everything it holds is applied
    # there anyway, and overlayfs refuses a directory twice in one stack.
    lower = [f"l/{short_link(d)}" for d in dict.fromkeys(reversed(layer_ids(image)))]
    if not lower:
        raise ImageError(f"image {image['Id'][:19]} has no layers: nothing to run", 125)
    target = os.path.abspath(target)   # before the chdir below
    options = (f"lowerdir={':'.join(lower)},upperdir={os.path.abspath(upper)},"
               f"workdir={os.path.abspath(work)}")
    if volatile:
        options += ",volatile"
    here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir(paths.images_dir())
        sc.mount("overlay", target, "overlay", 0, options)
    finally:
        os.fchdir(here)
        os.close(here)


def tag(source: str, target: str) -> None:
    """Give the image source (any reference lookup() takes) the tag target."""
    name = normalize_ref(target)
    with lock():
        image = lookup(source)
        repos = repositories()
        repos[name] = image["Id"]
        state.write_json(paths.repositories_file(), repos)


def remove(ref: str, in_use: set[str]) -> list[str]:
    """Untag ref; delete the image once no tag is left, and its layers that
    no other image uses. in_use: image ids of existing containers (an image
    under a container is never deleted)."""
    with lock():
        image = lookup(ref)
        repos = repositories()
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
            shutil.rmtree(paths.image_dir(hexid(image["Id"])), ignore_errors=True)
            done.append(f"Deleted: {image['Id']}")
            for diff in _unused_layers(layer_ids(image)):
                _drop_layer(diff)
                done.append(f"Deleted: {diff}")
        return done


def _used_layers() -> set[str]:
    used = set()
    for path in image_files():
        img = checked_image(path)
        if img:
            used.update(layer_ids(img))
    return used


def _unused_layers(candidates: list[str]) -> list[str]:
    used = _used_layers()
    return [d for d in dict.fromkeys(candidates) if d not in used]


def _drop_layer(diff_id: str) -> None:
    import shutil
    link = os.path.join(paths.layer_links_dir(), short_link(diff_id))
    if os.path.islink(link) and os.readlink(link).split("/")[2:3] == [hexid(diff_id)]:
        os.unlink(link)
    shutil.rmtree(paths.layer_dir(hexid(diff_id)), ignore_errors=True)


def config_blob(image: dict) -> bytes:
    """The image's config as it came (its id is this blob's digest)."""
    with open(os.path.join(paths.image_dir(hexid(image["Id"])), "config.json"), "rb") as fh:
        return fh.read()


def has_layer(diff_id: str) -> bool:
    return os.path.exists(os.path.join(paths.layer_dir(hexid(diff_id)), "layer.json"))


def layer_size(diff_id: str) -> int:
    info = state.read_json(os.path.join(paths.layer_dir(hexid(diff_id)), "layer.json"), {}) or {}
    return int(info.get("Size", 0)) if isinstance(info, dict) else 0
