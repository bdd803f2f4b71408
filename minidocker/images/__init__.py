"""Images, the package's one entry for the rest of minidocker.

refs.py (references, ImageError), store.py (images, shared layers, tags,
the overlay of a container's root), transaction.py (atomic load, import,
pull), streams.py and layer.py (one-pass safe extraction), archive.py
(`import`, `load`), oci.py (media types, platform choice), registry.py,
progress.py and pusher.py (`pull`, `push`, `login`), busybox.py (the built-in
image). Only this module, refs.py and store.py are on `run`'s path; the
others are imported when a command needs them.
"""
from __future__ import annotations

from minidocker.errors import MinidockerError, NotFound
from minidocker.images.refs import ImageError, Reference, normalize_ref  # noqa: F401
from minidocker.images.store import (BUILTIN, DEFAULT_PATH, list_images, lookup,  # noqa: F401
                                     mount_rootfs, remove, tag)


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
        print(f"Unable to find image {ref!r} locally", file=sys.stderr)
        try:
            pull(ref, out=sys.stderr)
        except MinidockerError as exc:
            raise MinidockerError(exc.message, 125) from None
        return lookup(ref)


def ensure_busybox() -> dict:
    from minidocker.images import busybox
    return busybox.ensure()


def import_rootfs(archive: str, ref: str) -> dict:
    from minidocker.images import archive as arc
    return arc.import_rootfs(archive, ref)


def load(archive: str) -> list[dict]:
    from minidocker.images import archive as arc
    return arc.load(archive)


def pull(ref: str, out=None) -> dict:
    import sys
    from minidocker.images import registry
    return registry.pull(ref, out=out or sys.stdout)


def push(ref: str) -> str:
    from minidocker.images import pusher
    return pusher.push(ref)


def login(server: str, username: str, password: str) -> None:
    from minidocker.images import registry
    registry.login(server, username, password)
