"""The local image store: references, images, shared layers, tags.

Layout under images/ (paths.py): layers/<diffID hex>/diff is one layer's
files as overlayfs wants them (whiteouts as 0:0 character devices, opaque
directories marked with trusted.overlay.opaque), layers/<hex>/layer.json its
size; l/<16 hex> a short link to a diff dir; <image hex>/image.json an
image (its config and its layers' diffIDs, bottom first); repositories.json
the tags. A layer is stored once, whatever number of images share it, and is
deleted with the last image using it. A container's root is an overlay of
its image's layers (lower) and its own upper dir.

This module is on `run`'s path: stdlib `re`, `os` and the state helpers only.
"""
from __future__ import annotations

import os
import re

from minidocker import paths, state, syscalls as sc
from minidocker.errors import MinidockerError, NotFound

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUILTIN = "busybox:latest"
KEPT_CONFIG = ("Env", "Entrypoint", "Cmd", "WorkingDir", "User", "ExposedPorts",
               "StopSignal", "Labels")
# Docker refuses images of more than 125 layers (its overlay2 limit); so do we.
MAX_LAYERS = 125
LINK_CHARS = 16
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*\Z")
_DOMAIN_RE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]{1,5})?\Z")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}\Z")
DOCKER_HUB = "docker.io"


class ImageError(MinidockerError):
    pass


# --- references ---------------------------------------------------------------

class Reference:
    """[DOMAIN/]PATH[:TAG][@DIGEST] as Docker parses it: the first component
    is a registry when it has a '.' or a ':' or is `localhost`."""

    def __init__(self, text: str):
        self.text = text
        rest, _, digest = text.partition("@")
        last = rest.rsplit("/", 1)[-1]
        tag = ""
        if ":" in last:
            rest, tag = rest.rsplit(":", 1)
        first, _, tail = rest.partition("/")
        if tail and ("." in first or ":" in first or first == "localhost"):
            domain, path = first, tail
        else:
            domain, path = "", rest
        if domain == DOCKER_HUB or domain == "index.docker.io":
            domain = ""
        if not domain and path.startswith("library/"):
            path = path[len("library/"):]
        if not (_PATH_RE.match(path) and (not domain or _DOMAIN_RE.match(domain))
                and (not tag or _TAG_RE.match(tag)) and (not digest or _DIGEST_RE.match(digest))):
            raise ImageError(f"invalid image reference {text!r}: expected [REGISTRY[:PORT]/]NAME"
                             "[:TAG][@sha256:DIGEST] with a lower-case name", 125)
        self.domain, self.path, self.digest = domain, path, digest
        self.tag = tag or ("" if digest else "latest")

    @property
    def name(self) -> str:
        """The repository as tags name it (no docker.io/library/)."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def tagged(self) -> str:
        return f"{self.name}:{self.tag}" if self.tag else ""

    @property
    def registry(self) -> str:
        return self.domain or DOCKER_HUB

    @property
    def remote_path(self) -> str:
        """The repository on its registry (Docker Hub's official images are library/)."""
        return self.path if self.domain or "/" in self.path else "library/" + self.path


def normalize_ref(ref: str) -> str:
    """NAME[:TAG] -> NAME:TAG, checked against Docker's reference grammar."""
    parsed = Reference(ref)
    if parsed.digest or not parsed.tag:
        raise ImageError(f"invalid tag {ref!r}: a digest cannot be a tag; use NAME[:TAG]", 125)
    return parsed.tagged


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
                                and isinstance(img.get("Config", {}), dict)
                                and isinstance(img.get("RootFS", {}).get("Layers", []), list)):
        raise state.corrupt(path, "expected an object with an Id")
    return img


def _image_json(hexid: str) -> dict | None:
    return _checked_image(paths.image_dir(hexid) / "image.json")


def hexid(digest: str) -> str:
    return digest.split(":", 1)[-1]


def _image_files():
    root = paths.images_dir()
    return sorted(p for p in root.glob("*/image.json") if re.fullmatch(r"[0-9a-f]{64}", p.parent.name))


def _with_tags(img: dict, repos: dict) -> dict:
    img["RepoTags"] = sorted(t for t, i in repos.items() if i == img["Id"])
    return img


def list_images() -> list[dict]:
    repos = _repositories()
    out = [_with_tags(img, repos) for img in map(_checked_image, _image_files()) if img]
    out.sort(key=lambda i: i.get("Created", ""), reverse=True)
    return out


