"""A throwaway network namespace for a whole bench run.

The peers (dockerd, podman) create bridges, veths, iptables chains and
per-namespace sysctls. Running every peer command through
`nsenter --net=<ns>` keeps all of that inside this namespace, so deleting it
takes everything with it and the real host's network is never touched.
`ip netns exec` is avoided on purpose: its private mount namespace would hide
the overlay and netns bind mounts the daemons make, and then nobody could
unmount them.

Below the namespace: the process and mount helpers that teardown needs,
because daemons double-fork (their orphans must be found and reaped) and
mount into the host's mount namespace (their mounts must be undone).
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path

NETNS_DIR = Path("/run/netns")
PREFIX = "mdbench-"
TIMEOUT = 30


def _run(argv, *, timeout=TIMEOUT, check=True):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def _raise_exit(signum, _frame):
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def signals_held():
    """Ctrl-C, SIGTERM and SIGHUP ignored for the block: a clean-up that
    has begun runs to its end (each of its commands has a timeout)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN)
             for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@dataclasses.dataclass
class BenchNetns:
    """`with BenchNetns() as ns:` — a fresh `mdbench-<rand>` namespace, lo up."""

    name: str = dataclasses.field(default_factory=lambda: PREFIX + secrets.token_hex(4))
    _saved: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def path(self) -> str:
        return str(NETNS_DIR / self.name)

    def cmd(self, argv: list[str]) -> list[str]:
        """argv wrapped to run inside the namespace (network only)."""
        return ["nsenter", f"--net={self.path}", "--", *argv]

    def run(self, argv: list[str], *, timeout=TIMEOUT, check=True, env=None):
        proc = subprocess.run(self.cmd(argv), capture_output=True, text=True,
                              timeout=timeout, env=env)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {(proc.stderr or proc.stdout).strip()[-400:]}")
        return proc

    def __enter__(self) -> "BenchNetns":
        self._trap_signals()
        _run(["ip", "netns", "add", self.name])
        try:
            self.run(["ip", "link", "set", "lo", "up"])
        except BaseException:
            self.delete()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.delete()
        finally:
            for sig, handler in self._saved.items():
                signal.signal(sig, handler)
            self._saved = {}

    def _trap_signals(self) -> None:
        """SIGTERM/SIGHUP unwind the `with` blocks (and so tear the peers
        down) instead of killing the bench with dockerd left running."""
        self._saved = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) is signal.SIG_DFL:
                self._saved[sig] = signal.signal(sig, _raise_exit)

    def pids(self) -> list[int]:
        """Processes whose network namespace is this one (ours by construction)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                ns = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            if (ns.st_ino, ns.st_dev) == (st.st_ino, st.st_dev):
                found.append(int(entry))
        return found

    def kill_all(self, grace: float = 5.0) -> None:
        """TERM, then KILL, whatever still lives in the namespace."""
        if signal_wait(self.pids(), signal.SIGTERM, grace):
            signal_wait(self.pids(), signal.SIGKILL, grace)

    def delete(self) -> None:
        """Kill leftovers, then drop the namespace (links and rules die with it)."""
        if not os.path.exists(self.path):
            return
        self.kill_all()
        _run(["ip", "netns", "del", self.name], check=False)


# -- processes and mounts the peers leave behind --------------------------------

def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for pid in all_pids():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(pid)
    return kids


def _descendants(pid: int) -> list[int]:
    kids, out, todo = _children_map(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def signal_wait(pids: list[int], sig: int, grace: float) -> list[int]:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        pids = [p for p in pids if alive(p)]
        if not pids:
            break
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def kill_tree(pid: int, grace: float = 10.0) -> None:
    """TERM the process (it stops its own children), then KILL what is left."""
    tree = _descendants(pid)
    left = signal_wait([pid], signal.SIGTERM, grace)
    tree = [p for p in set(tree) | set(_descendants(pid)) if alive(p)]
    if left or tree:
        signal_wait(tree, signal.SIGKILL, 5.0)


def kill_matching(needle: str) -> None:
    """Kill every process whose command line names our temp dir (shims, conmon)."""
    pids = [p for p in all_pids() if p != os.getpid() and needle in cmdline(p)]
    if pids and signal_wait(pids, signal.SIGTERM, 5.0):
        signal_wait(pids, signal.SIGKILL, 5.0)


# conmon and containerd's shims daemonize; their orphans go to the nearest
# subreaper. PID 1 on these machines reaps only now and then, so while a peer
# is up this process is the subreaper and reaps them itself (`reap_orphans`
# between commands, never while a subprocess of ours is being waited for).
PR_SET_CHILD_SUBREAPER = 36
_subreaper_users = 0
protected: set[int] = set()  # Popen pids that their owner waits for


def _set_subreaper(on: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0)


def subreaper_acquire() -> None:
    """Become the subreaper (counted: nested peers share it)."""
    global _subreaper_users
    if _subreaper_users == 0:
        _set_subreaper(True)
    _subreaper_users += 1


def subreaper_release() -> None:
    global _subreaper_users
    reap_orphans()
    _subreaper_users -= 1
    if _subreaper_users == 0:
        _set_subreaper(False)


def _state_ppid(pid: int) -> tuple[str, int]:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return "", 0
    return fields[0], int(fields[1])


def reap_orphans() -> None:
    """Reap zombie children of ours that no Popen owns (adopted orphans)."""
    me = os.getpid()
    for pid in all_pids():
        if pid in protected:
            continue
        state, ppid = _state_ppid(pid)
        if ppid == me and state == "Z":
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def _mounts_under(root: str) -> list[str]:
    out = []
    with open("/proc/mounts") as f:
        for line in f:
            target = line.split()[1].replace("\\040", " ")
            if target == root or target.startswith(root.rstrip("/") + "/"):
                out.append(target)
    return out


def unmount_under(root: str) -> list[str]:
    """Unmount everything mounted at or below root, deepest first; returns
    what was found there (after a runtime's own clean-up: what it leaked)."""
    found = sorted(set(_mounts_under(root)))
    for _ in range(5):
        targets = sorted(set(_mounts_under(root)), key=len, reverse=True)
        if not targets:
            return found
        for t in targets:
            subprocess.run(["umount", t], capture_output=True, timeout=30)
            if t in _mounts_under(t):
                subprocess.run(["umount", "-l", t], capture_output=True, timeout=30)
    return found


CLONE_NEWNET = 0x40000000


def in_netns(path: str, fn):
    """fn() in a thread that entered the network namespace at path (sockets
    it opens stay there; processes it starts are born there); its exception
    is raised here."""
    out = {}

    def body():
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)
        try:
            out["v"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            out["e"] = exc
    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "e" in out:
        raise out["e"]
    return out["v"]
