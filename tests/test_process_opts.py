"""--cap-add/--cap-drop, --privileged, --security-opt, --sysctl, --ulimit,
--init, --stop-signal, --stop-timeout, --restart (issue 12), both runtimes.

Docker's documented behaviour: capabilities are the default set plus
--cap-add minus --cap-drop, ALL meaning every one; --privileged gives every
capability, every device and a writable /sys; --sysctl sets the container's
own namespaced keys (net.* refused with --network host); --ulimit sets
rlimits (soft <= hard); --init runs an init as pid 1 that reaps orphans and
passes signals on; `stop` sends --stop-signal and waits --stop-timeout
before SIGKILL; --restart restarts the process by policy, never after a
`stop`, and cannot go with --rm."""
from __future__ import annotations

import json
import time

import pytest

from mdtools import newcomer

RUNTIMES = ["builtin", "runc"]
CAP = {"CHOWN": 0, "NET_ADMIN": 12, "NET_RAW": 13, "SYS_TIME": 25, "MKNOD": 27}
DOCKER_CAPS = 0x00000000A80425FB


@pytest.fixture(params=RUNTIMES)
def runtime(request):
    return request.param


def sh(node, runtime, script, *opts, check=True, network="none"):
    return node.md("run", "--rm", "--network", network, "--runtime", runtime, *opts, "busybox",
                   "sh", "-c", script, check=check)


def _status(node, runtime, *opts) -> dict:
    out = sh(node, runtime, "grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status", *opts).stdout
    return {l.split(":")[0]: l.split()[1] for l in out.splitlines()}


def _inspect(node, ref) -> dict:
    return json.loads(node.md("inspect", ref).stdout)[0]


def test_capabilities(node, runtime):
    eff = int(_status(node, runtime, "--cap-add", "SYS_TIME", "--cap-drop", "mknod")["CapEff"], 16)
    assert eff == (DOCKER_CAPS | 1 << CAP["SYS_TIME"]) & ~(1 << CAP["MKNOD"])
    eff = int(_status(node, runtime, "--cap-drop", "ALL", "--cap-add", "CAP_NET_ADMIN")["CapEff"], 16)
    assert eff == 1 << CAP["NET_ADMIN"]
    st = _status(node, runtime, "--cap-drop", "ALL")
    assert int(st["CapEff"], 16) == 0 and int(st["CapBnd"], 16) == 0
    with open("/proc/self/status") as fh:
        ours = int(next(l for l in fh if l.startswith("CapBnd:")).split()[1], 16)
    assert int(_status(node, runtime, "--cap-add", "ALL", "--cap-drop", "NET_RAW")["CapEff"], 16) \
        == ours & ~(1 << CAP["NET_RAW"])
    out = sh(node, runtime, "ip link add x0 type bridge && echo added", "--cap-add", "NET_ADMIN").stdout
    assert out == "added\n"
    proc = node.md("run", "--rm", "--cap-add", "FLY", "busybox", "true", check=False)
    assert proc.returncode == 125 and "'FLY'" in proc.stderr


def test_privileged(node, runtime):
    with open("/proc/self/status") as fh:
        ours = next(l for l in fh if l.startswith("CapBnd:")).split()[1]
    out = sh(node, runtime, "grep CapEff /proc/self/status; grep ' /sys ' /proc/mounts; "
             "ls /dev/loop0 && cat /proc/kcore >/dev/null 2>&1; echo kcore=$?", "--privileged").stdout
    assert out.split()[1] == ours  # every capability minidocker holds
    assert " rw," in out.splitlines()[1]  # /sys writable
    assert "/dev/loop0" in out  # the host's devices
    assert _inspect_after(node, runtime, "--privileged")["HostConfig"]["Privileged"] is True


def _inspect_after(node, runtime, *opts) -> dict:
    node.md("run", "--name", "probe", "--network", "none", "--runtime", runtime, *opts, "busybox",
            "true")
    try:
        return _inspect(node, "probe")
    finally:
        node.md("rm", "probe")


