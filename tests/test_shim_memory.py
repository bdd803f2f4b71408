"""The detached shim waits in its lean stage (minidocker/shimwait.py): what
that stage imports, and that a container behind it keeps all the shim does
(log, exit code, events, signals, restarts, teardown). Its memory itself is
measured by `scripts/bench memory`, not here: these checks are structural."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from minidocker import shimwait
from mdtools import wait_for

# What importing the lean stage may add to a bare `python -I -S`: each
# further module costs every waiting shim (os ~0.3 MB, json with re ~1 MB,
# signal with enum ~0.8 MB).
ALLOWED = {"minidocker", "minidocker.shimwait", "minidocker.logfile", "minidocker.clock",
           "_json", "select", "time"}
RUN_MAIN = "main(sys.argv[2:])"
REPO = str(Path(shimwait.__file__).resolve().parents[1])


def _modules(code: str, *args: str) -> set[str]:
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code + "; print(*sorted(sys.modules))",
                          *args], capture_output=True, text=True, timeout=30, check=True).stdout
    return set(out.split())


def test_the_lean_stage_imports_only_what_waiting_needs():
    assert shimwait.BOOT.endswith(RUN_MAIN)  # the boot line the test reproduces
    bare = _modules("import sys")
    lean = _modules(shimwait.BOOT[: -len(RUN_MAIN)] + "sys", REPO)
    assert "minidocker.shimwait" in lean
    assert lean - bare <= ALLOWED, sorted(lean - bare - ALLOWED)
    for heavy in ("os", "json", "re", "enum", "signal", "ctypes", "pathlib", "minidocker.records"):
        assert heavy not in lean


def inspect(node, ref) -> dict:
    return json.loads(node.md("inspect", ref).stdout)[0]


def _shim(node, ref) -> psutil.Process:
    return psutil.Process(inspect(node, ref)["State"]["Pid"]).parent()


def _lean(shim: psutil.Process) -> bool:
    """The shim has exec'd its lean stage: -S, the boot line, and nothing
    of the start stage mapped (ctypes is a shared object it loaded)."""
    maps = Path(f"/proc/{shim.pid}/maps").read_text()
    return shim.cmdline()[1:4] == ["-I", "-S", "-c"] and "minidocker.shimwait" in shim.cmdline()[4] \
        and "_ctypes" not in maps


@pytest.mark.parametrize("runtime", ["builtin", "runc"])
def test_a_detached_container_behind_the_lean_stage(node, runtime):
    """Output to the log, the shim's name for prune, then `stop`: the exit
    is recorded, the events written and the teardown done."""
    node.md("run", "-d", "--name", "lean", "--network", "none", "--runtime", runtime, "busybox",
            "sh", "-c", 'echo out; echo err >&2; trap "exit 5" TERM; while :; do sleep 0.1; done')
    cid = inspect(node, "lean")["Id"]
    wait_for(lambda: _lean(_shim(node, "lean")))
    shim = _shim(node, "lean")
    assert shim.name() == "mdshim-" + cid[:8]
    assert inspect(node, "lean")["State"]["Status"] == "running"
    wait_for(lambda: "err" in node.md("logs", "lean").stderr)
    logged = node.md("logs", "lean")
    assert (logged.stdout, logged.stderr) == ("out\n", "err\n")
    lines = [json.loads(l) for l in (node.state_root / "containers" / cid / "container.log").read_text().splitlines()]
    assert [(e["log"], e["stream"]) for e in lines] == [("out\n", "stdout"), ("err\n", "stderr")]
    node.md("stop", "-t", "5", "lean")
    state = inspect(node, "lean")["State"]
    assert (state["Status"], state["ExitCode"], state["Running"]) == ("exited", 5, False)
    assert not psutil.pid_exists(shim.pid) or shim.status() == psutil.STATUS_ZOMBIE
    actions = [e["Action"] for e in map(json.loads, (node.state_root / "events.log").read_text().splitlines())
               if e["id"] == cid]
    assert actions[-3:] == ["kill", "die", "stop"] and "start" in actions
    node.md("rm", "lean")


def test_the_lean_stage_relays_signals_and_restarts(node):
    """A signal to the waiting shim reaches the container; a restart goes
    through the full shim and back into the lean stage."""
    node.md("run", "-d", "--name", "again", "--network", "none", "--restart", "on-failure:1",
            "busybox", "sh", "-c", 'echo up; trap "exit 3" TERM; while :; do sleep 0.1; done')
    wait_for(lambda: _lean(_shim(node, "again")))
    first = _shim(node, "again")
    os.kill(first.pid, signal.SIGTERM)  # relayed: the container exits 3, then restarts
    wait_for(lambda: inspect(node, "again")["RestartCount"] == 1
             and inspect(node, "again")["State"]["Running"])
    wait_for(lambda: _lean(_shim(node, "again")))
    assert _shim(node, "again").pid == first.pid  # the same process, exec'd again
    os.kill(first.pid, signal.SIGTERM)  # on-failure:1 is used up: this exit is the last
    wait_for(lambda: not inspect(node, "again")["State"]["Running"])
    state = inspect(node, "again")["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 3)
    assert node.md("logs", "again").stdout == "up\nup\n"
    wait_for(lambda: not psutil.pid_exists(first.pid))
    node.md("rm", "again")


@pytest.mark.parametrize("args, named", [
    (["--containers", "0"], "--containers 0: give 1 to 1000"),
    (["--containers", "1001"], "--containers 1001: give 1 to 1000"),
    (["--containers", "many"], "invalid int value: 'many'"),
    (["--podman"], "unrecognized arguments: --podman"),
])
def test_bench_memory_refuses_bad_options_in_one_line(tmp_path, args, named):
    env = {"PATH": os.environ["PATH"], "TMPDIR": str(tmp_path)}
    proc = subprocess.run([os.path.join(REPO, "scripts", "bench"), "memory", *args], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("bench memory: "), proc.stderr
    assert named in proc.stderr
    assert list(tmp_path.iterdir()) == []
