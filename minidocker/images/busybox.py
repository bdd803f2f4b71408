"""The built-in busybox:latest, made from the host's static busybox (no
network): one layer, written as a tar in memory and stored like any other."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile

from minidocker.images import layer
from minidocker.images.refs import ImageError
from minidocker.images.store import BUILTIN, DEFAULT_PATH
from minidocker.images.transaction import Transaction

DIRS = (("bin", 0o755), ("sbin", 0o755), ("usr", 0o755), ("usr/bin", 0o755), ("usr/sbin", 0o755),
        ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777), ("var", 0o755), ("var/tmp", 0o1777),
        ("var/www", 0o755), ("home", 0o755), ("proc", 0o555), ("sys", 0o555), ("dev", 0o755),
        ("run", 0o755), ("mnt", 0o755))
FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/nsswitch.conf": "hosts: files dns\n",
}


def _layer_tar(busybox: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d, mode in DIRS:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        with open(busybox, "rb") as fh:
            data = fh.read()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        listing = subprocess.run([busybox, "--list-full"], capture_output=True, text=True,
                                 timeout=10, check=True).stdout.split()
        for applet in sorted(set(listing)):
            if applet in ("bin/busybox", "linuxrc") or ".." in applet.split("/"):
                continue
            info = tarfile.TarInfo(applet)
            info.type = tarfile.SYMTYPE
            info.linkname = os.path.relpath("bin/busybox", os.path.dirname(applet) or ".")
            tar.addfile(info)
        for name, text in FILES.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(text), 0o644
            tar.addfile(info, io.BytesIO(text.encode()))
    return raw.getvalue()


def ensure() -> dict:
    """Build busybox:latest (the same id from the same busybox binary)."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        raise ImageError("the built-in busybox image needs the host's busybox-static "
                         "(apt-get install busybox-static)", 125)
    blob = _layer_tar(busybox)
    diff_id = "sha256:" + hashlib.sha256(blob).hexdigest()
    config = {
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Env": [DEFAULT_PATH], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": f"minidocker: built in from {busybox}"}],
    }
    with Transaction() as tx:
        if tx.wanted(diff_id):
            scratch = tx.scratch()
            res = layer.extract(io.BytesIO(blob), scratch, "the built-in busybox layer")
            tx.add_layer(res.diff_id, scratch, res.size, res.split)
        tx.add_image(json.dumps(config, sort_keys=True).encode(), config, [BUILTIN])
        return tx.commit()[0]
