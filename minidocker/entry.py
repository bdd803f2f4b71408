"""The console script: a plain `run` without importing click, the rest via cli.py.

Starting the interpreter and importing click cost more than `runc run`
takes for a whole container, so `minidocker run ...` invocations that
runcmd.parse() understands exactly are run from here; everything else
(other commands, help, errors) goes to click, unchanged. Both end the same
way: exits.exit_code() for the exception, exits.finish() for the exit.
"""
from __future__ import annotations

import gc
import sys

from minidocker.exits import exit_code, finish


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
