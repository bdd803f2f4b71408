"""The shim's side of a container's terminal (`-t`): the pty master from the
runner (runc sends it over a console socket, the built-in runner over a
socketpair), the log, and the one client attached through the shim's
socket (terminal.py has the frames). Stdlib only: it runs in the shim."""
from __future__ import annotations

import os
import select

from minidocker import paths, state
from minidocker.shimwait import copy_bytes


class Tty:
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
        self.listener = terminal.listen(paths.shim_socket(self.cid))
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
                copy_bytes(self.held, [conn.fileno()])
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
                    copy_bytes(payload, [self.master])
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
        copy_bytes(data, sinks)
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
