"""The README's usage lines, run as a newcomer runs them.

Each `minidocker ...` line of the README's usage blocks runs in order with
`env -i` and only PATH and the two state roots: a default that works only
when a variable the other tests set (CNI_PATH, MINIDOCKER_CNI_*) is present
fails here. A `# curl URL` comment on a line is checked after it (an HTTP
answer of the container's server). Lines with
`...` are placeholders and are skipped (other tests cover their forms).
"""
from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from harness import REPO, VENV_BIN
from mdtools import busybox_tree, docker_save, tree_tar, wait_for

SECTIONS = ("## Usage", "### Networks", "### Services and DNS")
#: A line that follows (`logs -f`) runs until it is stopped: given this long.
FOLLOW_SECONDS = 2.0


def usage_lines() -> list[tuple[str, str | None]]:
    """(command line, URL of its `# curl` comment) for the README's usage blocks."""
    out = []
    section, in_block = None, False
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith("#") and not in_block:
            section = line.strip() if line.strip() in SECTIONS else None
            continue
        if line.startswith("```"):
            in_block = not in_block and section is not None and line.strip() == "```sh"
            continue
        if not in_block or not line.startswith("minidocker "):
            continue
        command, _, comment = line.partition("#")
        if "..." in command:
            continue
        m = re.match(r"\s*curl (\S+)", comment)
        out.append((command.strip(), m.group(1) if m else None))
    return out


def test_readme_lists_the_lines_this_test_runs():
    commands = [c for c, _ in usage_lines()]
    assert any(c.startswith("minidocker run -d --name web -p 8080:80") for c in commands), commands
    assert any(c.startswith("minidocker network create") for c in commands), commands
    assert any(c.startswith("minidocker network diagram") for c in commands), commands
    assert any(c.startswith("minidocker trace --to 127.0.0.1:8080") for c in commands), commands


def clean_env(node) -> list[str]:
    """`env -i` with PATH and the two roots: what the README tells a newcomer."""
    return ["env", "-i", f"PATH={VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
            f"MINIDOCKER_ROOT={node.state_root}", f"MINIDOCKER_RUN={node.run_root}"]


@pytest.fixture
def usage_dir(tmp_path):
    """The files the usage lines name, in the directory they run in."""
    tree = busybox_tree(tmp_path / "tree")
    layer = tree_tar(tree)
    (tmp_path / "rootfs.tar.gz").write_bytes(tree_tar(tree, gz=True))
    (tmp_path / "saved.tar").write_bytes(docker_save([layer], {"Cmd": ["sh"]}, ["saved:1.0"]))
    return tmp_path


def test_readme_usage_runs_with_a_clean_environment(node, usage_dir):
    env = clean_env(node)
    try:
        for command, url in usage_lines():
            argv = node.cmd([*env, *shlex.split(command)])
            if " -f " in f" {command} " and command.startswith("minidocker logs"):
                proc = subprocess.Popen(argv, cwd=usage_dir, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env={})
                try:
                    _, err = proc.communicate(timeout=FOLLOW_SECONDS)
                    pytest.fail(f"{command!r} ended by itself (exit {proc.returncode}): {err}")
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()
                continue
            proc = subprocess.run(argv, cwd=usage_dir, capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=60, env={})
            assert proc.returncode == 0, f"{command!r} exit {proc.returncode}: {proc.stderr}"
            assert "Error" not in proc.stderr, f"{command!r}: {proc.stderr}"
            if url:
                curl = node.cmd(["curl", "-sS", "--max-time", "5", "-o", "/dev/null",
                                 "-w", "%{http_code}", url])
                # any HTTP answer is the server's (busybox httpd has no index: 404)
                wait_for(lambda: subprocess.run(curl, capture_output=True, text=True,
                                                timeout=10).stdout not in ("", "000"), timeout=10)
    finally:
        for argv in (["service", "rm", "api", "api-np"], ["rm", "-f", "web", "api1", "api2"]):
            subprocess.run(node.cmd([*env, "minidocker", *argv]), capture_output=True,
                           timeout=60, env={})
        for name in ("back", "app"):
            subprocess.run(node.cmd([*env, "minidocker", "network", "rm", name]), capture_output=True,
                           timeout=60, env={})


def test_exec_d_cni_bridge_is_found_beside_minidocker(node):
    """MINIDOCKER_CNI_EXEC=1 execs the plugin: found beside the program that
    runs, with neither CNI_PATH nor .venv/bin on PATH."""
    env = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", f"MINIDOCKER_ROOT={node.state_root}",
           f"MINIDOCKER_RUN={node.run_root}", "MINIDOCKER_CNI_EXEC=1"]
    proc = subprocess.run(node.cmd([*env, str(VENV_BIN / "minidocker"), "run", "--rm", "-p", "18080:80",
                                    "busybox", "true"]), capture_output=True, text=True, timeout=60, env={})
    assert proc.returncode == 0, proc.stderr
