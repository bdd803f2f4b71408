"""Detached containers: ps, logs, exec, stop, start, rm, inspect, the shim,
the pinned namespace and the teardown, with both runtimes."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import threading

import psutil
import pytest

from harness import MINIDOCKER, Node
from mdtools import wait_for

LOOP = 'trap "echo bye; exit 7" TERM; echo hello; while :; do sleep 0.1; done'


@pytest.fixture(params=["builtin", "runc"])
def runtime(request):
    return request.param


def inspect(node, ref) -> dict:
    return json.loads(node.md("inspect", ref).stdout)[0]


def test_detached_lifecycle(node, runtime):
    cid = node.md("run", "-d", "--name", "web", "--network", "none", "--runtime", runtime,
                  "busybox", "sh", "-c", LOOP).stdout.strip()
    assert len(cid) == 64
    wait_for(lambda: "hello" in node.md("logs", "web").stdout)
    # ps, -q, --format json
    assert node.md("ps", "-q").stdout.split() == [cid[:12]]
    rows = [json.loads(l) for l in node.md("ps", "--format", "json").stdout.splitlines()]
    assert [(r["ID"], r["Names"], r["State"]) for r in rows] == [(cid[:12], "web", "running")]
    assert "web" in node.md("ps").stdout.splitlines()[1]
    # inspect: Docker's field names
    info = inspect(node, cid[:5])
    assert info["Id"] == cid and info["Name"] == "/web"
    st = info["State"]
    assert st["Status"] == "running" and st["Running"] and st["Pid"] > 0 and st["ExitCode"] == 0
    assert psutil.pid_exists(st["Pid"])
    assert info["HostConfig"]["NetworkMode"] == "none" and info["HostConfig"]["PortBindings"] == {}
    assert info["Config"]["Cmd"] == ["sh", "-c", LOOP]
    assert list(info["NetworkSettings"]["Networks"]) == ["none"]
    key = info["NetworkSettings"]["SandboxKey"]
    assert key.startswith(str(node.run_root))
    # the pinned namespace is the container's
    assert os.stat(key).st_ino == os.stat(f"/proc/{st['Pid']}/ns/net").st_ino
    assert node.sh("nsenter", f"--net={key}", "ip", "-o", "link").stdout.count(": <") == 1
    # exec: in its namespaces and root, exit codes, stdin
    out = node.md("exec", "web", "sh", "-c", "echo $$ $(hostname) $(cat /etc/hostname); "
                  "readlink /proc/1/ns/net; readlink /proc/self/ns/net; pwd").stdout.split("\n")
    pid_in, host1, host2 = out[0].split()
    assert int(pid_in) > 1 and host1 == host2 == cid[:12]
    assert out[1] == out[2] and out[3] == "/"
    assert node.md("exec", cid[:12], "sh", "-c", "exit 5", check=False).returncode == 5
    proc = node.md("exec", "web", "nosuch", check=False)
    assert proc.returncode == 127 and proc.stderr.startswith("Error: ")
    assert node.md("exec", "-i", "web", "cat", input="piped\n").stdout == "piped\n"
    assert node.md("exec", "web", "grep", "CapEff", "/proc/self/status").stdout.split()[1] == "00000000a80425fb"
    # rm without -f refuses and changes nothing
    proc = node.md("rm", "web", check=False)
    assert proc.returncode == 1 and "running" in proc.stderr and proc.stderr.count("\n") == 1
    assert inspect(node, "web")["State"]["Running"]
    # stop: SIGTERM reaches the trap, exit code and times recorded, teardown done
    assert node.md("stop", "-t", "10", "web").stdout == "web\n"
    info = inspect(node, "web")
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 7
    assert info["State"]["FinishedAt"] > info["State"]["StartedAt"]
    assert not os.path.exists(key) and node.mounts() == []
    assert node.md("logs", "web").stdout == "hello\nbye\n"
    assert node.md("ps", "-q").stdout == "" and node.md("ps", "-aq").stdout.split() == [cid[:12]]
    # start again: same container, same log
    assert node.md("start", "web").stdout == "web\n"
    wait_for(lambda: node.md("logs", "web").stdout.count("hello") == 2)
    assert inspect(node, "web")["State"]["Running"]
    # rm -f kills and removes everything
    node.md("rm", "-f", "web")
    assert node.md("ps", "-aq").stdout == ""
    assert not (node.state_root / "containers" / cid).exists()
    assert node.mounts() == [] and node.runc_containers() == []
    assert not cgroups_of(cid)


def cgroups_of(cid: str) -> list[str]:
    """cgroup v1 directories named after the container (runc makes them)."""
    out = []
    for base in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/devices", "/sys/fs/cgroup/freezer"):
        for dirpath, dirnames, _ in os.walk(base):
            if cid in dirnames:
                out.append(os.path.join(dirpath, cid))
            if dirpath.count("/") > 6:
                dirnames[:] = []
    return out


def test_stop_timeout_kills_with_sigkill(node, runtime):
    cid = node.md("run", "-d", "--name", "stubborn", "--runtime", runtime, "busybox", "sleep", "60").stdout.strip()
    if runtime == "runc":
        assert cgroups_of(cid)  # runc put it in cgroups; the teardown must remove them
    node.md("stop", "-t", "0", "stubborn")
    assert inspect(node, "stubborn")["State"]["ExitCode"] == 137
    assert not cgroups_of(cid) and node.runc_containers() == []
    node.md("rm", "stubborn")


def test_logs_follow_ends_with_the_container(node, runtime):
    node.md("run", "-d", "--name", "talk", "--runtime", runtime, "busybox", "sh", "-c",
            "for i in 1 2 3; do echo line$i; sleep 0.2; done")
    proc = node.popen([MINIDOCKER, "logs", "-f", "talk"])
    out, _ = proc.communicate(timeout=20)
    assert out == "line1\nline2\nline3\n" and proc.returncode == 0
    node.md("rm", "talk")


def test_detached_rm_removes_itself(node, runtime):
    cid = node.md("run", "-d", "--rm", "--runtime", runtime, "busybox", "sh", "-c", "sleep 0.2").stdout.strip()
    wait_for(lambda: not (node.state_root / "containers" / cid).exists())
    assert node.md("ps", "-aq").stdout == ""
    wait_for(lambda: node.processes() == [])


def test_network_host_has_no_pinned_namespace(node, runtime):
    node.md("run", "-d", "--name", "hostc", "--network", "host", "--runtime", runtime, "busybox", "sleep", "60")
    info = inspect(node, "hostc")
    assert info["HostConfig"]["NetworkMode"] == "host" and info["NetworkSettings"]["SandboxKey"] == ""
    assert list(info["NetworkSettings"]["Networks"]) == ["host"]
    assert os.stat(f"/proc/{info['State']['Pid']}/ns/net").st_ino == os.stat(node.netns).st_ino
    assert not list(node.run_root.glob("netns/*"))
    node.md("rm", "-f", "hostc")


def test_shim_is_detached_and_supervises(node):
    node.md("run", "-d", "--name", "shimc", "busybox", "sleep", "60")
    pid = inspect(node, "shimc")["State"]["Pid"]
    shim = psutil.Process(pid).parent()
    assert "minidocker.shim" in " ".join(shim.cmdline())
    # detached: not our child, not the (exited) CLI's, in a session of its own
    assert shim.ppid() != os.getpid() and os.getsid(shim.pid) != os.getsid(0)
    assert not psutil.Process(shim.ppid()).cmdline()[-1:] == ["shimc"]
    node.md("rm", "-f", "shimc")


def test_teardown_after_the_shim_was_killed(node):
    """A shim killed by SIGKILL leaves a running container: rm -f still
    converges (process, mount and pinned namespace all gone)."""
    node.md("run", "-d", "--name", "orphan", "busybox", "sleep", "60")
    info = inspect(node, "orphan")
    shim = psutil.Process(info["State"]["Pid"]).parent()
    shim.kill()
    shim.wait(5)
    assert psutil.pid_exists(info["State"]["Pid"])
    assert inspect(node, "orphan")["State"]["Status"] == "exited"
    node.md("rm", "-f", "orphan")
    node.md("rm", "-f", "orphan", check=False)  # again: nothing left to do, no crash
    wait_for(lambda: not psutil.pid_exists(info["State"]["Pid"]))
    assert node.mounts() == [] and os.listdir(node.run_root / "netns") == []


def test_names_and_prefixes(node):
    assert node.md("run", "--name", "alpha", "busybox", "true").stdout == ""
    full = inspect(node, "alpha")["Id"]
    assert inspect(node, "/alpha")["Id"] == inspect(node, full[:3])["Id"] == inspect(node, full)["Id"] == full
    node.md("run", "busybox", "true")  # a generated name
    names = [json.loads(l)["Names"] for l in node.md("ps", "-a", "--format", "json").stdout.splitlines()]
    assert "alpha" in names and len(set(names)) == 2 and all(names)
    for name in names:
        assert node.md("rm", name).stdout == f"{name}\n"
    assert node.md("ps", "-aq").stdout == ""


def test_concurrent_runs_are_safe(node):
    """Eight invocations at once: distinct names all run, one name taken
    twice yields exactly one container and one conflict error."""
    results = {}

    def go(key, *args):
        results[key] = node.md(*args, check=False, timeout=90)

    threads = [threading.Thread(target=go, args=(i, "run", "--rm", "--name", f"c{i}", "busybox", "echo", str(i)))
               for i in range(6)]
    threads += [threading.Thread(target=go, args=(f"dup{i}", "run", "-d", "--name", "same", "busybox", "sleep", "60"))
                for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(6):
        assert results[i].returncode == 0 and results[i].stdout == f"{i}\n", results[i]
    codes = sorted(results[f"dup{i}"].returncode for i in range(2))
    assert codes == [0, 125]
    assert node.md("ps", "-aq").stdout.count("\n") == 1
    node.md("rm", "-f", "same")


def test_leak_check_sees_a_container_process(tmp_path):
    n = Node.create(tmp_path / "n")
    try:
        n.md("run", "-d", "--name", "left", "busybox", "sleep", "60")
        pid = json.loads(n.md("inspect", "left").stdout)[0]["State"]["Pid"]
        found = {p.pid for p in n.processes()}
        assert pid in found and any("sleep" in item for item in n.leftovers())
    finally:
        n.md("rm", "-f", "left", check=False)
        n.destroy()


def test_state_files_are_private(node):
    node.md("run", "--name", "priv", "busybox", "true")
    cid = inspect(node, "priv")["Id"]
    record = node.state_root / "containers" / cid / "container.json"
    assert stat.S_IMODE(os.stat(record).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(node.state_root / "containers").st_mode) == 0o700
    node.md("rm", "priv")


def test_pinned_namespace_exists_before_the_process(node):
    """The namespace is pinned and recorded before the process starts: the
    config.json handed to the runtime already names it."""
    node.md("run", "-d", "--name", "pin", "busybox", "sleep", "60")
    info = inspect(node, "pin")
    spec = json.loads((node.state_root / "containers" / info["Id"] / "config.json").read_text())
    net = [ns for ns in spec["linux"]["namespaces"] if ns["type"] == "network"]
    assert net == [{"type": "network", "path": info["NetworkSettings"]["SandboxKey"]}]
    node.md("rm", "-f", "pin")
    assert subprocess.run(["test", "-e", info["NetworkSettings"]["SandboxKey"]]).returncode == 1
