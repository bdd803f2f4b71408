"""The prompt of destructive commands (`network prune`, `system prune`)."""
from __future__ import annotations

import sys

import click

from minidocker.errors import MinidockerError


def confirmed(command: str, warning: str, force: bool) -> bool:
    """True to go on: -f given, or a person said yes. Without a terminal
    there is nobody to ask, so that is refused rather than assumed."""
    if force:
        return True
    if not sys.stdin.isatty():
        raise MinidockerError(f"{command} asks for confirmation and stdin is not a terminal; "
                              "give -f to go ahead without asking")
    return click.confirm(warning, default=False)
