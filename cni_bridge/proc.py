"""Running the firewall tools: argument lists (never a shell), stdin, a
timeout, and the option to let a tool run while the plugin does other work;
and `in_thread`, for kernel work that blocks in one system call.

Why not subprocess: importing it costs several milliseconds of a start-up
budget of a few tens, and the kernel's rule commits (~14 ms for a deletion)
can overlap with the plugin's own netlink work when started early.
"""
from __future__ import annotations

import _thread
import posix   # os's functions without importing os (~1.2 ms): HACKING.md
import select
import time

from cni.env import environ

from cni_bridge.errors import CNIError, failure

TIMEOUT = 30.0


def which(name: str) -> str:
    if "/" in name:
        return name
    for d in environ().get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(":") + ["/usr/sbin", "/sbin"]:
        path = f"{d or '.'}/{name}"
        if posix.access(path, posix.X_OK):
            return path
    raise failure(f"{name} not found in PATH")


class Proc:
    """A started tool. `wait()` returns (returncode, stdout, stderr)."""

    def __init__(self, argv: list[str], stdin: str | None = None, timeout: float = TIMEOUT):
        self.argv = argv
        self.deadline = time.monotonic() + timeout
        spare = _SPARES.pop(tuple(argv), None)
        self.pid, self.in_fd, self.out_fd, self.err_fd = spare or _spawn(argv)
        self.fds = {self.out_fd: [], self.err_fd: []}
        self.stdin = memoryview((stdin or "").encode())
        self.result = None
        posix.set_blocking(self.in_fd, False)
        self._feed()  # now, not in wait(): the tool reads its batch while the plugin works on

    def _feed(self) -> None:
        """Write as much of stdin as the pipe takes (all of a rule batch:
        a pipe holds 64 KiB); close it, the tool's EOF, once all is written."""
        try:
            while self.stdin:
                self.stdin = self.stdin[posix.write(self.in_fd, self.stdin[:65536]):]
        except BlockingIOError:
            return
        except BrokenPipeError:
            pass  # the tool exited without reading: its exit status says why
        posix.close(self.in_fd)
        self.in_fd = -1

    def wait(self) -> tuple[int, str, str]:
        if self.result is not None:
            return self.result
        poll = select.poll()
        for fd in self.fds:
            poll.register(fd, select.POLLIN)
        if self.in_fd >= 0:
            poll.register(self.in_fd, select.POLLOUT)
        open_fds = set(self.fds) | ({self.in_fd} if self.in_fd >= 0 else set())
        while open_fds:
            left = self.deadline - time.monotonic()
            if left <= 0:
                self._kill()
                raise failure(f"{self.argv[0]} timed out after {TIMEOUT:.0f}s")
            for fd, ev in poll.poll(left * 1000):
                if fd not in self.fds:   # stdin
                    self._feed()
                    if self.in_fd < 0:
                        poll.unregister(fd)
                        open_fds.discard(fd)
                    continue
                chunk = posix.read(fd, 65536)
                if chunk:
                    self.fds[fd].append(chunk)
                else:
                    poll.unregister(fd)
                    posix.close(fd)
                    open_fds.discard(fd)
        _pid, status = posix.waitpid(self.pid, 0)
        rc = posix.waitstatus_to_exitcode(status)
        self.result = (rc, b"".join(self.fds[self.out_fd]).decode(errors="replace"),
                       b"".join(self.fds[self.err_fd]).decode(errors="replace"))
        return self.result

    def _kill(self) -> None:
        try:
            posix.kill(self.pid, 9)
            posix.waitpid(self.pid, 0)
        except OSError:
            pass
        for fd in list(self.fds) + ([self.in_fd] if self.in_fd >= 0 else []):
            try:
                posix.close(fd)
            except OSError:
                pass

    def check(self) -> str:
        """wait(); a non-zero exit is the plugin's failure naming the tool."""
        rc, out, err = self.wait()
        if rc != 0:
            raise failure(f"{' '.join(self.argv)} failed", (err or out).strip()[:1000])
        return out


class Attempt:
    """A started tool and what to do instead when it fails: `check()` waits
    and, on a non-zero exit, calls `fallback(its stderr)` (which raises if
    that fails too); without a fallback it is Proc.check()."""

    def __init__(self, proc: "Proc | None", fallback=None):
        self.proc, self.fallback = proc, fallback

    def check(self) -> None:
        if self.proc is None:
            return
        rc, out, err = self.proc.wait()
        if rc != 0 and self.fallback is not None:
            self.fallback(err or out)
        else:
            self.proc.check()


def _spawn(argv: list[str]) -> tuple[int, int, int, int]:
    """posix_spawn with three pipes: (pid, its stdin, its stdout, its stderr)."""
    in_r, in_w = posix.pipe()
    out_r, out_w = posix.pipe()
    err_r, err_w = posix.pipe()
    try:
        pid = posix.posix_spawn(which(argv[0]), argv, environ(), file_actions=[
            (posix.POSIX_SPAWN_DUP2, in_r, 0), (posix.POSIX_SPAWN_DUP2, out_w, 1), (posix.POSIX_SPAWN_DUP2, err_w, 2),
            (posix.POSIX_SPAWN_CLOSE, in_w), (posix.POSIX_SPAWN_CLOSE, out_r), (posix.POSIX_SPAWN_CLOSE, err_r)],
            setsid=False)
    except BaseException:
        for fd in (in_w, out_r, err_r):
            posix.close(fd)
        raise
    finally:
        for fd in (in_r, out_w, err_w):
            posix.close(fd)
    return pid, in_w, out_r, err_r


# argv -> a tool started before its input was known (`start_early`)
_SPARES: dict[tuple, tuple[int, int, int, int]] = {}


def start_early(argv: list[str]) -> None:
    """Start a tool that will be given its input later: the next Proc with
    the same argv takes it over instead of spawning. Its exec and library
    loading (~2 ms for nft) then overlap the plugin's own work. Only for
    tools that act on their input alone (`nft -f -`, `iptables-restore`),
    so what they do still happens under the lock the caller takes later."""
    if tuple(argv) not in _SPARES:
        try:
            _SPARES[tuple(argv)] = _spawn(argv)
        except (OSError, CNIError):
            pass   # not installed: the later Proc says so


def drop_spares() -> None:
    """End every early-started tool nobody took over: an empty input, which
    each of them reads as nothing to do, then reaped."""
    while _SPARES:
        _argv, (pid, in_fd, out_fd, err_fd) = _SPARES.popitem()
        for fd in (in_fd, out_fd, err_fd):
            posix.close(fd)
        posix.waitpid(pid, 0)


def run(argv: list[str], stdin: str | None = None, check: bool = True) -> tuple[int, str, str]:
    p = Proc(argv, stdin)
    if check:
        out = p.check()
        return 0, out, p.result[2]
    return p.wait()


def in_thread(fn, *args, **kw):
    """Call fn(*args, **kw) in a thread; returns the function that waits for
    it and returns its result or raises its error. For a system call that
    blocks in the kernel with the GIL released (deleting a veth waits
    ~15-25 ms for RCU) while this thread starts and waits for the rule
    tools. `_thread`, not `threading`: nothing to import."""
    done = _thread.allocate_lock()
    done.acquire()
    outcome: list = []

    def body():
        try:
            outcome.append((True, fn(*args, **kw)))
        except BaseException as exc:  # noqa: BLE001 - re-raised by join()
            outcome.append((False, exc))
        finally:
            done.release()

    _thread.start_new_thread(body, ())

    def join():
        with done:
            ok, value = outcome[0]
        if not ok:
            raise value
        return value

    return join
