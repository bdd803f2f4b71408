"""The console script: a plain `run` without importing click, the rest via cli.py.

Starting the interpreter and importing click cost more than `runc run`
takes for a whole container, so `minidocker run ...` invocations that
runcmd.parse() understands exactly are run from here; everything else
(other commands, help, errors) goes to click, unchanged. Both end the same
way: exit_code() for the exception, finish() for the exit.
"""
from __future__ import annotations

import gc
import os
import sys


def main() -> None:
    args = sys.argv[1:]
    # Imports allocate much and free little: collecting during them is waste.
    gc.disable()
    from minidocker import runcmd
    params = runcmd.parse(args)
    if params is None:
        from minidocker import cli
        cli.main(args)  # exits
    gc.enable()
    try:
        code = runcmd.run(params.pop("image"), params.pop("command"), params)
    except BaseException as exc:  # noqa: BLE001 - exit_code re-raises what it does not know
        code = exit_code(exc)
    finish(code)


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
