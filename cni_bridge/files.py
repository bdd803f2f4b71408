"""Directories of the plugin's state, made without `os` (importing it costs
~1.2 ms of CPU, the largest import of a plugin exec; the plugin's modules
use `posix`, the C module behind os, directly: HACKING.md)."""
from __future__ import annotations

import posix


def makedirs(path: str, mode: int = 0o777) -> None:
    """`os.makedirs(path, mode, exist_ok=True)`: the last directory made
    with `mode`, missing parents with 0o777 (the umask applies to both);
    FileExistsError when the path is there but not a directory."""
    try:
        posix.mkdir(path, mode)
    except FileExistsError:
        if not is_dir(path):
            raise
    except FileNotFoundError:
        parent = path.rstrip("/").rpartition("/")[0]
        if not parent:
            raise
        makedirs(parent)
        try:
            posix.mkdir(path, mode)
        except FileExistsError:
            if not is_dir(path):
                raise


def is_dir(path: str) -> bool:
    try:
        return posix.stat(path).st_mode & 0o170000 == 0o040000
    except OSError:
        return False
