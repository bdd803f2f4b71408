"""`sha256` without importing `hashlib`.

Why: `hashlib` imports `_hashlib` (OpenSSL's bindings) and `_blake2` at
import, ~2.5 ms of every bridge `run`, which hashes a few short strings (an
endpoint id, a CNI lock bucket). CPython's own `_sha256` (3.11; `_sha2`
from 3.12) gives the same digests. Chosen by version, not by trying: a
failed import of a missing module makes the launcher load `site` (entry.py).
"""
from __future__ import annotations

import sys

try:
    if sys.version_info >= (3, 12):
        from _sha2 import sha256  # noqa: F401
    else:
        from _sha256 import sha256  # noqa: F401
except ImportError:  # pragma: no cover - another interpreter
    from hashlib import sha256  # noqa: F401
