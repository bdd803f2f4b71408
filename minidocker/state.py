"""On-disk JSON state: atomic writes and flock(2) locks.

Every minidocker invocation is its own process (there is no daemon), so any
file two of them may write is replaced atomically (tmp + rename) and every
read-modify-write happens under an exclusive lock. Stdlib only: the shim
imports this and must stay small.
"""
from __future__ import annotations

import fcntl
import os

from cni import fastjson


def ensure_dir(path, mode: int = 0o700) -> str:
    """mkdir -p where every directory made here gets mode (not the umask's);
    the first directory made (or path, if it was there)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return path
    missing = []
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path.rstrip("/")) or "."
    for p in reversed(missing):
        try:
            os.mkdir(p, mode)
            os.chmod(p, mode)
        except FileExistsError:
            pass
    return missing[0] if missing else path


def write_json(path, obj) -> None:
    """Replace path with obj as JSON, so a reader never sees half a file.
    One line, not indented: only json's C encoder is quick (an indented
    record took ~2 ms of pure Python a write, five writes a `run`), and
    fastjson spares the `json` import (with `re`)."""
    _replace(path, fastjson.dumps(obj).encode() + b"\n")


def write_text(path, text: str) -> None:
    """Replace path with text, so a reader never sees half a file."""
    _replace(path, text.encode())


def _replace(path, data: bytes) -> None:
    head, name = os.path.split(os.fspath(path))
    ensure_dir(head or ".")
    tmp = os.path.join(head, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def corrupt(path, why: str):
    """The one-line error for a state file that cannot be used (hand-edited,
    truncated by a full disk, written by something else): it names the file
    so that the user can repair or remove it."""
    from minidocker.errors import MinidockerError
    return MinidockerError(f"corrupt state file {path}: {why}; repair or remove it")


def read_json(path, default=None):
    """path's JSON, default when it does not exist; a file that is not JSON
    is an error naming it (never a traceback)."""
    try:
        with open(path, "rb") as fh:
            return fastjson.loads(fh.read())
    except FileNotFoundError:
        return default
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise corrupt(path, f"not JSON ({' '.join(str(exc).split())[:100]})") from None
    except IsADirectoryError:
        raise corrupt(path, "a directory, not a file") from None


class locked:
    """Hold flock on path (created 0600) for the `with` block. A class, not
    contextlib's decorator: contextlib is an import `run` does not need."""

    def __init__(self, path, shared: bool = False):
        self.path, self.shared, self.fd = path, shared, -1

    def __enter__(self) -> None:
        path = os.fspath(self.path)
        ensure_dir(os.path.dirname(path) or ".")
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # closing releases the lock
