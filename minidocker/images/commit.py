"""`commit`, the image side: a container's upper dir as one more layer on
top of its image's layers, under a new config (the container's), through a
Transaction like load and pull. The layer tar is written from the upper dir
(layertar.dir_tar: overlay whiteouts as `.wh.` names) and extracted back
into the store the way any layer is, so it has a tar-split and `save` and
`push` send the very tar the new diffID names."""
from __future__ import annotations

import json
import tempfile

from minidocker import clock
from minidocker.images import layer, layertar, store, view
from minidocker.images.refs import normalize_ref
from minidocker.images.transaction import Transaction


def make_image(parent: dict, upper: str, skip, container: dict, message: str = "",
               author: str = "", ref: str | None = None) -> dict:
    """The new image: parent's layers plus upper (minus skip), the config
    container gives (Config's image keys), a history entry for the layer."""
    tags = [normalize_ref(ref)] if ref else []
    now = clock.now()
    config = view.config_of(parent)
    cfg = container.get("Config") or {}
    config["config"] = {k: cfg[k] for k in store.KEPT_CONFIG if cfg.get(k) not in (None, "", [], {})}
    config["created"] = now
    config["container"] = container["Id"]
    config["parent"] = parent["Id"]
    config.setdefault("architecture", parent.get("Architecture", "amd64"))
    config.setdefault("os", parent.get("Os", "linux"))
    for key, value in (("author", author), ("comment", message)):
        if value:
            config[key] = value
        else:
            config.pop(key, None)
    entry = {"created": now, "created_by": " ".join([container["Path"], *container["Args"]])}
    if author:
        entry["author"] = author
    if message:
        entry["comment"] = message
    with Transaction() as tx, tempfile.TemporaryFile(dir=tx.dir) as tar:
        layertar.dir_tar(upper, tar, skip)
        tar.seek(0)
        scratch = tx.scratch()
        res = layer.extract(tar, scratch, f"the upper dir of container {container['Id'][:12]}")
        tx.add_layer(res.diff_id, scratch, res.size, res.split)
        config["rootfs"] = {"type": "layers", "diff_ids": [*store.layer_ids(parent), res.diff_id]}
        config["history"] = [*(config.get("history") or []), entry]
        blob = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        tx.add_image(blob, config, tags)
        return tx.commit()[0]
