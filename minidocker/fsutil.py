"""Path resolution that cannot leave a root directory.

A container's files are written by the container: any of its components may
be a symlink pointing anywhere. Host-side code that creates mount points or
files inside a rootfs resolves paths here, treating the rootfs as `/` the way
the kernel will once the container has pivoted into it.
"""
from __future__ import annotations

import os

MAX_LINKS = 40


def secure_join(root: str, unsafe: str) -> str:
    """root + unsafe with every symlink resolved as if root were '/'."""
    root = os.path.abspath(root)
    pending = [p for p in unsafe.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        current = os.path.join(root, *resolved, part)
        if os.path.islink(current):
            hops += 1
            if hops > MAX_LINKS:
                raise OSError(40, "too many levels of symbolic links", unsafe)
            target = os.readlink(current)
            if target.startswith("/"):
                resolved = []
            pending = [p for p in target.split("/") if p not in ("", ".")] + pending
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def mkdir_in_root(root: str, path: str, mode: int = 0o755) -> str:
    """Create path (and parents) inside root; returns the host path."""
    host = secure_join(root, path)
    os.makedirs(host, mode=mode, exist_ok=True)
    return host


def touch_in_root(root: str, path: str) -> str:
    """Make an empty file at path inside root (a bind-mount target)."""
    host = secure_join(root, path)
    os.makedirs(os.path.dirname(host), mode=0o755, exist_ok=True)
    if not os.path.exists(host):
        fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        os.close(fd)
    return host
