"""Bad input: a one-line error naming the value, a non-zero exit, and no
change to the state."""
from __future__ import annotations

import os

import pytest


def snapshot(node) -> list[str]:
    out = []
    for base in (node.state_root / "containers", node.run_root):
        for dirpath, dirnames, filenames in os.walk(base):
            for name in dirnames + filenames:
                out.append(os.path.relpath(os.path.join(dirpath, name), node.root))
    return sorted(out)


def one_line(proc, code, *needles):
    assert proc.returncode == code, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert proc.stdout == ""


RUN_ERRORS = {
    "unknown-image": (["nosuchimage", "true"], "'nosuchimage'"),
    "bad-image-ref": (["Bad//Ref", "true"], "'Bad//Ref'"),
    "unknown-network": (["--network", "bogus", "busybox", "true"], "'bogus'"),
    "bad-env-empty-key": (["-e", "=value", "busybox", "true"], "'=value'"),
    "bad-env-space": (["-e", "A B=c", "busybox", "true"], "'A B=c'"),
    "bad-env-empty": (["-e", "", "busybox", "true"], "''"),
    "missing-env-file": (["--env-file", "/nonexistent/env", "busybox", "true"], "/nonexistent/env"),
    "bad-name": (["--name", "-bad", "busybox", "true"], "'-bad'"),
    "unknown-runtime": (["--runtime", "crun", "busybox", "true"], "'crun'"),
    "relative-workdir": (["-w", "rel/dir", "busybox", "true"], "'rel/dir'"),
    "bad-hostname": (["--hostname", "no spaces", "busybox", "true"], "'no spaces'"),
    "unknown-flag": (["--bogus-flag", "busybox", "true"], "--bogus-flag"),
}


@pytest.mark.parametrize("case", sorted(RUN_ERRORS))
def test_run_rejects_bad_input(node, case):
    node.md("run", "--name", "existing", "busybox", "true")  # busybox exists; one container
    before = snapshot(node)
    args, needle = RUN_ERRORS[case]
    proc = node.md("run", *args, check=False)
    one_line(proc, 125, needle)
    assert snapshot(node) == before
    node.md("rm", "existing")


def test_unknown_network_lists_accepted_modes(node):
    proc = node.md("run", "--network", "bogus", "busybox", "true", check=False)
    one_line(proc, 125, "none", "host")


def test_name_conflict(node):
    node.md("run", "-d", "--name", "taken", "busybox", "sleep", "60")
    before = snapshot(node)
    proc = node.md("run", "--name", "taken", "busybox", "true", check=False)
    one_line(proc, 125, "'/taken'", "already in use")
    assert snapshot(node) == before
    assert node.md("ps", "-q").stdout.count("\n") == 1
    node.md("rm", "-f", "taken")


def test_rm_running_without_force(node):
    node.md("run", "-d", "--name", "busy", "busybox", "sleep", "60")
    before = snapshot(node)
    one_line(node.md("rm", "busy", check=False), 1, "running", "rm -f")
    assert snapshot(node) == before
    node.md("rm", "-f", "busy")


@pytest.mark.parametrize("command", [["stop"], ["start"], ["rm"], ["rm", "-f"], ["logs"], ["inspect"],
                                     ["exec", "--", "_REF_", "true"]])
def test_unknown_container(node, command):
    node.md("run", "--name", "other", "busybox", "true")
    before = snapshot(node)
    argv = [a.replace("_REF_", "nosuch") for a in command] if "_REF_" in command else command + ["nosuch"]
    if command[0] == "exec":
        argv = ["exec", "nosuch", "true"]
    one_line(node.md(*argv, check=False), 1, "'nosuch'")
    assert snapshot(node) == before
    node.md("rm", "other")


def test_exec_in_stopped_container(node):
    node.md("run", "--name", "done", "busybox", "true")
    one_line(node.md("exec", "done", "true", check=False), 1, "not running")
    node.md("rm", "done")


def test_stop_bad_timeout(node):
    proc = node.md("stop", "-t", "soon", "x", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1


def test_start_failure_before_the_shim(node, tmp_path):
    """A failure while preparing (here: the image's USER does not exist)
    leaves no mount or namespace; with --rm no container either."""
    from mdtools import busybox_tree, docker_save, tree_tar
    archive = tmp_path / "ghost.tar"
    archive.write_bytes(docker_save([tree_tar(busybox_tree(tmp_path / "t"))],
                                    {"User": "ghost", "Cmd": ["true"]}, ["ghost:1"]))
    node.md("load", "-i", archive)
    one_line(node.md("run", "--rm", "ghost:1", check=False), 125, "'ghost'")
    assert node.md("ps", "-aq").stdout == ""
    one_line(node.md("run", "--name", "kept", "ghost:1", check=False), 125, "'ghost'")
    assert node.md("ps", "-a", "--format", "json").stdout.count('"State": "created"') == 1
    assert node.mounts() == [] and not list(node.run_root.glob("netns/*"))
    node.md("rm", "kept")
