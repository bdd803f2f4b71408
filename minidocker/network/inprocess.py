"""The measured fast path: `cni-bridge` called in-process.

architecture.md allows it: same protocol (the request bytes, the CNI_*
environment, the JSON answer or error), no exec. The plugin is part of this
program, so it needs no lookup along CNI_PATH (where a packaged minidocker
would not put it); any other type is found and executed as usual. Exec'ing it costs an interpreter start per ADD and per
DEL (about 35 ms each, measured: see bench/run.py's bridge rows).
MINIDOCKER_CNI_EXEC=1 turns the fast path off (tests run both).
"""
from __future__ import annotations

import os
import time

from cni import fastjson as json
from minidocker.network.cni.invoke import Call, PluginError, Runner, plugin_failure

FAST_TYPES = ("cni-bridge",)
EXEC_ENV = "MINIDOCKER_CNI_EXEC"


def enabled() -> bool:
    return os.environ.get(EXEC_ENV, "") not in ("1", "true", "yes")


#: What `locate` answers for a type served here (shown by --log-level debug).
IN_PROCESS = "(in process)/"


class InProcessRunner(Runner):
    """A Runner that dispatches cni-bridge to its handlers in this process."""

    def locate(self, ptype: str, path: list[str]) -> str:
        if ptype in FAST_TYPES:
            return IN_PROCESS + ptype
        return super().locate(ptype, path)

    def exec(self, plugin_path: str, command: str, stdin: bytes, env: dict[str, str],
             timeout: float | None, plugin: str = "", limit: float | None = None) -> bytes:
        plugin = plugin or os.path.basename(plugin_path)
        if not plugin_path.startswith(IN_PROCESS):
            return super().exec(plugin_path, command, stdin, env, timeout, plugin, limit)
        from cni import skel
        from cni_bridge import api
        call = Call(command, plugin, plugin_path)
        start = time.perf_counter()
        try:
            code, obj = skel.dispatch(api.handlers(), env, stdin)
            call.exit_code = code
        except BaseException as exc:  # noqa: BLE001 - reported like a crashed plugin
            call.exit_code = 2
            raise PluginError(999, f"{type(exc).__name__}: {exc}", plugin=plugin, command=command) from None
        finally:
            call.duration = time.perf_counter() - start
            for observer in self.observers:
                observer(call)
        out = (json.dumps(obj) + "\n").encode() if obj is not None else b""
        if code != 0:
            raise plugin_failure(out, b"", code, plugin, command)
        return out
