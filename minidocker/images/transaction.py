"""One load, import or pull as a transaction on the store (store.py): staged
beside it, moved in at once under its lock."""
from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from minidocker import paths, state
from minidocker.images.refs import ImageError
from minidocker.images.store import (KEPT_CONFIG, MAX_LAYERS, checked_image, has_layer, hexid,
                                     layer_size, lock, repositories, short_link)


def _sweep_scratch(own: str) -> None:
    """Remove the scratch dirs of dead transactions (their flock is free)."""
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
        state.ensure_dir(paths.images_dir())
        # The flock is held while this transaction lives: a scratch dir whose
        # lock is free was left by a killed process (SIGKILL, power loss) and
        # is removed. The dir is named .tmp-* only once locked, so a sweep
        # never sees a live one unlocked.
        new = tempfile.mkdtemp(prefix=".new-", dir=paths.images_dir())
        self._fd = os.open(new, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.dir = os.path.join(os.path.dirname(new), ".tmp-" + os.path.basename(new)[5:])
        os.rename(new, self.dir)
        self.layers: dict[str, int] = {}     # diffID -> size, staged under dir/<hex>/
        self.images: list[dict] = []
        self._n = 0
        _sweep_scratch(self.dir)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
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

    def add_layer(self, diff_id: str, scratch: str, size: int, split=None) -> None:
        """Keep an extracted layer (a scratch dir) as diff_id, unless the store
        or this transaction has it already."""
        if not self.wanted(diff_id):
            shutil.rmtree(scratch, ignore_errors=True)
            return
        staged = os.path.join(self.dir, hexid(diff_id))
        os.mkdir(staged, 0o700)
        os.rename(scratch, os.path.join(staged, "diff"))
        state.write_json(os.path.join(staged, "layer.json"), {"DiffID": diff_id, "Size": size})
        if split:   # the tar's rest (gzip) and the files' places: pusher.py
            with open(os.open(os.path.join(staged, "tar-split.gz"), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                              0o600), "wb") as fh:
                fh.write(split[0])
            state.write_json(os.path.join(staged, "tar-split.json"), split[1])
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
        moved: list[str] = []
        with lock():
            try:
                links = Path(state.ensure_dir(paths.layer_links_dir()))
                state.ensure_dir(paths.layers_dir())
                for diff_id in self.layers:
                    final = Path(paths.layer_dir(hexid(diff_id)))
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
                repos = repositories()
                for record in self.images:
                    final = Path(paths.image_dir(hexid(record["Id"])))
                    staged = os.path.join(self.dir, "image-" + hexid(record["Id"]))
                    old = checked_image(final / "image.json") if final.exists() else None
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
                state.write_json(Path(paths.repositories_file()), repos)
            except BaseException:
                for path in reversed(moved):
                    if os.path.islink(path):
                        os.unlink(path)
                    else:
                        shutil.rmtree(path, ignore_errors=True)
                raise
        return self.images
