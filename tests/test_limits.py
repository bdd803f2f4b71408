"""Resource limits and the device cgroup (issue 12), with both runtimes.

Docker's documented behaviour: `--memory 32m` puts a hard limit the OOM
killer enforces (exit 137, `inspect` State.OOMKilled true), `--memory-swap`
counts memory plus swap (default twice --memory), `--cpus` is a CFS quota
over a 100 ms period, `--cpu-shares` a relative weight, `--pids-limit` a
ceiling on processes. Every container's device cgroup holds Docker's
allow-list: any char or block node may be made (mknod), only the listed ones
opened. Bad values exit 125 with one line and create nothing."""
from __future__ import annotations

import json
import os
import time

import pytest

from mdtools import assert_refused, newcomer

RUNTIMES = ["builtin", "runc"]

# Docker's default device rules (moby oci/defaults.go, runc's AllowedDevices),
# as the v1 devices cgroup lists them.
DOCKER_DEVICES = {"c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm",
                  "c 1:9 rwm", "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm",
                  "c 10:200 rwm"}


@pytest.fixture(params=RUNTIMES)
def runtime(request):
    return request.param


def _inspect(node, ref) -> dict:
    return json.loads(node.md("inspect", ref).stdout)[0]


def _cgroup_dir(pid: int, controller: str) -> str:
    """The host directory of pid's cgroup in a v1 hierarchy."""
    with open(f"/proc/{pid}/cgroup") as fh:
        for line in fh:
            _, names, path = line.rstrip("\n").split(":", 2)
            if controller in names.split(","):
                return f"/sys/fs/cgroup/{controller}{path}"
    raise AssertionError(f"{pid} is in no {controller} cgroup")


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def _running(node, runtime, *opts, cmd=("sleep", "60")) -> tuple[str, int]:
    cid = node.md("run", "-d", "--runtime", runtime, "--network", "none", *opts, "busybox",
                  *cmd).stdout.strip()
    return cid, _inspect(node, cid)["State"]["Pid"]


def _host_openable(tmp_path, kind: str, candidates) -> tuple[int, int]:
    """A device outside the allow-list that the host itself can open (so a
    refusal inside comes from the container's cgroup, not from the host)."""
    import stat
    for major, minor in candidates:
        node = tmp_path / f"probe-{kind}-{major}-{minor}"
        os.mknod(node, 0o600 | (stat.S_IFBLK if kind == "b" else stat.S_IFCHR),
                 os.makedev(major, minor))
        try:
            os.close(os.open(node, os.O_RDONLY))
            return major, minor
        except OSError:
            continue
        finally:
            node.unlink()
    pytest.fail(f"no {kind} device the host can open among {candidates}")


def host_devices(tmp_path) -> dict:
    blocks = [tuple(map(int, _read(f"/sys/block/{n}/dev").split(":")))
              for n in sorted(os.listdir("/sys/block"))]
    return {"b": _host_openable(tmp_path, "b", blocks),
            "c": _host_openable(tmp_path, "c", [(1, 11), (10, 237), (7, 0)])}  # kmsg, loop-control, vcs


def open_script(devices: dict) -> str:
    (bmaj, bmin), (cmaj, cmin) = devices["b"], devices["c"]
    return (f"mknod /tmp/disk b {bmaj} {bmin} && echo made-disk; "
            "head -c 1 /tmp/disk >/dev/null; "
            f"mknod /tmp/chr c {cmaj} {cmin} && echo made-chr; head -c 0 /tmp/chr; "
            "mknod /tmp/null c 1 3 && echo hi > /tmp/null && echo null-ok; "
            "head -c 4 /dev/zero | wc -c")


def test_device_cgroup_is_dockers_allow_list(node, runtime):
    cid, pid = _running(node, runtime)
    try:
        listed = set(_read(os.path.join(_cgroup_dir(pid, "devices"), "devices.list")).splitlines())
        assert listed == DOCKER_DEVICES
        assert _inspect(node, cid)["Cgroups"]["devices"] == _cgroup_dir(pid, "devices")
    finally:
        node.md("rm", "-f", cid)


