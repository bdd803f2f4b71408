"""The lifecycle commands (issue 12): create + start -a, restart, kill -s,
wait, pause/unpause, rename, top, stats --no-stream, logs (streams apart,
--tail, --since/--until, -t), cp, diff, export, version, info, events.

Compared with what Docker documents: `create` prints the id and leaves the
container `created`; `start -a` ends with the container's exit code; `kill`
sends SIGKILL unless `-s`; `wait` prints exit codes; a paused container's
processes are frozen (ps says `(Paused)`); `top` prints ps -ef's columns;
`stats` the columns CONTAINER ID, NAME, CPU %, MEM USAGE / LIMIT, MEM %,
NET I/O, BLOCK I/O, PIDS; `diff` lines are `A|C|D path`; `events` lines are
`TIME container ACTION ID (attributes)`."""
from __future__ import annotations

import io
import json
import tarfile
import time

import pytest

from mdtools import newcomer

RUNTIMES = ["builtin", "runc"]
LOOP = "while true; do sleep 0.1; done"


@pytest.fixture(params=RUNTIMES)
def runtime(request):
    return request.param


def _state(node, ref) -> dict:
    return json.loads(node.md("inspect", ref).stdout)[0]["State"]


def _daemon(node, runtime, name, script=LOOP, *opts):
    return node.md("run", "-d", "--name", name, "--network", "none", "--runtime", runtime, *opts,
                   "busybox", "sh", "-c", script).stdout.strip()


def test_create_then_start_attached(node, runtime):
    cid = node.md("create", "--name", "made", "--network", "none", "--runtime", runtime, "busybox",
                  "sh", "-c", "echo out; echo err >&2; exit 3").stdout.strip()
    assert len(cid) == 64 and _state(node, "made")["Status"] == "created"
    proc = node.md("start", "-a", "made", check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "err\n")
    assert _state(node, "made")["ExitCode"] == 3
    node.md("rm", "made")
    proc = node.md("create", "--memory", "1k", "busybox", "true", check=False)
    assert proc.returncode == 125 and node.md("ps", "-aq").stdout == ""


def test_kill_wait_restart(node, runtime):
    _daemon(node, runtime, "kk", "trap 'exit 7' USR1; " + LOOP)
    time.sleep(0.3)
    node.md("kill", "-s", "USR1", "kk")
    assert node.md("wait", "kk").stdout == "7\n"
    node.md("start", "kk")
    first = _state(node, "kk")["StartedAt"]
    node.md("restart", "-t", "1", "kk")
    st = _state(node, "kk")
    assert st["Running"] and st["StartedAt"] > first
    node.md("kill", "kk")  # SIGKILL by default
    assert node.md("wait", "kk").stdout == "137\n"
    proc = node.md("kill", "kk", check=False)
    assert proc.returncode == 1 and "not running" in proc.stderr
    proc = node.md("kill", "-s", "NOPE", "kk", check=False)
    assert proc.returncode == 1 and "'NOPE'" in proc.stderr
    node.md("rm", "kk")


def test_pause_unpause(node, runtime):
    cid = _daemon(node, runtime, "pp", "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.05; done")
    try:
        time.sleep(0.3)
        node.md("pause", "pp")
        st = _state(node, "pp")
        assert st["Paused"] and st["Status"] == "paused"
        assert node.md("ps", "--format", "{{.Status}}").stdout.strip().endswith("(Paused)")
        pid = st["Pid"]
        with open(f"/proc/{pid}/cgroup") as fh:
            freezer = next(l.split(":")[2].strip() for l in fh if ":freezer:" in l)
        assert open(f"/sys/fs/cgroup/freezer{freezer}/freezer.state").read().strip() == "FROZEN"
        before = open(f"/proc/{pid}/root/tmp/n").read()
        time.sleep(0.4)
        assert open(f"/proc/{pid}/root/tmp/n").read() == before  # nothing runs
        proc = node.md("pause", "pp", check=False)
        assert proc.returncode == 1 and "already paused" in proc.stderr
        node.md("unpause", "pp")
        time.sleep(0.4)
        assert open(f"/proc/{pid}/root/tmp/n").read() != before
        node.md("pause", "pp")
        node.md("stop", "-t", "1", "pp")  # a paused container still stops
        assert _state(node, "pp")["Running"] is False
    finally:
        node.md("rm", "-f", cid)


