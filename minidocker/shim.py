"""The per-container supervisor.

Detached (`run -d`, `start`) it is exec'd as `python -m minidocker.shim ID FD`
and forks once more, letting its parent exit, so it is nobody's child and
survives the command that started it. Attached (foreground `run`) it is a
forked child of `run` in a session of its own (no second interpreter to
start: that is most of a short container's latency). Either way it becomes
a child subreaper, starts the
container with the chosen runtime, reports `started PID` (or `error CODE
MSG`) on FD, then waits: the container's output comes through pipes the
shim copies to the log (and, attached, to the terminal of `run`). At exit
it records the exit code and times, reports `exit CODE` on FD and runs the
teardown, or starts the process again as its restart policy says.

It stays small in memory: a detached shim without a terminal waits in a
lean exec'd stage (minidocker/shimwait.py) and comes back here
(`--resume`) when the container exits; the others keep to stdlib and
minidocker's lean modules (no click, pyroute2 or jsonschema); the teardown
modules load only at exit.
"""
from __future__ import annotations

import os
import sys
import time

from minidocker import clock, paths, records, syscalls as sc, shimwait, ttyrelay


def _now() -> str:
    return clock.now()


def _update(cid: str, **fields) -> dict | None:
    with records.locked(cid):
        record = records.load(cid)
        if record is None:
            return None
        for key in ("ShimPid", "ShimStart", "RestartCount", "HasBeenManuallyStopped"):
            if key in fields:
                record[key] = fields.pop(key)
        record["State"].update(fields)
        records.save(record)
        return record


def _report(fd: int | None, line: str) -> None:
    if fd is None:
        return
    try:
        os.write(fd, line.encode())
    except OSError:
        pass  # the command that started us is gone: nobody to tell


def _output_pipes(stdin: int, log_fd: int, attach: bool):
    """The container's stdio and the pipes the shim copies: each stream to
    the log (tagged stdout/stderr) and, attached, to the caller's too."""
    from minidocker.logfile import Stream
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pipes = [(out_r, [Stream(log_fd, "stdout")] + ([1] if attach else [])),
             (err_r, [Stream(log_fd, "stderr")] + ([2] if attach else []))]
    return (stdin, out_w, err_w), pipes


def main(argv: list[str]) -> int:
    """The detached shim: fork once more so that nobody waits for us; or,
    with --resume, the full shim again after the lean stage's wait."""
    if argv[:1] == ["--resume"]:
        cid, status, began, delay = argv[1], int(argv[2]), float(argv[3]), float(argv[4])
        return resume(cid, status, began, delay)
    cid, status_fd = argv[0], int(argv[1])
    attach = "--attach" in argv[2:]
    if os.fork():
        os._exit(0)
    return supervise(cid, status_fd, attach)


