"""The `busybox` rootfs tar the peers import: built from the host, no pulls.

The machine has no registry access for images, and a pulled image would also
make the figures depend on whatever that image holds. busybox-static gives one
static binary; every applet becomes a symlink to it.
"""
from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
REQUIRED = ("sh", "true", "httpd")
DIRS = ("bin", "dev", "etc", "proc", "sys", "tmp", "root", "var", "var/www", "home")
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def _applets(busybox: Path) -> list[str]:
    proc = subprocess.run([str(busybox), "--list"], capture_output=True, text=True,
                          timeout=10, check=True)
    names = {n.strip() for n in proc.stdout.split() if n.strip() and "/" not in n}
    names.discard("busybox")
    missing = [a for a in REQUIRED if a not in names]
    if missing:
        raise RuntimeError(f"{busybox} lacks applets {missing}")
    return sorted(names)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int, now: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, now
    tar.addfile(info, io.BytesIO(data))


def build_rootfs_tar(dest: Path, busybox: Path = BUSYBOX) -> Path:
    """Write a rootfs tar (busybox + applet links + passwd/group) to dest."""
    if not busybox.is_file() or not shutil.which(str(busybox)):
        raise RuntimeError(f"{busybox} missing (install busybox-static)")
    applets = _applets(busybox)
    now = time.time()
    with tarfile.open(dest, "w") as tar:
        for d in DIRS:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755, now
            tar.addfile(info)
        _add_bytes(tar, "bin/busybox", busybox.read_bytes(), 0o755, now)
        for applet in applets:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, "busybox", 0o777, now
            tar.addfile(info)
        _add_bytes(tar, "etc/passwd", PASSWD.encode(), 0o644, now)
        _add_bytes(tar, "etc/group", GROUP.encode(), 0o644, now)
    return dest
