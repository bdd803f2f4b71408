"""Fault points for the crash-recovery tests: `fault("run:cni-added")` kills
this process with SIGKILL when MINIDOCKER_FAULT names that point, so a test
can stop `run`, the shim or a teardown at an exact step and check that
`system prune` brings the node back. Unset, a call costs one environment
lookup (it sits on the `run` path).

Points: run:netns-pinned, run:cni-added (containers._prepare),
shim:process-started (the container runs, its shim has not recorded it),
teardown:half (network undone; mount and pin not).
"""
from __future__ import annotations

import os

ENV = "MINIDOCKER_FAULT"


def fault(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), 9)
