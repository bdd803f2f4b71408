"""Running a rule tool: argument lists, a timeout, stdin for batches."""
from __future__ import annotations

import subprocess

from cni_bridge.errors import failure

TIMEOUT = 30


def tool(argv: list[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=TIMEOUT)
    except FileNotFoundError:
        raise failure(f"{argv[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise failure(f"{argv[0]} timed out after {TIMEOUT}s") from None
    if check and proc.returncode != 0:
        raise failure(f"{' '.join(argv)} failed", (proc.stderr or proc.stdout).strip()[:1000])
    return proc
