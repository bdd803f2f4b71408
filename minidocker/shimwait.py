"""The shim's waiting: signal relay, output copying, reaping; and the
lean stage a detached shim execs into for that wait.

A shim spends the container's whole life waiting, so that is what its memory
is measured by (`scripts/bench memory`). Starting the container needs much
(the runtime, records, JSON, ctypes), waiting very little, and an interpreter
does not give back what it once imported. So once the container runs and
`run` has been told, a detached shim without a terminal execs (same pid,
same children, subreaper kept) `python -I -S` with this module alone
(`handover`): it copies the output into the log and reaps, then execs the
full shim again (`python -m minidocker.shim --resume`) to record the exit,
restart or tear down. This module therefore imports only what is built in
or tiny: posix (`os` pulls in _collections_abc and posixpath), select,
_signal (`signal` pulls in enum), and logfile. Together they cost about
0.1 MB over the bare interpreter's 2.3 MB; the full shim's waiting took 5-7 MB.
tests/test_shim_memory.py holds it to that.
"""
import posix
import select
import sys

import _signal

from minidocker import logfile

COMM_PREFIX = "mdshim-"  # + 8 hex of the id: 15 characters, the kernel's limit
RELAYED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)
# The exec'd stage: no site (-S), so the package's dir is put on the path,
# last: nothing there can stand in for a standard module (_json is a file).
BOOT = "import sys; sys.path.append(sys.argv[1]); from minidocker.shimwait import main; main(sys.argv[2:])"


def name_process(cid: str) -> None:
    """comm = mdshim-<8 hex>: `system prune` tells a live shim by it (an
    exec resets it to the interpreter's name)."""
    try:
        with open("/proc/self/comm", "w") as fh:
            fh.write(COMM_PREFIX + cid[:8])
    except OSError:
        pass


def forward_signals(pid: int) -> None:
    """Pass SIGINT, SIGTERM and SIGHUP on to pid (the waiter stays alive to
    record its exit); pid 0: swallow them (the container is gone)."""
    def relay(signum, _frame):
        try:
            if pid > 0:
                posix.kill(pid, signum)
        except ProcessLookupError:
            pass

    for s in RELAYED:
        _signal.signal(s, relay)


def hold_signals(held: bool) -> None:
    """Block (or unblock) the relayed signals: across an exec, where no
    handler exists, one arriving stays pending instead of killing the shim."""
    _signal.pthread_sigmask(_signal.SIG_BLOCK if held else _signal.SIG_UNBLOCK, RELAYED)


def copy_bytes(data: bytes, sinks: list) -> None:
    """data to every sink: an fd, or a log stream."""
    for sink in sinks:
        try:
            if not isinstance(sink, int):
                sink.write(data)
                continue
            view = memoryview(data)
            while view:
                view = view[posix.write(sink, view):]
        except OSError:
            pass  # a gone client or terminal must not stop the log


def copy(src: int, sinks: list) -> bool:
    """One read from src to every sink; False at EOF."""
    try:
        data = posix.read(src, 65536)
    except OSError:
        return False
    if not data:
        return False
    copy_bytes(data, sinks)
    return True


def wait(pid: int, pipes: list, tty=None) -> int:
    """Copy output until the container has exited; return its wait status.
    pipes: (fd, sinks) pairs; tty: a ttyrelay.Tty or None."""
    pidfd = posix.pidfd_open(pid)
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
                    status = reap(pid)
                elif fd in open_pipes:
                    if not copy(fd, open_pipes[fd]):
                        del open_pipes[fd]
                else:
                    tty.handle(fd)
    finally:
        posix.close(pidfd)
    # pid 1 is gone, so its namespace's processes are too: drain what is left.
    for fd, sinks in open_pipes.items():
        while select.select([fd], [], [], 0.5)[0] and copy(fd, sinks):
            pass
    if tty:
        tty.drain()
    return status


def reap(pid: int) -> int | None:
    """Reap children (orphans adopted from runc included) until pid."""
    while True:
        try:
            got, status = posix.waitpid(-1, posix.WNOHANG)
        except ChildProcessError:
            return 0
        if got == 0:
            return None
        if got == pid:
            return status


def handover(cid: str, pid: int, out_r: int, err_r: int, log_fd: int, began: float,
             delay: float) -> None:
    """Exec the lean stage (never returns); the fds pass on, the rest is
    closed on exec. began (monotonic) and delay are the restart back-off's."""
    for fd in (out_r, err_r, log_fd):
        posix.set_inheritable(fd, True)
    import os  # the full shim runs this: os is there
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    hold_signals(True)
    posix.execv(sys.executable, [sys.executable, "-I", "-S", "-c", BOOT, package_parent, cid, str(pid),
                              str(out_r), str(err_r), str(log_fd), repr(began), repr(delay)])


def main(argv: list[str]) -> None:
    """The lean stage: wait and copy, then exec the full shim with the status."""
    cid, pid, out_r, err_r, log_fd = argv[0], *map(int, argv[1:5])
    began, delay = argv[5:7]
    name_process(cid)
    pipes = [(out_r, [logfile.Stream(log_fd, "stdout")]), (err_r, [logfile.Stream(log_fd, "stderr")])]
    forward_signals(pid)
    hold_signals(False)
    status = wait(pid, pipes)
    for fd in (out_r, err_r, log_fd):
        posix.close(fd)
    hold_signals(True)
    posix.execv(sys.executable, [sys.executable, "-I", "-m", "minidocker.shim", "--resume", cid,
                              str(status), began, delay])
