"""Delegation to an IPAM plugin found along CNI_PATH (spec section 4): same
environment, the whole config on stdin, its result or error read back."""
from __future__ import annotations

import os
import subprocess

from cni import fastjson as json
from cni.env import PluginArgs
from cni.errors import CNIError
from cni.types import Result
from cni_bridge.errors import bad_config, failure

TIMEOUT = 60


def find(ptype: str, path: list[str]) -> str:
    for d in path:
        exe = os.path.join(d, ptype)
        if os.path.isfile(exe) and os.access(exe, os.X_OK):
            return exe
    raise bad_config(f"failed to find plugin {ptype!r} in path {path}")


class Delegate:
    def __init__(self, ptype: str, args: PluginArgs, stdin: bytes, cni_version: str):
        if not isinstance(ptype, str) or not ptype or "/" in ptype or ptype in (".", ".."):
            raise bad_config(f"invalid IPAM plugin type {ptype!r}")
        self.type = ptype
        self.args = args
        self.stdin = stdin
        self.version = cni_version
        self.exe = find(ptype, args.path)

    def families(self) -> set[int]:
        return {4, 6}

    def supports(self, version: str) -> bool:
        """Whether the delegate speaks `version` or later (its VERSION answer):
        STATUS and GC came with 1.1.0, and a delegate that predates them
        answers them with an unrelated error (Debian's host-local 1.1.1:
        "missing containerID"), so they are skipped for it, as libcni does."""
        from cni import version as _v
        try:
            answer = json.loads(self._run("VERSION", json.dumps({"cniVersion": version}).encode()))
            supported = answer.get("supportedVersions") or [answer.get("cniVersion")]
            return any(isinstance(v, str) and _v.at_least(v, version) for v in supported)
        except (CNIError, ValueError, AttributeError, TypeError):
            return False

    def _run(self, command: str, stdin: bytes | None = None) -> bytes:
        # The environment a runtime gives a plugin (P12: the delegate gets the
        # same): PATH, MINIDOCKER_RUN, what MINIDOCKER_CNI_PASSENV names, and
        # this call's CNI_*. Filtered here too, because called in-process
        # (minidocker's fast path) os.environ is the runtime's whole environment.
        keep = {"PATH", "MINIDOCKER_RUN"} | {
            n.strip() for n in os.environ.get("MINIDOCKER_CNI_PASSENV", "").split(",") if n.strip()}
        env = {k: v for k, v in os.environ.items() if k in keep and not k.startswith("CNI_")}
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        env.update(self.args.environ())
        env["CNI_COMMAND"] = command
        try:
            proc = subprocess.run([self.exe], input=self.stdin if stdin is None else stdin, env=env, capture_output=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise failure(f"IPAM plugin {self.type} {command} timed out after {TIMEOUT}s") from None
        if proc.returncode != 0:
            try:
                err = CNIError.from_dict(json.loads(proc.stdout))
            except (ValueError, TypeError):
                raise failure(f"IPAM plugin {self.type} {command} failed",
                              (proc.stdout or proc.stderr).decode(errors="replace").strip()[:500]) from None
            raise err
        return proc.stdout

    def add(self, cid: str, ifname: str) -> Result:
        out = self._run("ADD")
        try:
            return Result.from_dict(json.loads(out), self.version)
        except ValueError:
            raise CNIError(6, f"IPAM plugin {self.type} returned an unreadable result") from None

    def delete(self, cid: str, ifname: str) -> None:
        self._run("DEL")

    def check(self, cid: str, ifname: str, ips: list[str]) -> None:
        self._run("CHECK")

    def gc(self, valid) -> list[str]:
        if self.supports("1.1.0"):
            self._run("GC")
        return []

    def status(self) -> None:
        if self.supports("1.1.0"):
            self._run("STATUS")
