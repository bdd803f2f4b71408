"""`commit`, the container side: which container, its upper dir, what of
it is ours (mount points, fsview.OWN_PATHS) and stays out, and the pause
Docker makes by default so the files do not change while they are read."""
from __future__ import annotations

import contextlib

from minidocker import containers, fsview, images, paths, records
from minidocker.runtime import cgroups


@contextlib.contextmanager
def _paused(record: dict, pause: bool):
    cg = record.get("Cgroups") or {}
    frozen = pause and record["State"].get("Running") and not record["State"].get("Paused") and cg
    if frozen:
        cgroups.freeze(cg, True)
    try:
        yield
    finally:
        if frozen:
            cgroups.freeze(cg, False)


def commit(ref: str, target: str | None = None, message: str = "", author: str = "",
           pause: bool = True) -> dict:
    """`docker commit CONTAINER [REPOSITORY[:TAG]]`: the new image record."""
    if target:
        images.normalize_ref(target)    # a bad name fails before any work
    record = containers.find(ref)
    from minidocker.images import commit as image_commit
    upper = str(paths.container_upper(record["Id"]))
    skip = {p.lstrip("/") for p in fsview.OWN_PATHS}
    with records.locked(record["Id"]), _paused(record, pause):
        parent = images.lookup(record["Image"])
        return image_commit.make_image(parent, upper, skip, record, message, author, target)
