"""Attaching a caller to a running container: `run -it`, `attach`.

A container with a terminal is reached through its shim's socket (the shim
holds the pty; terminal.py has the frames); one without is followed through
its log, as `logs -f` from now on. Detaching (ctrl-p ctrl-q) leaves the
container running; otherwise the caller ends with the container's exit code.
"""
from __future__ import annotations

import os
import sys
import time

from minidocker import containers, paths, terminal, teardown
from minidocker.errors import MinidockerError


def terminal_session(cid: str, stdin: bool) -> bool:
    """Relay the caller's terminal to the container's until it ends (False)
    or the caller detaches (True)."""
    try:
        sock = terminal.connect(str(paths.shim_socket(cid)))
    except OSError as exc:
        raise MinidockerError(f"cannot attach to container {cid[:12]}: its terminal is "
                              f"gone ({exc.strerror})") from None
    with sock, terminal.RawMode(0 if stdin else -1):
        detached = terminal.relay_socket(sock, stdin)
    if detached:
        sys.stderr.write("\r\n")
        sys.stderr.flush()
    return detached


def attach(ref: str) -> int:
    """`attach`: the container's exit code, or 0 after a detach."""
    record = containers.find(ref)
    if not record["State"].get("Running"):
        raise MinidockerError(f"you cannot attach to a stopped container "
                              f"{record['Name'].lstrip('/')}, start it first")
    cid = record["Id"]
    if record["Config"].get("Tty"):
        stdin = bool(record["Config"].get("OpenStdin")) and os.isatty(0)
        if terminal_session(cid, stdin):
            return 0
    else:
        _follow_log(record)
    return exit_code(cid)


def _follow_log(record: dict) -> None:
    out = sys.stdout.buffer
    with open(record["LogPath"], "rb") as fh:
        fh.seek(0, os.SEEK_END)
        while True:
            chunk = fh.read(65536)
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if not containers.shim_alive(teardown.load(record["Id"]) or {}):
                out.write(fh.read())
                out.flush()
                return
            time.sleep(0.05)


def exit_code(cid: str) -> int:
    """Wait for the shim to finish, then the recorded exit code."""
    while True:
        record = teardown.load(cid)
        if record is None:
            return 0
        if not containers.shim_alive(record):
            return record["State"].get("ExitCode", 0)
        time.sleep(0.05)
