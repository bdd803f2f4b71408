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

from minidocker import containers, paths, records, terminal
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


def _follow_log(record: dict, offset: int | None = None) -> None:
    """Its output from now on (or from offset), each stream to ours, until it exits."""
    from minidocker import logfile
    streams = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}

    def show(lines):
        for e in logfile.entries(lines):
            out = streams.get(e.get("stream"), sys.stdout.buffer)
            out.write(e["log"].encode())
            out.flush()

    with open(record["LogPath"], "ab+") as fh:
        fh.seek(offset if offset is not None else 0, os.SEEK_SET if offset is not None else os.SEEK_END)
        while True:
            lines = fh.readlines()
            if lines:
                show(lines)
                continue
            if not containers.shim_alive(records.load(record["Id"]) or {}):
                show(fh.readlines())
                return
            time.sleep(0.05)


def exit_code(cid: str) -> int:
    """Wait for the shim to finish, then the recorded exit code."""
    while True:
        record = records.load(cid)
        if record is None:
            return 0
        if not containers.shim_alive(record):
            return record["State"].get("ExitCode", 0)
        time.sleep(0.05)


def start_attached(ref: str, stdin: bool) -> int:
    """`start -a`: start the container and follow it (its terminal, or its
    output from the start on) to its exit code."""
    record = containers.find(ref)
    if record["State"].get("Running"):
        return attach(ref)
    try:
        offset = os.path.getsize(record["LogPath"])
    except OSError:
        offset = 0
    containers.start(record["Id"])
    if record["Config"].get("Tty"):
        if terminal_session(record["Id"], stdin and os.isatty(0)):
            return 0
    else:
        _follow_log(record, offset)
    return exit_code(record["Id"])