def _open_log(cid: str) -> int:
    return os.open(os.path.join(paths.container_dir(cid), "container.log"),
                   os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _failed_start(cid: str, record: dict, status_fd: int, exc: Exception) -> None:
    """The runtime could not start the process: record why, tell `run`, tear down."""
    code = getattr(exc, "code", 125)
    message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    message = " ".join(message.split())
    never = record["State"].get("StartedAt") == clock.NEVER
    _update(cid, Status="created" if never else "exited", Running=False, Pid=0,
            ExitCode=code, Error=message, FinishedAt=_now())
    _report(status_fd, f"error {code} {message}\n")
    from minidocker import teardown
    teardown.run(cid)


def supervise(cid: str, status_fd: int, attach: bool) -> int:
    """Start the container, then watch it (long: the start reads best in order)."""
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    # `system prune` tells a live shim by its name before the record names it
    shimwait.name_process(cid)
    cdir = paths.container_dir(cid)
    record = records.load(cid)
    runtime = record["HostConfig"].get("Runtime", "builtin")
    log_fd = _open_log(cid)
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    stdin = 0 if attach and record["Config"].get("OpenStdin") else devnull
    stdio, pipes = _output_pipes(stdin, log_fd, attach)
    tty = None
    try:
        if record["Config"].get("Tty"):
            for fd, _ in pipes:
                os.close(fd)
            for fd in stdio[1:]:
                os.close(fd)
            stdio, pipes = (devnull, devnull, devnull), []
            tty = ttyrelay.Tty(cid, log_fd, hold=attach)
            pid = tty.start(runtime, cdir, stdio)
        elif runtime == "runc":
            from minidocker.runtime import runc
            pid = runc.start(cdir, cid, stdio)
        else:
            from minidocker.runtime import builtin
            pid = builtin.start(cdir, stdio)
    except Exception as exc:  # noqa: BLE001 - every failure is reported, then undone
        if tty:
            tty.close()
        _failed_start(cid, record, status_fd, exc)
        return 0
    from minidocker.faults import fault
    fault("shim:process-started")
    for fd in stdio[1:]:
        if fd != devnull:
            os.close(fd)  # the container holds the write ends now
    if stdio[0] == 0:
        os.close(0)
        os.open(os.devnull, os.O_RDONLY)  # the container owns the terminal's input now
    if tty:  # the caller's terminal is reached through the socket only (it may detach)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
    _update(cid, Status="running", Running=True, Pid=pid, ExitCode=0, Error="", OOMKilled=False,
            StartedAt=_now(), FinishedAt=clock.NEVER, ShimPid=os.getpid(),
            ShimStart=records.start_time(os.getpid()))
    _report(status_fd, f"started {pid}\n")
    from minidocker import events
    events.append("start", record)
    if not attach:
        os.close(status_fd)
        status_fd = None
    watch = _Watch(cid, record, runtime, log_fd, devnull, status_fd)
    return watch.run(pid, pipes, tty, time.monotonic(), _Backoff())


def resume(cid: str, status: int, began: float, delay: float) -> int:
    """The lean stage (shimwait.main) saw the container exit: record it, then
    restart or tear down as the full shim."""
    shimwait.name_process(cid)
    shimwait.forward_signals(0)  # nobody to pass them on to until a restart
    shimwait.hold_signals(False)
    record = records.load(cid)
    if record is None:  # removed meanwhile: whoever did it tore down
        return 0
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    watch = _Watch(cid, record, record["HostConfig"].get("Runtime", "builtin"), _open_log(cid),
                   devnull, None)
    backoff = _Backoff()
    backoff.delay = delay
    return watch.run(0, [], None, began, backoff, status=status)


class _Watch:
    """What the shim holds while its container lives: the wait, the record
    of each exit, the restarts, the teardown at the end."""

    def __init__(self, cid: str, record: dict, runtime: str, log_fd: int, devnull: int,
                 status_fd: int | None):
        self.cid, self.record, self.runtime = cid, record, runtime
        self.log_fd, self.devnull, self.status_fd = log_fd, devnull, status_fd

    def run(self, pid: int, pipes: list, tty, began: float, backoff: "_Backoff",
            status: int | None = None) -> int:
        """Wait (unless status is already known), record, maybe restart;
        tear down at the end. (long: the wait-and-restart loop reads best
        in one piece.)"""
        cid, record = self.cid, self.record
        from minidocker import events
        while True:
            if status is None:
                if tty is None and self.status_fd is None and len(pipes) == 2:
                    self._handover(pid, pipes, began, backoff)  # detached: wait lean
                shimwait.forward_signals(pid)
                status = shimwait.wait(pid, pipes, tty)
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
            status = None
            from minidocker.runtime import cgroups
            oom = cgroups.oom_killed(record.get("Cgroups") or {})  # before the teardown removes it
            now = _update(cid, Status="exited", Running=False, Pid=0, ExitCode=code,
                          FinishedAt=_now(), OOMKilled=oom, Paused=False) or record
            if oom:
                events.append("oom", now)
            events.append("die", now, exitCode=code)
            for fd, _ in pipes:
                os.close(fd)
            pipes = []
            delay = backoff.next(_restart_wanted(cid, code), time.monotonic() - began)
            if delay is None:
                break
            # An attached `run` ends with the first exit; the restarts are ours alone.
            _report(self.status_fd, f"exit {code} restarting\n")
            if self.status_fd is not None:
                os.close(self.status_fd)
                self.status_fd = None
            for fd in (0, 1, 2):
                os.dup2(self.devnull, fd)
            restarted = _restart(cid, record, self.runtime, self.log_fd, self.devnull, tty, delay)
            if restarted is None:
                tty = None
                break
            pid, tty, pipes = restarted
            began = time.monotonic()
        if tty:
            tty.close()  # the attached client sees the end
        os.close(self.log_fd)
        _report(self.status_fd, f"exit {code}\n")
        from minidocker import teardown
        teardown.run(cid, reaped=True)
        return 0

    def _handover(self, pid: int, pipes: list, began: float, backoff: "_Backoff") -> None:
        """Wait in the lean stage (shimwait.handover: an exec, no return);
        if the exec fails, wait here."""
        (out_r, _), (err_r, _) = pipes
        try:
            shimwait.handover(self.cid, pid, out_r, err_r, self.log_fd, began, backoff.delay)
        except OSError as exc:
            shimwait.hold_signals(False)
            os.write(2, f"minidocker shim: waiting here, not in the lean stage: {exc}\n".encode())


class _Backoff:
    """Docker's restart delay: 100 ms doubling up to a minute, back to
    100 ms after a run of 10 s or more."""

    def __init__(self):
        self.delay = 0.0

    def next(self, wanted: bool, ran: float) -> float | None:
        if not wanted:
            return None
        self.delay = 0.1 if ran >= 10 or not self.delay else min(self.delay * 2, 60.0)
        return self.delay


def _restart_wanted(cid: str, code: int) -> bool:
    """The record's RestartPolicy says go again (and nobody stopped it)."""
    record = records.load(cid) or {}
    policy = record.get("HostConfig", {}).get("RestartPolicy") or {}
    name = policy.get("Name", "no")
    if record.get("HasBeenManuallyStopped") or name in ("", "no"):
        return False
    if name == "on-failure":
        limit = policy.get("MaximumRetryCount") or 0
        return code != 0 and (not limit or record.get("RestartCount", 0) < limit)
    return name in ("always", "unless-stopped")


def _restart(cid: str, record: dict, runtime: str, log_fd: int, devnull: int, tty, delay: float):
    """Wait out the delay (a `stop` cancels), then start the process again
    in the same rootfs and network; (pid, tty) or None."""
    _update(cid, Status="restarting", Restarting=True, Running=True)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        if (records.load(cid) or {}).get("HasBeenManuallyStopped"):
            _update(cid, Status="exited", Restarting=False, Running=False)
            return None
    from minidocker.runtime import cgroups
    cgroups.remove(record.get("Cgroups") or {})  # a fresh cgroup: counters start again
    cdir = paths.container_dir(cid)
    try:
        if runtime == "runc":
            from minidocker.runtime import runc
            runc.delete(cid)
        pipes = []
        if tty:
            tty.close()
            tty = ttyrelay.Tty(cid, log_fd, hold=False)
            pid = tty.start(runtime, cdir, (devnull, devnull, devnull))
        else:
            stdio, pipes = _output_pipes(devnull, log_fd, attach=False)
            try:
                if runtime == "runc":
                    from minidocker.runtime import runc
                    pid = runc.start(cdir, cid, stdio)
                else:
                    from minidocker.runtime import builtin
                    pid = builtin.start(cdir, stdio)
            finally:
                os.close(stdio[1])
                os.close(stdio[2])
    except Exception as exc:  # noqa: BLE001 - recorded; the teardown follows
        for fd, _ in pipes:
            os.close(fd)
        if tty:
            tty.close()
        message = " ".join((getattr(exc, "message", None) or str(exc)).split())
        _update(cid, Status="exited", Restarting=False, Running=False, Error=message)
        return None
    count = ((records.load(cid) or {}).get("RestartCount") or 0) + 1
    _update(cid, Status="running", Running=True, Restarting=False, Pid=pid, ExitCode=0,
            Error="", OOMKilled=False, StartedAt=_now(), FinishedAt=clock.NEVER,
            RestartCount=count)
    from minidocker import events
    events.append("start", record)
    return pid, tty, pipes


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