def test_mknod_allowed_but_opening_a_host_device_is_not(node, runtime, tmp_path):
    """CAP_MKNOD stays (Docker's default set), the cgroup stops the open:
    EPERM for a block and a char device the host can open, the allowed
    nodes still work; --privileged opens them."""
    devices = host_devices(tmp_path)
    proc = node.md("run", "--rm", "--runtime", runtime, "--network", "none", "busybox",
                   "sh", "-c", open_script(devices), check=False)
    assert proc.stdout.split() == ["made-disk", "made-chr", "null-ok", "4"], proc
    assert proc.stderr.count("Operation not permitted") == 2, proc.stderr
    assert "/tmp/disk" in proc.stderr and "/tmp/chr" in proc.stderr
    proc = node.md("run", "--rm", "--runtime", runtime, "--network", "none", "--privileged",
                   "busybox", "sh", "-c", open_script(devices), check=False)
    assert proc.stdout.split() == ["made-disk", "made-chr", "null-ok", "4"], proc
    assert "Operation not permitted" not in proc.stderr


def test_exec_joins_the_container_cgroups(node, runtime, tmp_path):
    """`exec` processes are held by the same allow-list and pids limit."""
    major, minor = host_devices(tmp_path)["c"]
    cid, pid = _running(node, runtime, "--pids-limit", "7")
    try:
        proc = node.md("exec", cid, "sh", "-c", f"mknod /tmp/chr c {major} {minor}; "
                       "head -c0 /tmp/chr; cat /proc/self/cgroup", check=False)
        assert "Operation not permitted" in proc.stderr
        ours = open(f"/proc/{pid}/cgroup").read()
        for controller in ("devices", "pids", "memory"):
            line = next(l for l in ours.splitlines() if f":{controller}:" in l)
            assert line in proc.stdout
    finally:
        node.md("rm", "-f", cid)


def test_memory_hog_is_oom_killed(node, runtime):
    proc = node.md("run", "--name", "hog", "--runtime", runtime, "--network", "none",
                   "--memory", "32m", "busybox", "dd", "if=/dev/zero", "of=/dev/null",
                   "bs=64M", "count=1", check=False)
    assert proc.returncode == 137, proc
    info = _inspect(node, "hog")
    assert info["State"]["OOMKilled"] is True and info["State"]["ExitCode"] == 137
    assert (info["HostConfig"]["Memory"], info["HostConfig"]["MemorySwap"]) == (32 << 20, 64 << 20)
    node.md("rm", "hog")
    node.md("run", "--name", "fits", "--runtime", runtime, "--network", "none", "-m", "32m",
            "busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=4M", "count=1")
    assert _inspect(node, "fits")["State"]["OOMKilled"] is False
    node.md("rm", "fits")


