"""How every command ends, `run`'s fast path (entry.py) and click's
(cli.py) alike: one line on stderr for an error, the exit code for it,
and an exit without interpreter finalisation."""
from __future__ import annotations

import os
import sys


def exit_code(exc: BaseException) -> int:
    """The exit code for exc, after its one line on stderr (tracebacks only
    with MINIDOCKER_DEBUG=1). click's own exceptions are cli.py's."""
    from minidocker.errors import MinidockerError
    if isinstance(exc, SystemExit):
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        _error(str(exc.code))
        return 1
    if isinstance(exc, MinidockerError):
        _error("Error: " + " ".join(exc.message.split()))
        return exc.code
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, BrokenPipeError):
        return 141
    if isinstance(exc, Exception):
        if os.environ.get("MINIDOCKER_DEBUG"):
            import traceback
            traceback.print_exception(exc)
        _error(f"Error: internal error: {type(exc).__name__}: {exc} "
               "(MINIDOCKER_DEBUG=1 for the traceback)")
        return 1
    raise exc


def _error(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def finish(code: int) -> None:
    """Exit without interpreter finalisation: all state is written and
    closed by then, and tearing down the modules would add several
    milliseconds to every `run`."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