def lookup(ref: str) -> dict:
    """An image by NAME[:TAG], NAME@DIGEST, full id or unique id prefix."""
    repos = _repositories()
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
        for img in map(_checked_image, _image_files()):
            if img and want in (img.get("RepoDigests") or []):
                return _with_tags(img, repos)
    prefix = hexid(ref).lower()
    if re.fullmatch(r"[0-9a-f]{4,64}", prefix):
        hits = [p.name for p in paths.images_dir().glob(prefix + "*") if (p / "image.json").exists()]
        if len(hits) == 1:
            return _with_tags(_image_json(hits[0]), repos)
        if len(hits) > 1:
            raise ImageError(f"image id prefix {ref!r} is ambiguous: it matches {len(hits)} images", 125)
    raise NotFound(f"unknown image {ref!r}: not in the local store (see `minidocker images`; "
                   f"{BUILTIN.split(':')[0]!r} is built in, others come from `import`, `load` "
                   "or `pull`)", 125)


def resolve(ref: str) -> dict:
    """lookup(), making the built-in busybox image on first use and pulling
    a missing image whose reference names a registry (as `docker run`)."""
    try:
        return lookup(ref)
    except NotFound:
        try:
            parsed = Reference(ref)
        except ImageError:
            raise ImageError(f"unknown image {ref!r}: not in the local store, and not a "
                             "reference ([REGISTRY/]NAME[:TAG])", 125) from None
        if parsed.tagged == BUILTIN:
            ensure_busybox()
            return lookup(ref)
        if not parsed.domain:
            raise
        import sys
        from minidocker.images import registry
        print(f"Unable to find image {ref!r} locally", file=sys.stderr)
        try:
            registry.pull(ref, out=sys.stderr)
        except MinidockerError as exc:
            raise MinidockerError(exc.message, 125) from None
        return lookup(ref)


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
    with _lock():
        image = lookup(source)
        repos = _repositories()
        repos[name] = image["Id"]
        state.write_json(paths.repositories_file(), repos)


def remove(ref: str, in_use: set[str]) -> list[str]:
    """Untag ref; delete the image once no tag is left, and its layers that
    no other image uses. in_use: image ids of existing containers (an image
    under a container is never deleted)."""
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
            shutil.rmtree(paths.image_dir(hexid(image["Id"])), ignore_errors=True)
            done.append(f"Deleted: {image['Id']}")
            for diff in _unused_layers(layer_ids(image)):
                _drop_layer(diff)
                done.append(f"Deleted: {diff}")
        return done


def _used_layers() -> set[str]:
    used = set()
    for path in _image_files():
        img = _checked_image(path)
        if img:
            used.update(layer_ids(img))
    return used


def _unused_layers(candidates: list[str]) -> list[str]:
    used = _used_layers()
    return [d for d in dict.fromkeys(candidates) if d not in used]


def _drop_layer(diff_id: str) -> None:
    import shutil
    link = paths.layer_links_dir() / short_link(diff_id)
    if os.path.islink(link) and os.readlink(link).split("/")[2:3] == [hexid(diff_id)]:
        os.unlink(link)
    shutil.rmtree(paths.layer_dir(hexid(diff_id)), ignore_errors=True)


def has_layer(diff_id: str) -> bool:
    return (paths.layer_dir(hexid(diff_id)) / "layer.json").exists()


def layer_size(diff_id: str) -> int:
    info = state.read_json(paths.layer_dir(hexid(diff_id)) / "layer.json", {}) or {}
    return int(info.get("Size", 0)) if isinstance(info, dict) else 0


# --- making images (archive.py, busybox.py, registry.py: loaded on demand) -------

def ensure_busybox() -> dict:
    from minidocker.images import busybox
    return busybox.ensure()


def import_rootfs(archive: str, ref: str) -> dict:
    from minidocker.images import archive as arc
    return arc.import_rootfs(archive, ref)


def load(archive: str) -> list[dict]:
    from minidocker.images import archive as arc
    return arc.load(archive)


# --- one load, import or pull, committed at once ---------------------------------

def _sweep_scratch(own: str) -> None:
    """Remove the scratch dirs of dead transactions (their flock is free)."""
    import fcntl
    import shutil
    for entry in os.scandir(paths.images_dir()):
        if not entry.name.startswith(".tmp-") or entry.path == own:
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue          # a live load, import or pull
        finally:
            os.close(fd)
        shutil.rmtree(entry.path, ignore_errors=True)


