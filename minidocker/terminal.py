"""Terminals: the caller's side of `-t` (raw mode, window size, detach keys)
and the frames a client sends to a container's shim.

With `-t` the container's stdio is a pseudo-terminal made inside the
container (as runc makes it); its master stays with the shim, which copies
the output to the log and to the one attached client. A client (`run -it`,
`attach`) talks to the shim over a unix socket: frames of its stdin and its
window size go in, the raw output comes back; the connection closes when the
container exits. `exec -it` relays its own pty the same way, without a shim.
Lean (stdlib C modules only): the shim imports the frame format from here.
"""
from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import struct
import termios

DATA, WINSIZE = b"D", b"W"
_HEAD = struct.Struct("!cI")
DETACH_KEYS = b"\x10\x11"  # ctrl-p ctrl-q, Docker's default
TIOCSCTTY = 0x540E
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431


# --- frames --------------------------------------------------------------------------

def frame(kind: bytes, payload: bytes) -> bytes:
    return _HEAD.pack(kind, len(payload)) + payload


def winsize_frame(fd: int) -> bytes | None:
    """A WINSIZE frame with fd's window size, None if fd is no terminal."""
    try:
        packed = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return None
    return frame(WINSIZE, packed)


class Frames:
    """Splits a client's byte stream into (kind, payload) frames."""

    def __init__(self):
        self.buf = b""

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self.buf += data
        out = []
        while len(self.buf) >= _HEAD.size:
            kind, length = _HEAD.unpack_from(self.buf)
            if len(self.buf) < _HEAD.size + length:
                break
            out.append((kind, self.buf[_HEAD.size:_HEAD.size + length]))
            self.buf = self.buf[_HEAD.size + length:]
        return out


def set_winsize(fd: int, packed: bytes) -> None:
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, packed[:8])
    except OSError:
        pass


# --- the pty, made where the caller's root is ----------------------------------------

def open_pty() -> tuple[int, int]:
    """A new pty from /dev/ptmx of the current root (the container's devpts
    once pivoted): (master, slave)."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))[0]
    slave = os.open(f"/dev/pts/{number}", os.O_RDWR | os.O_NOCTTY)
    return master, slave


def become_controlled(slave: int) -> None:
    """The slave as stdio and controlling terminal (the caller leads a session)."""
    for target in (0, 1, 2):
        os.dup2(slave, target)
    if slave > 2:
        os.close(slave)
    fcntl.ioctl(0, TIOCSCTTY, 0)


def send_fd(sock: int, fd: int) -> None:
    with socket.socket(fileno=os.dup(sock)) as s:
        socket.send_fds(s, [b"pty"], [fd])


def recv_fd(sock: socket.socket) -> int:
    _, fds, _, _ = socket.recv_fds(sock, 16, 1)
    if not fds:
        raise OSError("no terminal received from the container")
    os.set_inheritable(fds[0], False)
    return fds[0]


# --- the caller's terminal -----------------------------------------------------------

class RawMode:
    """The caller's terminal in raw mode while attached (keys go to the
    container, ctrl-c included); restored on exit."""

    def __init__(self, fd: int = 0):
        self.fd = fd
        self.saved = None

    def __enter__(self):
        if os.isatty(self.fd):
            import tty
            self.saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd)
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


class _Detach:
    """Ctrl-p ctrl-q in the input: everything before it, and whether it came."""

    def __init__(self, keys: bytes = DETACH_KEYS):
        self.keys = keys
        self.held = b""

    def scan(self, data: bytes) -> tuple[bytes, bool]:
        out = b""
        for byte in data:
            b = bytes([byte])
            if self.keys.startswith(self.held + b):
                self.held += b
                if self.held == self.keys:
                    return out, True
                continue
            out += self.held + b
            self.held = b""
        return out, False


def relay_socket(sock: socket.socket, stdin: bool, out_fd: int = 1) -> bool:
    """A client of a shim: stdin (when asked) and window sizes in, output
    out, until the container ends (False) or the detach keys (True)."""
    first = winsize_frame(0) or winsize_frame(out_fd)
    if first:
        sock.sendall(first)
    resized = []
    old = signal.signal(signal.SIGWINCH, lambda *_: resized.append(1))
    detach = _Detach()
    sources = [sock] + ([0] if stdin else [])
    try:
        while True:
            if resized:
                resized.clear()
                size = winsize_frame(0) or winsize_frame(out_fd)
                if size:
                    sock.sendall(size)
            try:
                ready, _, _ = select.select(sources, [], [])
            except InterruptedError:
                continue
            if sock in ready:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:  # the shim ended with our input unread
                    data = b""
                if not data:
                    return False
                _write_all(out_fd, data)
            if 0 in ready:
                data = os.read(0, 65536)
                if not data:
                    sources.remove(0)  # stdin closed: the container keeps its terminal
                    continue
                data, detached = detach.scan(data)
                if data:
                    sock.sendall(frame(DATA, data))
                if detached:
                    return True
    finally:
        signal.signal(signal.SIGWINCH, old)


def relay_pty(master: int, pid: int, stdin: bool) -> None:
    """`exec -it`: the caller's terminal and master until pid's pty closes."""
    size = winsize_frame(0)
    if size:
        set_winsize(master, size[_HEAD.size:])
    old = signal.signal(signal.SIGWINCH, lambda *_: set_winsize(
        master, (winsize_frame(0) or b"\0" * 13)[_HEAD.size:]))
    sources = [master] + ([0] if stdin else [])
    try:
        while True:
            try:
                ready, _, _ = select.select(sources, [], [])
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every slave is closed
                    data = b""
                if not data:
                    return
                _write_all(1, data)
            if 0 in ready:
                data = os.read(0, 65536)
                if not data:
                    sources.remove(0)
                    continue
                _write_all(master, data)
    finally:
        signal.signal(signal.SIGWINCH, old)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def connect(path: str) -> socket.socket:
    """Connect to a shim's socket (through its directory's fd: sun_path is
    short, state roots may be long)."""
    dfd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.connect(f"/proc/self/fd/{dfd}/{os.path.basename(path)}")
        return sock
    finally:
        os.close(dfd)


def listen(path: str) -> socket.socket:
    dfd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.bind(f"/proc/self/fd/{dfd}/{os.path.basename(path)}")
        os.chmod(path, 0o600)
        sock.listen(4)
        return sock
    finally:
        os.close(dfd)
