"""The per-container supervisor.

Detached (`run -d`, `start`) it is exec'd as `python -m minidocker.shim ID FD`
and forks once more, letting its parent exit, so it is nobody's child and
survives the command that started it. Attached (foreground `run`) it is a
forked child of `run` in a session of its own (no second interpreter to
start: that is most of a short container's latency). Either way it becomes
a child subreaper, starts the
container with the chosen runtime, reports `started PID` (or `error CODE
MSG`) on FD, then waits: detached, the container writes straight into the
log file; attached, its output comes through pipes the shim copies to the
log and to the terminal of `run`. At exit it records the exit code and
times, reports `exit CODE` on FD and runs the teardown.

It stays small in memory: stdlib and minidocker's lean modules only (no
click, pyroute2 or jsonschema); the teardown modules load only at exit.
"""
from __future__ import annotations

import os
import select
import sys
import time

from minidocker import clock, paths, state, syscalls as sc

RECORD = "container.json"
COMM_PREFIX = "mdshim-"  # + 8 hex of the id: 15 characters, the kernel's limit


def _now() -> str:
    return clock.now()


def _update(cid: str, **fields) -> dict | None:
    from minidocker.teardown import lock_path
    path = paths.container_dir(cid) / RECORD
    with state.locked(lock_path(cid)):
        record = state.read_json(path)
        if record is None:
            return None
        for key in ("ShimPid", "ShimStart", "RestartCount", "HasBeenManuallyStopped"):
            if key in fields:
                record[key] = fields.pop(key)
        record["State"].update(fields)
        state.write_json(path, record)
        return record