def test_no_new_privileges(node, runtime):
    assert _status(node, runtime)["NoNewPrivs"] == "0"  # Docker's default
    assert _status(node, runtime, "--security-opt", "no-new-privileges")["NoNewPrivs"] == "1"
    assert _status(node, runtime, "--security-opt", "no-new-privileges=false")["NoNewPrivs"] == "0"
    assert _status(node, runtime, "--security-opt", "no-new-privileges:true")["NoNewPrivs"] == "1"
    proc = node.md("run", "--rm", "--security-opt", "seccomp=unconfined", "busybox", "true",
                   check=False)
    assert proc.returncode == 125 and "'seccomp=unconfined'" in proc.stderr


def test_sysctl(node, runtime):
    # a new namespace copies the host's ip_forward (devconf_inherit_init_net=0):
    # the node's own is set here, so the check below does not depend on the host
    node.sh("sysctl", "-qw", "net.ipv4.ip_forward=0")
    out = sh(node, runtime, "cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/ping_group_range "
             "/proc/sys/kernel/shmmni", "--sysctl", "net.ipv4.ip_forward=1",
             "--sysctl", "net.ipv4.ping_group_range=0 100", "--sysctl", "kernel.shmmni=1000").stdout
    assert out.split() == ["1", "0", "100", "1000"]
    assert node.sh("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "0"  # the node's own
    for opts, named in ((["--network", "host", "--sysctl", "net.ipv4.ip_forward=1"], "host"),
                        (["--sysctl", "kernel.hostname=x"], "kernel.hostname"),
                        (["--sysctl", "vm.swappiness"], "vm.swappiness")):
        proc = node.md("run", "--rm", *opts, "busybox", "true", check=False)
        assert proc.returncode == 125 and named in proc.stderr, proc


def test_ulimit(node, runtime):
    out = sh(node, runtime, "ulimit -n; ulimit -Hn; ulimit -s", "--ulimit", "nofile=100:200",
             "--ulimit", "stack=4194304").stdout.split()
    assert out == ["100", "200", "4096"]  # rlimits in bytes; ulimit -s shows KiB
    assert _inspect_after(node, runtime, "--ulimit", "nofile=100:200")["HostConfig"]["Ulimits"] \
        == [{"Name": "nofile", "Soft": 100, "Hard": 200}]
    for bad in ("nofile=300:200", "files=1", "nofile=many"):
        proc = node.md("run", "--rm", "--ulimit", bad, "busybox", "true", check=False)
        assert proc.returncode == 125 and repr(bad) in proc.stderr


def test_init_reaps_and_forwards(node, runtime):
    orphan = "(sleep 0.1 &); exec sleep 60"  # pid 1 `sleep` never reaps the orphan
    ids = {}
    for init in (True, False):
        ids[init] = node.md("run", "-d", "--network", "none", "--runtime", runtime,
                            *(["--init"] if init else []), "busybox", "sh", "-c",
                            orphan).stdout.strip()
    try:
        time.sleep(1)
        with_init = node.md("exec", ids[True], "ps", "-o", "pid,stat,comm").stdout
        without = node.md("exec", ids[False], "ps", "-o", "pid,stat,comm").stdout
        assert "docker-init" in with_init.splitlines()[1]
        assert " Z " not in with_init and " Z " in without
        started = time.monotonic()
        node.md("stop", "-t", "20", ids[True])  # tini passes SIGTERM on to sleep
        assert time.monotonic() - started < 10
        assert _inspect(node, ids[True])["State"]["ExitCode"] == 143
    finally:
        node.md("rm", "-f", *ids.values())


def test_stop_signal_and_timeout(node, runtime):
    node.md("run", "-d", "--name", "sig", "--network", "none", "--runtime", runtime,
            "--stop-signal", "USR1", "busybox", "sh", "-c",
            "trap 'echo got-usr1; exit 0' USR1; while true; do sleep 0.1; done")
    time.sleep(0.5)
    node.md("stop", "sig")
    info = _inspect(node, "sig")
    assert info["Config"]["StopSignal"] == "USR1" and info["State"]["ExitCode"] == 0
    assert "got-usr1" in node.md("logs", "sig").stdout
    node.md("rm", "sig")
    node.md("run", "-d", "--name", "slow", "--network", "none", "--runtime", runtime,
            "--stop-timeout", "1", "busybox", "sh", "-c", "trap '' TERM; while true; do sleep 0.1; done")
    time.sleep(0.5)
    started = time.monotonic()
    node.md("stop", "slow")
    took = time.monotonic() - started
    assert 0.9 < took < 8 and _inspect(node, "slow")["State"]["ExitCode"] == 137
    assert _inspect(node, "slow")["Config"]["StopTimeout"] == 1
    node.md("rm", "slow")
    for opts in (["--stop-signal", "NOPE"], ["--stop-timeout", "soon"]):
        proc = node.md("run", "--rm", *opts, "busybox", "true", check=False)
        assert proc.returncode == 125 and repr(opts[1]) in proc.stderr


def _wait_state(node, ref, pred, timeout=20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = _inspect(node, ref)
        if pred(info) or time.monotonic() > deadline:
            return info
        time.sleep(0.2)


def test_restart_policies(node, runtime):
    node.md("run", "-d", "--name", "fail", "--network", "none", "--runtime", runtime,
            "--restart", "on-failure:2", "busybox", "sh", "-c", "echo run; exit 3")
    info = _wait_state(node, "fail", lambda i: i["RestartCount"] == 2 and not i["State"]["Running"])
    assert (info["RestartCount"], info["State"]["ExitCode"], info["State"]["Status"]) == (2, 3, "exited")
    assert info["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert node.md("logs", "fail").stdout == "run\n" * 3
    node.md("rm", "fail")
    # on-failure does not restart a success; always does, until `stop`
    node.md("run", "-d", "--name", "ok", "--network", "none", "--runtime", runtime,
            "--restart", "on-failure", "busybox", "true")
    assert _wait_state(node, "ok", lambda i: not i["State"]["Running"])["RestartCount"] == 0
    node.md("rm", "ok")
    node.md("run", "-d", "--name", "loop", "--network", "none", "--runtime", runtime,
            "--restart", "always", "busybox", "sh", "-c", "sleep 0.3")
    info = _wait_state(node, "loop", lambda i: i["RestartCount"] >= 2)
    assert info["RestartCount"] >= 2
    node.md("stop", "loop")
    count = _inspect(node, "loop")["RestartCount"]
    time.sleep(1.5)
    info = _inspect(node, "loop")
    assert info["State"]["Running"] is False and info["RestartCount"] == count
    node.md("rm", "loop")


def test_restart_foreground_and_bad_policies(node, runtime):
    proc = node.md("run", "--name", "fg", "--network", "none", "--runtime", runtime, "--restart",
                   "on-failure:1", "busybox", "sh", "-c", "echo once; exit 5", check=False)
    assert (proc.returncode, proc.stdout) == (5, "once\n")  # run ends with the first exit
    info = _wait_state(node, "fg", lambda i: i["RestartCount"] == 1 and not i["State"]["Running"])
    assert info["RestartCount"] == 1
    node.md("rm", "fg")
    for policy, named in (("sometimes", "'sometimes'"), ("always:3", "on-failure"),
                          ("on-failure:x", "number")):
        proc = node.md("run", "--rm", "--restart", policy, "busybox", "true", check=False)
        assert proc.returncode == 125 and named in proc.stderr
    proc = node.md("run", "--rm", "--restart", "always", "busybox", "true", check=False)
    assert proc.returncode == 125 and "--rm" in proc.stderr
    assert node.md("ps", "-aq").stdout == ""


def test_as_a_newcomer_runs_it(node):
    argv, env = newcomer(node)
    out = node.run([*argv, "run", "--rm", "--init", "--cap-drop", "ALL", "--ulimit", "nofile=64",
                    "busybox", "sh", "-c", "ulimit -n; grep CapEff /proc/self/status"], env=env).stdout
    assert out.split() == ["64", "CapEff:", "0000000000000000"]