def test_rename(node):
    _daemon(node, "builtin", "old")
    node.md("run", "--name", "taken", "--network", "none", "busybox", "true")
    node.md("rename", "old", "new")
    assert node.md("ps", "--format", "{{.Names}}").stdout == "new\n"
    proc = node.md("rename", "new", "taken", check=False)
    assert proc.returncode == 1 and "already in use" in proc.stderr
    proc = node.md("rename", "new", "-bad", check=False)
    assert proc.returncode != 0
    node.md("rm", "-f", "new", "taken")


def test_top_and_stats(node, runtime):
    _daemon(node, runtime, "busy", "sleep 300 & " + LOOP, "--memory", "64m")
    try:
        time.sleep(0.3)
        top = node.md("top", "busy").stdout.splitlines()
        assert top[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
        assert any(l.endswith("sleep 300") for l in top[1:])
        assert node.md("top", "busy", "-o", "pid,comm").stdout.splitlines()[0].split() == ["PID", "COMMAND"]
        out = node.md("stats", "--no-stream", "busy").stdout.splitlines()
        header = [c.strip() for c in out[0].split("   ") if c.strip()]
        assert header == ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %",
                          "NET I/O", "BLOCK I/O", "PIDS"]
        row = json.loads(node.md("stats", "--no-stream", "--format", "json", "busy").stdout)
        assert row["Name"] == "busy" and row["MemUsage"].endswith(" / 64MiB")
        assert int(row["PIDs"]) >= 3 and row["CPUPerc"].endswith("%")
        assert node.md("stats", "--no-stream", "--format", "{{.Name}}:{{.PIDs}}", "busy").stdout \
            .startswith("busy:")
    finally:
        node.md("rm", "-f", "busy")


def test_logs_streams_tail_since_until_timestamps(node, runtime):
    node.md("run", "--name", "talk", "--network", "none", "--runtime", runtime, "busybox", "sh",
            "-c", "echo o1; echo e1 >&2; sleep 1.2; echo o2; echo e2 >&2")
    proc = node.md("logs", "talk")
    assert (proc.stdout, proc.stderr) == ("o1\no2\n", "e1\ne2\n")
    assert node.md("logs", "--tail", "1", "talk").stderr == "e2\n"
    assert node.md("logs", "--tail", "2", "talk").stdout == "o2\n"
    stamps = node.md("logs", "-t", "talk").stdout.splitlines()
    assert [s.split(" ", 1)[1] for s in stamps] == ["o1", "o2"]
    from datetime import datetime
    t0 = datetime.fromisoformat(stamps[0].split()[0][:26] + "+00:00").timestamp()
    t1 = datetime.fromisoformat(stamps[1].split()[0][:26] + "+00:00").timestamp()
    middle = f"{(t0 + t1) / 2:.3f}"
    assert node.md("logs", "--since", middle, "talk").stdout == "o2\n"
    assert node.md("logs", "--until", middle, "talk").stdout == "o1\n"
    assert node.md("logs", "--since", "1h", "talk").stdout == "o1\no2\n"
    proc = node.md("logs", "--since", "yesterday-ish", "talk", check=False)
    assert proc.returncode == 1 and "'yesterday-ish'" in proc.stderr
    node.md("rm", "talk")