def test_fork_bomb_is_contained(node, runtime):
    cid, pid = _running(node, runtime, "--pids-limit", "50",
                        cmd=("sh", "-c", "b() { b | b & }; b; sleep 60"))
    try:
        pids_dir = _cgroup_dir(pid, "pids")
        deadline = time.monotonic() + 20
        while "max 0" in _read(os.path.join(pids_dir, "pids.events")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert int(_read(os.path.join(pids_dir, "pids.events")).split()[1]) > 0  # forks refused
        assert int(_read(os.path.join(pids_dir, "pids.current"))) <= 50
        assert _read(os.path.join(pids_dir, "pids.max")).strip() == "50"
    finally:
        node.md("rm", "-f", cid)


def test_limits_reach_the_cgroup_and_inspect(node, runtime):
    cid, pid = _running(node, runtime, "--memory", "64m", "--memory-swap", "128m", "--cpus", "0.5",
                        "--cpu-shares", "512", "--pids-limit", "77")
    try:
        mem, cpu = _cgroup_dir(pid, "memory"), _cgroup_dir(pid, "cpu")
        assert int(_read(f"{mem}/memory.limit_in_bytes")) == 64 << 20
        assert int(_read(f"{mem}/memory.memsw.limit_in_bytes")) == 128 << 20
        assert (int(_read(f"{cpu}/cpu.cfs_quota_us")), int(_read(f"{cpu}/cpu.cfs_period_us"))) \
            == (50000, 100000)
        assert int(_read(f"{cpu}/cpu.shares")) == 512
        assert _read(f"{_cgroup_dir(pid, 'pids')}/pids.max").strip() == "77"
        hc = _inspect(node, cid)["HostConfig"]
        assert {k: hc[k] for k in ("Memory", "MemorySwap", "NanoCpus", "CpuShares", "PidsLimit")} \
            == {"Memory": 64 << 20, "MemorySwap": 128 << 20, "NanoCpus": 500000000,
                "CpuShares": 512, "PidsLimit": 77}
        dirs = _inspect(node, cid)["Cgroups"]
    finally:
        node.md("rm", "-f", cid)
    assert not any(os.path.exists(d) for d in dirs.values())  # removed with the container


def test_no_limits_by_default(node):
    cid, pid = _running(node, "builtin", "--memory-swap", "-1", "-m", "1g")
    try:
        assert _read(f"{_cgroup_dir(pid, 'pids')}/pids.max").strip() == "max"
        assert int(_read(f"{_cgroup_dir(pid, 'cpu')}/cpu.cfs_quota_us")) == -1
        hc = _inspect(node, cid)["HostConfig"]
        assert (hc["Memory"], hc["MemorySwap"], hc["PidsLimit"]) == (1 << 30, -1, None)
    finally:
        node.md("rm", "-f", cid)


@pytest.mark.parametrize("opts, named", [
    (["--memory", "32x"], "'32x'"),
    (["-m", "1k"], "6MB"),
    (["--memory-swap", "64m"], "needs --memory"),
    (["-m", "32m", "--memory-swap", "16m"], "'16m'"),
    (["--cpus", "0"], "'0'"),
    (["--cpus", "999"], "'999'"),
    (["--cpus", "many"], "'many'"),
    (["--cpu-shares", "lots"], "'lots'"),
    (["--cpu-shares", "1"], "'1'"),
    (["--pids-limit", "ten"], "'ten'"),
])
def test_bad_limits_are_refused(node, opts, named):
    assert_refused(node, ["run", "--rm", *opts, "busybox", "true"], named)


def test_as_a_newcomer_runs_it(node):
    """README usage under `env -i`: the cgroup parent a private state root
    gets by default (`minidocker-<crc32 of the root>`), nothing left."""
    from minidocker.paths import default_cgroup_parent
    argv, env = newcomer(node)
    proc = node.run([*argv, "run", "--rm", "--network", "none", "--memory", "32m", "--pids-limit", "20",
                     "busybox", "sh", "-c", "cat /proc/self/cgroup"], env=env)
    parent = default_cgroup_parent(node.state_root)
    assert parent.startswith("minidocker-") and f"/{parent}/" in proc.stdout
    assert default_cgroup_parent("/var/lib/minidocker") == "minidocker"


def test_cgroup_v2_files(tmp_path, monkeypatch):
    """On a cgroup v2 host (not this one) the same limits go to the unified
    files, the controllers enabled down the path: checked on a plain
    directory tree standing in for /sys/fs/cgroup."""
    from minidocker.runtime import cgroups
    monkeypatch.setenv("MINIDOCKER_CGROUP_FS", str(tmp_path))
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    assert cgroups.version() == 2
    target = tmp_path / "user.slice" / "minidocker" / "abc"
    cgroups.setup({cgroups.UNIFIED: str(target)},
                  {"memory": {"limit": 64 << 20, "swap": 96 << 20}, "cpu": {"shares": 1024,
                   "quota": 50000, "period": 100000}, "pids": {"limit": 50}})
    files = {p.name: p.read_text() for p in target.iterdir()}
    assert files == {"memory.max": str(64 << 20), "memory.swap.max": str(32 << 20),
                     "cpu.weight": "39", "cpu.max": "50000 100000", "pids.max": "50"}
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+pids"  # the last write
    assert cgroups.v2_cpu_weight(2) == 1 and cgroups.v2_cpu_weight(262144) == 10000


def test_cgroup_mounts_without_mountinfo(tmp_path, monkeypatch):
    """The hierarchies found where they are conventionally mounted (checked
    by statfs) are the ones /proc/self/mountinfo lists; anything else (a
    plain tree, a missing hierarchy) falls back to reading mountinfo."""
    from minidocker.runtime import cgroups
    found = cgroups._standard_mounts()
    listed = cgroups._mountinfo_mounts()
    assert found and set(cgroups.V1_CONTROLLERS) <= set(found)
    assert all(listed[name] == point for name, point in found.items())
    monkeypatch.setenv("MINIDOCKER_CGROUP_FS", str(tmp_path))
    assert cgroups._standard_mounts() is None
    (tmp_path / "cpu").mkdir()  # a directory, not a cgroup file system
    assert cgroups._standard_mounts() is None
