"""`-t`: a real terminal driven by the test (issue 12), with both runtimes.

The test holds the master of a pty pair; minidocker runs on its slave as its
controlling terminal (`setsid -c`), as in a terminal emulator. Docker's
documented behaviour: `run -it` gives an interactive shell on a pty (its
window size follows the caller's, ctrl-c reaches the container, the exit
code is the shell's), ctrl-p ctrl-q detaches (exit 0, the container runs
on), `attach` reconnects and ends with the container's exit code, `exec -it`
gets a pty of its own, `-it` without a terminal on stdin is refused."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

import pytest

from harness import MINIDOCKER
from mdtools import newcomer

RUNTIMES = ["builtin", "runc"]
PROMPT = b"/ # "


@pytest.fixture(params=RUNTIMES)
def runtime(request):
    return request.param


class Terminal:
    """minidocker ARGS on the slave of a new pty; the test types on the master."""

    def __init__(self, node, *args, rows=24, cols=80, prefix=(MINIDOCKER,)):
        self.master, slave = pty.openpty()
        self.resize(rows, cols)
        self.proc = subprocess.Popen(node.cmd(["setsid", "-c", *prefix, *map(str, args)]),
                                     stdin=slave, stdout=slave, stderr=slave, env=node.env())
        os.close(slave)
        self.seen = b""

    def resize(self, rows, cols):
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, data: bytes):
        os.write(self.master, data)

    def expect(self, pattern: bytes, timeout=15) -> bytes:
        """Read until pattern (a regex) appears in what came since the last match."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.seen)
            if found:
                out, self.seen = self.seen[:found.end()], self.seen[found.end():]
                return out
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} in {self.seen!r}"
            if select.select([self.master], [], [], left)[0]:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:  # EIO: the slave side is closed
                    time.sleep(0.05)

    def wait(self, timeout=20) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            os.close(self.master)

    def command(self, line: bytes) -> bytes:
        """Run line in the container's shell; its output (up to a marker
        that only the shell's arithmetic can print, not the echoed input)."""
        self.type(line + b"; echo @@$((6*7))@@\r")
        return self.expect(rb"@@42@@")


def _state(node, ref) -> dict:
    return json.loads(node.md("inspect", ref).stdout)[0]["State"]


def test_interactive_shell_answers_resizes_and_exits_with_its_code(node, runtime):
    term = Terminal(node, "run", "-it", "--rm", "--network", "none", "--runtime", runtime,
                    "busybox", "sh", rows=30, cols=90)
    term.expect(PROMPT)
    out = term.command(b"tty; stty size; echo TERM=$TERM")
    assert b"/dev/pts/0" in out and b"30 90" in out and b"TERM=xterm" in out
    term.resize(40, 132)  # SIGWINCH in minidocker: the new size reaches the container
    time.sleep(0.3)
    assert b"40 132" in term.command(b"stty size")
    term.type(b"sleep 30; echo not-interrupted\r")
    time.sleep(0.5)
    term.type(b"\x03")  # ctrl-c: the container's foreground process gets SIGINT
    started = time.monotonic()
    out = term.command(b"echo after")
    assert not re.search(rb"(?<!echo )not-interrupted", out)  # only its echoed input
    assert time.monotonic() - started < 10
    term.type(b"exit 7\r")
    assert term.wait() == 7


def test_detach_keys_and_attach(node, runtime):
    term = Terminal(node, "run", "-it", "--name", "shell", "--network", "none",
                    "--runtime", runtime, "busybox", "sh")
    term.expect(PROMPT)
    term.command(b"echo first > /tmp/mark")
    term.type(b"\x10\x11")  # ctrl-p ctrl-q
    assert term.wait() == 0
    assert _state(node, "shell")["Running"] is True
    again = Terminal(node, "attach", "shell")
    time.sleep(0.5)
    again.type(b"\r")
    again.expect(PROMPT)
    time.sleep(0.3)
    assert b"first" in again.command(b"cat /tmp/mark")
    again.type(b"exit 3\r")
    assert again.wait() == 3  # attach ends with the container's exit code
    state = _state(node, "shell")
    assert (state["Running"], state["ExitCode"]) == (False, 3)
    assert "first" in node.md("logs", "shell").stdout  # the terminal's output is logged
    node.md("rm", "shell")


def test_exec_it_gets_its_own_terminal(node, runtime):
    cid = node.md("run", "-d", "--network", "none", "--runtime", runtime, "busybox",
                  "sleep", "60").stdout.strip()
    try:
        term = Terminal(node, "exec", "-it", cid, "sh", rows=25, cols=70)
        term.expect(PROMPT)
        out = term.command(b"tty; stty size")
        assert re.search(rb"/dev/pts/\d+", out) and b"25 70" in out
        term.type(b"exit 4\r")
        assert term.wait() == 4
    finally:
        node.md("rm", "-f", cid)


def test_tty_without_stdin(node, runtime):
    """-t alone: output through a terminal, no input needed."""
    proc = node.md("run", "--rm", "-t", "--network", "none", "--runtime", runtime, "busybox",
                   "sh", "-c", "tty; exit 5", check=False)
    assert (proc.returncode, proc.stdout) == (5, "/dev/pts/0\n")  # (text mode folds the CR)


def test_it_without_a_terminal_is_refused(node):
    proc = node.md("run", "-it", "--rm", "busybox", "sh", check=False, input="")
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: the input device is not a TTY")
    assert node.md("ps", "-aq").stdout == ""
    cid = node.md("run", "-d", "--network", "none", "busybox", "sleep", "60").stdout.strip()
    try:
        proc = node.md("exec", "-it", cid, "sh", check=False, input="")
        assert proc.returncode == 1 and "not a TTY" in proc.stderr
    finally:
        node.md("rm", "-f", cid)


def test_attach_without_tty_follows_output(node):
    node.md("run", "-d", "--name", "talk", "--network", "none", "busybox", "sh", "-c",
            "sleep 1; echo later; exit 6")
    proc = node.md("attach", "talk", check=False)
    assert (proc.returncode, proc.stdout) == (6, "later\n")
    proc = node.md("attach", "talk", check=False)
    assert proc.returncode == 1 and "start it first" in proc.stderr
    node.md("rm", "talk")


def test_as_a_newcomer_runs_it(node):
    """README's Terminals lines under `env -i`, in a terminal."""
    clean, _ = newcomer(node)
    term = Terminal(node, "run", "-it", "--name", "box", "busybox", "sh", prefix=clean)
    term.expect(PROMPT)
    term.type(b"\x10\x11")
    assert term.wait() == 0
    term = Terminal(node, "exec", "-it", "box", "sh", prefix=clean)
    term.expect(PROMPT)
    term.type(b"exit 2\r")
    assert term.wait() == 2
    term = Terminal(node, "attach", "box", prefix=clean)
    time.sleep(0.5)
    term.type(b"exit 9\r")
    assert term.wait() == 9
    node.md("rm", "box")