def start_time(pid: int) -> int:
    """The process's start time (clock ticks since boot; 0 if it is gone or
    a zombie): with the pid it names one process for good, whatever its
    cmdline (an attached shim is a fork of `run` and carries run's)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return 0 if fields[0] in (b"Z", b"X") else int(fields[19])
    except (OSError, IndexError, ValueError):
        return 0


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


def _copy(src: int, sinks: list) -> bool:
    """One read from src to every sink; False at EOF."""
    try:
        data = os.read(src, 65536)
    except OSError:
        return False
    if not data:
        return False
    _copy_bytes(data, sinks)
    return True


def main(argv: list[str]) -> int:
    """The detached shim: fork once more so that nobody waits for us."""
    cid, status_fd = argv[0], int(argv[1])
    attach = "--attach" in argv[2:]
    if os.fork():
        os._exit(0)
    return supervise(cid, status_fd, attach)


def supervise(cid: str, status_fd: int, attach: bool) -> int:
    """Start the container, wait for it, record its end, tear down."""
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    try:  # `system prune` tells a live shim by its name before the record names it
        with open("/proc/self/comm", "w") as fh:
            fh.write(COMM_PREFIX + cid[:8])
    except OSError:
        pass
    cdir = paths.container_dir(cid)
    record = state.read_json(cdir / RECORD)
    runtime = record["HostConfig"].get("Runtime", "builtin")
    log_fd = os.open(cdir / "container.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
            tty = _Tty(cid, log_fd, hold=attach)
            pid = tty.start(runtime, str(cdir), stdio)
        elif runtime == "runc":
            from minidocker.runtime import runc
            pid = runc.start(str(cdir), cid, stdio)
        else:
            from minidocker.runtime import builtin
            pid = builtin.start(str(cdir), stdio)
    except Exception as exc:  # noqa: BLE001 - every failure is reported, then undone
        if tty:
            tty.close()
        code = getattr(exc, "code", 125)
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        message = " ".join(message.split())
        never = record["State"].get("StartedAt") == clock.NEVER
        _update(cid, Status="created" if never else "exited", Running=False, Pid=0,
                ExitCode=code, Error=message, FinishedAt=_now())
        _report(status_fd, f"error {code} {message}\n")
        from minidocker import teardown
        teardown.run(cid)
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
            ShimStart=start_time(os.getpid()))
    _report(status_fd, f"started {pid}\n")
    from minidocker import events
    events.append("start", record)
    if not attach:
        os.close(status_fd)
        status_fd = None

    sc.forward_signals(pid)
    began, backoff = time.monotonic(), _Backoff()
    while True:
        status = _wait(pid, pipes, tty)
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
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
        _report(status_fd, f"exit {code} restarting\n")
        if status_fd is not None:
            os.close(status_fd)
            status_fd = None
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        restarted = _restart(cid, record, runtime, log_fd, devnull, tty, delay)
        if restarted is None:
            tty = None
            break
        pid, tty, pipes = restarted
        began = time.monotonic()
        sc.forward_signals(pid)
    if tty:
        tty.close()  # the attached client sees the end
    os.close(log_fd)
    _report(status_fd, f"exit {code}\n")
    from minidocker import teardown
    teardown.run(cid, reaped=True)
    return 0


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
    record = state.read_json(paths.container_dir(cid) / RECORD) or {}
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
        if (state.read_json(paths.container_dir(cid) / RECORD) or {}).get("HasBeenManuallyStopped"):
            _update(cid, Status="exited", Restarting=False, Running=False)
            return None
    from minidocker.runtime import cgroups
    cgroups.remove(record.get("Cgroups") or {})  # a fresh cgroup: counters start again
    cdir = str(paths.container_dir(cid))
    try:
        if runtime == "runc":
            from minidocker.runtime import runc
            runc.delete(cid)
        pipes = []
        if tty:
            tty.close()
            tty = _Tty(cid, log_fd, hold=False)
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
    count = ((state.read_json(paths.container_dir(cid) / RECORD) or {}).get("RestartCount") or 0) + 1
    _update(cid, Status="running", Running=True, Restarting=False, Pid=pid, ExitCode=0,
            Error="", OOMKilled=False, StartedAt=_now(), FinishedAt=clock.NEVER,
            RestartCount=count)
    from minidocker import events
    events.append("start", record)
    return pid, tty, pipes


def _wait(pid: int, pipes: list[tuple[int, list[int]]], tty: "_Tty | None" = None) -> int:
    """Copy output until the container has exited; return its wait status."""
    pidfd = os.pidfd_open(pid)
    open_pipes = dict(pipes)
    status = None
    try:
        while status is None:
            watched = [pidfd, *open_pipes, *(tty.fds() if tty else ())]
            try:
                ready, _, _ = select.select(watched, [], [])
            except InterruptedError:
                continue
            for fd in ready:
                if fd == pidfd:
                    status = _reap(pid)
                elif fd in open_pipes:
                    if not _copy(fd, open_pipes[fd]):
                        del open_pipes[fd]
                else:
                    tty.handle(fd)
    finally:
        os.close(pidfd)
    # pid 1 is gone, so its namespace's processes are too: drain what is left.
    for fd, sinks in open_pipes.items():
        while select.select([fd], [], [], 0.5)[0] and _copy(fd, sinks):
            pass
    if tty:
        tty.drain()
    return status


class _Tty:
    """A container's terminal: the pty master (from the runner), the log,
    and the one client attached through the shim's socket."""

    HOLD_MAX = 1 << 16

    def __init__(self, cid: str, log_fd: int, hold: bool):
        from minidocker.logfile import Stream
        self.cid = cid
        self.log = Stream(log_fd, "stdout")  # a terminal has one stream
        self.master = -1
        self.listener = None
        self.client = None
        self.frames = None
        # run -it: what the container says before run's client is connected
        # (its first prompt) is kept for it.
        self.held = b"" if hold else None

    def start(self, runtime: str, bundle: str, stdio) -> int:
        import socket
        from minidocker import terminal
        state.ensure_dir(paths.shim_dir())
        self.listener = terminal.listen(str(paths.shim_socket(self.cid)))
        if runtime == "runc":
            import tempfile
            from minidocker.runtime import runc
            tmp = tempfile.mkdtemp(prefix="mdcon-")  # sun_path is short: not under the bundle
            path = os.path.join(tmp, "c.sock")
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as con:
                    con.bind(path)
                    con.listen(1)
                    con.settimeout(30)
                    pid = runc.start(bundle, self.cid, stdio, console_socket=path)
                    conn, _ = con.accept()
                    with conn:
                        self.master = terminal.recv_fd(conn)
            finally:
                for leftover in (path, tmp):
                    try:
                        os.unlink(leftover) if leftover == path else os.rmdir(leftover)
                    except OSError:
                        pass
            return pid
        from minidocker.runtime import builtin
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with ours, theirs:
            os.set_inheritable(theirs.fileno(), True)
            pid = builtin.start(bundle, stdio, console=theirs.fileno())
            theirs.close()
            self.master = terminal.recv_fd(ours)
        return pid

    def fds(self) -> list:
        out = [self.listener]
        if self.master >= 0:
            out.append(self.master)
        if self.client is not None:
            out.append(self.client)
        return out

    def handle(self, fd) -> None:
        from minidocker import terminal
        if fd is self.listener:
            conn, _ = self.listener.accept()
            if self.client is not None:
                self.client.close()  # one client at a time: the newest wins
            self.client, self.frames = conn, terminal.Frames()
            if self.held:
                _copy_bytes(self.held, [conn.fileno()])
            self.held = None
        elif fd is self.client:
            try:
                data = self.client.recv(65536)
            except OSError:
                data = b""
            if not data:
                self.client.close()
                self.client = None
                return
            for kind, payload in self.frames.feed(data):
                if kind == terminal.DATA:
                    _copy_bytes(payload, [self.master])
                elif kind == terminal.WINSIZE:
                    terminal.set_winsize(self.master, payload)
        elif fd == self.master:
            self._output()

    def _output(self) -> bool:
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the container's side is closed
            data = b""
        if not data:
            os.close(self.master)
            self.master = -1
            return False
        if self.held is not None and len(self.held) < self.HOLD_MAX:
            self.held += data
        sinks = [self.log] + ([self.client.fileno()] if self.client is not None else [])
        _copy_bytes(data, sinks)
        return True

    def drain(self) -> None:
        while self.master >= 0 and select.select([self.master], [], [], 0.2)[0] and self._output():
            pass
        if self.held is not None and self.listener is not None:
            # run -it whose container ended before run's client was accepted:
            # it is on its way (run connects right after `started`).
            if select.select([self.listener], [], [], 5)[0]:
                self.handle(self.listener)

    def close(self) -> None:
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        for sock in (self.client, self.listener):
            if sock is not None:
                sock.close()
        self.client = self.listener = None
        try:
            os.unlink(paths.shim_socket(self.cid))
        except OSError:
            pass


def _copy_bytes(data: bytes, sinks: list) -> None:
    """data to every sink: an fd, or a log stream."""
    for sink in sinks:
        try:
            if not isinstance(sink, int):
                sink.write(data)
                continue
            view = memoryview(data)
            while view:
                view = view[os.write(sink, view):]
        except OSError:
            pass  # a gone client or terminal must not stop the log


def _reap(pid: int) -> int | None:
    """Reap children (orphans adopted from runc included) until pid."""
    while True:
        try:
            got, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return 0
        if got == 0:
            return None
        if got == pid:
            return status


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