class Transaction:
    """What one load, import or pull makes, staged in images/.tmp-*/ (the same
    file system as the store) and moved in under the lock at commit: any
    failure before it leaves the store exactly as it was, whatever number
    of images the source holds."""

    def __init__(self):
        import fcntl
        import tempfile
        state.ensure_dir(paths.images_dir())
        self.dir = tempfile.mkdtemp(prefix=".tmp-", dir=paths.images_dir())
        # held while this transaction lives: a scratch dir whose lock is free
        # was left by a killed process (SIGKILL, power loss) and is removed
        self._fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.layers: dict[str, int] = {}     # diffID -> size, staged under dir/<hex>/
        self.images: list[dict] = []
        self._n = 0
        _sweep_scratch(self.dir)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)
        os.close(self._fd)

    def scratch(self) -> str:
        """A new empty directory to extract one layer into."""
        self._n += 1
        path = os.path.join(self.dir, f"x{self._n}")
        os.mkdir(path, 0o755)
        return path

    def wanted(self, diff_id: str) -> bool:
        return diff_id not in self.layers and not has_layer(diff_id)

    def add_layer(self, diff_id: str, scratch: str, size: int) -> None:
        """Keep an extracted layer (a scratch dir) as diff_id, unless the store
        or this transaction has it already."""
        if not self.wanted(diff_id):
            import shutil
            shutil.rmtree(scratch, ignore_errors=True)
            return
        staged = os.path.join(self.dir, hexid(diff_id))
        os.mkdir(staged, 0o700)
        os.rename(scratch, os.path.join(staged, "diff"))
        state.write_json(os.path.join(staged, "layer.json"), {"DiffID": diff_id, "Size": size})
        self.layers[diff_id] = size

    def add_image(self, config_blob: bytes, config: dict, tags: list[str],
                  digests: list[str] = ()) -> dict:
        """An image over layers already added (or in the store); its id is the
        digest of its config blob, as Docker's."""
        import hashlib
        from minidocker import clock
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        if len(diff_ids) > MAX_LAYERS:
            raise ImageError(f"image has {len(diff_ids)} layers: at most {MAX_LAYERS} are supported")
        for d in diff_ids:
            if d not in self.layers and not has_layer(d):
                raise ImageError(f"layer {d} of the image's config is not in the archive")
        image_id = "sha256:" + hashlib.sha256(config_blob).hexdigest()
        cfg = config.get("config") or {}
        record = {
            "Id": image_id,
            "RepoDigests": list(digests),
            "Created": config.get("created") or clock.now(),
            "Architecture": config.get("architecture", "amd64"),
            "Os": config.get("os", "linux"),
            "Config": {k: cfg[k] for k in KEPT_CONFIG if cfg.get(k) is not None},
            "RootFS": {"Type": "layers", "Layers": diff_ids},
            "Size": sum(self.layers.get(d, 0) or layer_size(d) for d in diff_ids),
            "RepoTags": list(tags),
        }
        staged = os.path.join(self.dir, "image-" + hexid(image_id))
        if not os.path.exists(staged):
            os.mkdir(staged, 0o700)
            with open(os.open(os.path.join(staged, "config.json"),
                              os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
                fh.write(config_blob)
        self.images.append(record)
        return record

    def commit(self) -> list[dict]:
        """Move the layers, then the images, then the tags into the store."""
        import shutil
        moved: list[str] = []
        with _lock():
            try:
                links = state.ensure_dir(paths.layer_links_dir())
                state.ensure_dir(paths.layers_dir())
                for diff_id in self.layers:
                    final = paths.layer_dir(hexid(diff_id))
                    if final.exists():
                        continue
                    link = links / short_link(diff_id)
                    if os.path.lexists(link):
                        raise ImageError(f"layer {diff_id}: its short name {link.name} is taken "
                                         "by another layer")
                    os.rename(os.path.join(self.dir, hexid(diff_id)), final)
                    moved.append(str(final))
                    os.symlink(f"../layers/{hexid(diff_id)}/diff", link)
                    moved.append(str(link))
                repos = _repositories()
                for record in self.images:
                    final = paths.image_dir(hexid(record["Id"]))
                    staged = os.path.join(self.dir, "image-" + hexid(record["Id"]))
                    old = _checked_image(final / "image.json") if final.exists() else None
                    if old:
                        record["RepoDigests"] = sorted(set(old.get("RepoDigests") or [])
                                                       | set(record["RepoDigests"]))
                        record["Created"] = old.get("Created", record["Created"])
                    body = {k: v for k, v in record.items() if k != "RepoTags"}
                    if os.path.exists(staged):
                        state.write_json(os.path.join(staged, "image.json"), body)
                    if not final.exists():
                        os.rename(staged, final)
                        moved.append(str(final))
                    else:
                        state.write_json(final / "image.json", body)
                    for tag in record["RepoTags"]:
                        repos[tag] = record["Id"]
                state.write_json(paths.repositories_file(), repos)
            except BaseException:
                for path in reversed(moved):
                    if os.path.islink(path):
                        os.unlink(path)
                    else:
                        shutil.rmtree(path, ignore_errors=True)
                raise
        return self.images
