"""Images: the store (store.py: references, images, shared layers, tags, the
container's overlay), safe layer extraction (layer.py), archives (archive.py:
import, load), the built-in busybox (busybox.py) and registries
(registry.py: pull, push, login). Only store.py is on `run`'s path."""
from minidocker.images.store import (BUILTIN, DEFAULT_PATH, ImageError, Reference,  # noqa: F401
                                     ensure_busybox, import_rootfs, list_images, load, lookup,
                                     mount_rootfs, normalize_ref, remove, resolve, tag)
