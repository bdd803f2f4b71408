"""Hand-off to runc: the same bundle, run by the reference OCI runtime.

`runc run --detach` leaves the container's init as an orphan; the shim is a
child subreaper, so the orphan becomes its child and it reaps it exactly as
it reaps a container of the built-in runner. runc's own state lives under
paths.runc_root() so that private test roots stay private.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

from minidocker import paths
from minidocker.runtime.builtin import StartError

TIMEOUT = 60


def binary() -> str:
    found = shutil.which("runc")
    if not found:
        raise StartError(125, "runtime 'runc' is not installed (apt-get install runc)")
    return found


def _base() -> list[str]:
    return [binary(), "--root", paths.runc_root()]


def start(bundle: str, cid: str, stdio: tuple[int, int, int],
          console_socket: str | None = None) -> int:
    """runc run -d; returns the container's host pid. console_socket: where
    runc sends the pty's master when process.terminal is set."""
    pidfile = os.path.join(bundle, "runc.pid")
    log = os.path.join(bundle, "runc.log")
    for stale in (pidfile, log):
        if os.path.exists(stale):
            os.unlink(stale)
    argv = [*_base()[:1], "--log", log, "--log-format", "json", *_base()[1:],
            "run", "--detach", "--pid-file", pidfile, "--bundle", bundle,
            *(["--console-socket", console_socket] if console_socket else []), cid]
    # The container inherits runc's stdio, so stderr cannot be captured here:
    # runc's own error is read back from its JSON log instead.
    proc = subprocess.run(argv, stdin=stdio[0], stdout=stdio[1], stderr=stdio[2],
                          timeout=TIMEOUT)
    if proc.returncode != 0:
        delete(cid)
        message = _last_error(log) or f"runc exited {proc.returncode}"
        code = 125
        if "executable file not found" in message or "no such file or directory" in message:
            code = 127
        elif "permission denied" in message:
            code = 126
        raise StartError(code, f"runc: {message}")
    with open(pidfile) as fh:
        return int(fh.read().strip())


def _last_error(log: str) -> str:
    try:
        with open(log) as fh:
            lines = [json.loads(l) for l in fh if l.strip()]
    except (OSError, ValueError):
        return ""
    errors = [l.get("msg", "") for l in lines if l.get("level") in ("error", "fatal")]
    return errors[-1].splitlines()[0] if errors else ""


def delete(cid: str) -> None:
    """Forget the container in runc (its state dir and cgroups); idempotent."""
    if not os.path.exists(os.path.join(paths.runc_root(), cid)):
        return
    subprocess.run([*_base(), "delete", "--force", cid], capture_output=True, timeout=TIMEOUT)
