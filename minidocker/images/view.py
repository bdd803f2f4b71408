"""What `image inspect`, `history` and `image prune` show and do, in
Docker's shapes: the store's record joined with the image's config blob."""
from __future__ import annotations

import json
import os
from pathlib import Path

from minidocker import paths
from minidocker.images import store


def config_of(image: dict) -> dict:
    """The image's config as it came (config.json); {} when there is none."""
    try:
        config = json.loads(store.config_blob(image))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def inspect(image: dict) -> dict:
    """`docker image inspect`'s object."""
    config = config_of(image)
    layers = store.layer_ids(image)
    top = Path(paths.layer_dir(store.hexid(layers[-1]))) / "diff" if layers else ""
    lower = [os.path.join(paths.layer_dir(store.hexid(d)), "diff") for d in reversed(layers[:-1])]
    return {
        "Id": image["Id"],
        "RepoTags": image.get("RepoTags") or [],
        "RepoDigests": image.get("RepoDigests") or [],
        "Parent": config.get("parent", ""),
        "Comment": config.get("comment", ""),
        "Created": image.get("Created", ""),
        "DockerVersion": config.get("docker_version", ""),
        "Author": config.get("author", ""),
        "Config": config.get("config") or image.get("Config") or {},
        "Architecture": image.get("Architecture", ""),
        "Os": image.get("Os", ""),
        "Size": image.get("Size", 0),
        "GraphDriver": {"Name": "overlay2",
                        "Data": {"UpperDir": str(top), "LowerDir": ":".join(lower)} if lower
                        else {"UpperDir": str(top)}},
        "RootFS": {"Type": "layers", "Layers": layers},
        "Metadata": {"LastTagTime": ""},
    }


def history(image: dict) -> list[dict]:
    """`docker history`'s rows, newest first: the config's history entries,
    each non-empty one matched with its layer (bottom first) for its size;
    the top row carries the image id, the rest `<missing>` as Docker's."""
    layers = store.layer_ids(image)
    entries = config_of(image).get("history") or [
        {"created": image.get("Created", "")} for _ in layers]
    rows, i = [], 0
    for entry in entries:
        size = 0
        if not entry.get("empty_layer") and i < len(layers):
            size = store.layer_size(layers[i])
            i += 1
        rows.append({"ID": "<missing>", "CreatedAt": entry.get("created", ""),
                     "CreatedBy": entry.get("created_by", ""), "Size": size,
                     "Comment": entry.get("comment", "")})
    rows.reverse()
    if rows:
        rows[0]["ID"] = image["Id"]
    return rows


def prune(every: bool, in_use: set[str]) -> tuple[list[str], int]:
    """Remove dangling images (no tag), or with every all images no
    container uses; (Docker's `untagged:`/`deleted:` lines, bytes freed)."""
    lines, freed = [], 0
    for image in store.list_images():
        if image["Id"] in in_use or (image["RepoTags"] and not every):
            continue
        before = _layers_bytes()
        for tag in image["RepoTags"] or [image["Id"]]:
            for line in store.remove(tag, in_use):
                kind, _, what = line.partition(": ")
                lines.append(f"{kind.lower()}: {what}")
        freed += max(0, before - _layers_bytes())
    return lines, freed


def _layers_bytes() -> int:
    root = Path(paths.layers_dir())
    if not root.exists():
        return 0
    return sum(store.layer_size("sha256:" + name) for name in os.listdir(root))
