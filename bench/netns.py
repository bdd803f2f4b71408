"""A throwaway network namespace for a whole bench run.

The peers (dockerd, podman) create bridges, veths, iptables chains and
per-namespace sysctls. Running every peer command through
`nsenter --net=<ns>` keeps all of that inside this namespace, so deleting it
takes everything with it and the real host's network is never touched.
`ip netns exec` is avoided on purpose: its private mount namespace would hide
the overlay and netns bind mounts the daemons make, and then nobody could
unmount them.
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import signal
import subprocess
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


@dataclasses.dataclass
class BenchNetns:
    """`with BenchNetns() as ns:` — a fresh `mdbench-<rand>` namespace, lo up."""

    name: str = dataclasses.field(default_factory=lambda: PREFIX + secrets.token_hex(4))

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
        _run(["ip", "netns", "add", self.name])
        try:
            self.run(["ip", "link", "set", "lo", "up"])
        except BaseException:
            self.delete()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.delete()

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
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self.pids():
                time.sleep(0.05)

    def delete(self) -> None:
        """Kill leftovers, then drop the namespace (links and rules die with it)."""
        if not os.path.exists(self.path):
            return
        self.kill_all()
        _run(["ip", "netns", "del", self.name], check=False)