def test_cp_diff_export(node, tmp_path):
    _daemon(node, "builtin", "fs", "rm /etc/group; echo x > /root/new; ln -s / /root/up; " + LOOP)
    try:
        time.sleep(0.3)
        diff = node.md("diff", "fs").stdout.splitlines()
        assert {"D /etc/group", "A /root/new", "A /root/up", "C /root"} <= set(diff)
        assert not [l for l in diff if "hosts" in l or "resolv" in l]  # our mount points
        (tmp_path / "in.txt").write_text("to the container\n")
        node.md("cp", tmp_path / "in.txt", "fs:/root/")
        assert node.md("exec", "fs", "cat", "/root/in.txt").stdout == "to the container\n"
        # through the container's symlink /root/up -> /: stays in the container's root
        node.md("cp", tmp_path / "in.txt", "fs:/root/up/tmp/")
        assert node.md("exec", "fs", "cat", "/tmp/in.txt").stdout == "to the container\n"
        assert not (tmp_path.parent / "in.txt").exists()
        node.md("cp", "fs:/root/new", tmp_path / "out.txt")
        assert (tmp_path / "out.txt").read_text() == "x\n"
        node.md("cp", "fs:/root/up/etc/passwd", tmp_path / "passwd")  # the container's, not ours
        assert (tmp_path / "passwd").read_text().startswith("root:x:0:0")
        assert "nobody" in (tmp_path / "passwd").read_text()
        proc = node.md("cp", "fs:/nope", tmp_path, check=False)
        assert proc.returncode == 1 and "/nope" in proc.stderr
        proc = node.md("cp", tmp_path / "in.txt", tmp_path / "x", check=False)
        assert proc.returncode == 1 and "CONTAINER:PATH" in proc.stderr
        node.md("stop", "-t", "0", "fs")
        node.md("cp", "fs:/root/new", tmp_path / "stopped.txt")  # a stopped one too
        assert (tmp_path / "stopped.txt").read_text() == "x\n"
        tar = node.md("export", "-o", tmp_path / "fs.tar", "fs")
        assert tar.returncode == 0
        with tarfile.open(tmp_path / "fs.tar") as t:
            names = set(t.getnames())
        assert {"bin/busybox", "root/new", "root/in.txt"} <= names and "etc/group" not in names
        assert node.mounts() == []  # the stopped root was mounted for the command only
    finally:
        node.md("rm", "-f", "fs")


def test_version_info_events(node):
    since = f"{time.time() - 1:.3f}"
    version = node.md("version").stdout
    assert version.startswith("Client:\n Version:") and "runc:" in version
    node.md("run", "--name", "ev", "--network", "none", "busybox", "sh", "-c", "exit 2", check=False)
    node.md("rm", "ev")
    info = node.md("info").stdout
    for line in ("Cgroup Version: 1", "Storage Driver: overlay", "Runtimes: builtin runc",
                 "Logging Driver: json-file", "Firewall Backend: iptables", "Containers: 0"):
        assert line in info, info
    out = node.md("events", "--since", since, "--until", f"{time.time():.3f}").stdout.splitlines()
    actions = [l.split()[2] for l in out]
    assert actions == ["create", "start", "die", "destroy"], out
    assert "(exitCode=2, image=busybox, name=ev)" in out[2]
    node.md("run", "--rm", "--name", "gone", "--network", "none", "busybox", "true")
    out = node.md("events", "--since", since, "--until", f"{time.time():.3f}", "--filter",
                  "container=gone").stdout.splitlines()
    assert [l.split()[2] for l in out] == ["create", "start", "die", "destroy"]  # --rm too
    only = node.md("events", "--since", since, "--until", f"{time.time():.3f}", "--filter",
                   "event=die", "--format", "{{.Action}} {{.Actor.Attributes.name}}").stdout
    assert only == "die ev\ndie gone\n"
    proc = node.md("events", "--filter", "colour=red", "--until", "0s", check=False)
    assert proc.returncode == 1 and "'colour=red'" in proc.stderr


def test_as_a_newcomer_runs_it(node):
    argv, env = newcomer(node)
    node.run([*argv, "create", "--name", "nc", "busybox", "sh", "-c", "echo hi >&2"], env=env)
    proc = node.run([*argv, "start", "-a", "nc"], env=env)
    assert proc.stderr == "hi\n"
    assert node.run([*argv, "logs", "nc"], env=env).stderr == "hi\n"
    assert node.run([*argv, "wait", "nc"], env=env).stdout == "0\n"
    node.run([*argv, "rm", "nc"], env=env)
    assert io.StringIO(node.run([*argv, "info"], env=env).stdout).readline() == "Server:\n"
