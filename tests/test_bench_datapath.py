"""`scripts/bench datapath`'s plumbing, run as a user runs it (`env -i`):
one path, a one-second iperf3 test, no Docker. It must print a throughput
figure and leave nothing behind (namespaces, servers, shims, containers,
mounts, cgroups, its temporary directory), also when Ctrl-C comes in the
middle of a measurement; bad options are refused before anything is made.
Performance is the bench's business: nothing here is timed."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from harness import NETNS_DIR, REPO, cgroup_parents

BENCH = str(REPO / "scripts" / "bench")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ONE_PATH = ["datapath", "--path", "bridge", "--runs", "1", "--rounds", "50", "--no-docker"]
#: the paths through the floor host's hand-written NAT: masquerade, DNAT
#: from localhost (which brings the host-address path, DNAT from outside)
NAT_PATHS = ["--path", "localhost", "--path", "egress"]
#: The servers the bench starts outside containers (bench/probes.py), and
#: --profile's recorder (bench/kprofile.py).
SERVERS = ("iperf3 -s -p 5201", "socat TCP-LISTEN:7,fork,reuseaddr PIPE", "perf record -a")
TIMEOUT = 180


def _env(tmp_path: Path) -> dict:
    return {"PATH": PATH, "TMPDIR": str(tmp_path)}


def _namespaces(output: str) -> list[str]:
    found = re.search(r"throwaway namespaces: (.+)", output)
    assert found, output
    return found.group(1).split()


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def _left(tmp_path: Path, names: list[str], since: float) -> list[str]:
    """What of the bench's run is still there."""
    found = [f"netns {n}" for n in names if (NETNS_DIR / n).exists()]
    for proc in psutil.process_iter(["create_time"]):
        cmd = _cmdline(proc)
        if (proc.info["create_time"] or 0) >= since and any(s in cmd for s in SERVERS):
            found.append(f"server {proc.pid}: {cmd}")
        elif str(tmp_path) in cmd:
            found.append(f"process {proc.pid}: {cmd}")
    with open("/proc/self/mountinfo") as fh:
        found += [f"mount {line.split()[4]}" for line in fh if str(tmp_path) in line.split()[4]]
    found += [f"cgroup {c}" for n in names for c in cgroup_parents(f"minidocker-{n}")]
    found += [f"file {p}" for p in tmp_path.iterdir()]
    return found


def test_one_path_gives_a_throughput_figure_and_leaves_nothing(tmp_path):
    """With --profile, also the CPU per GB of every host and minidocker's
    per-family shares (the bridged path crosses the bridge and its hooks).
    The NAT'ed paths answer on every host, the floor's hand-written rules
    included."""
    since = time.time() - 1
    proc = subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in _env(tmp_path).items()),
                           BENCH, *ONE_PATH, *NAT_PATHS, "--seconds", "1", "--profile"],
                          capture_output=True, text=True, timeout=TIMEOUT)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for label in ("container -> container, one bridge", "host -> published port, host address",
                  "host -> published port, localhost", "container -> outside"):
        row = re.search(rf"^{label}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+n/a\s+([\d.]+)x\s+([\d.]+)x",
                        proc.stdout, re.M)
        assert row, out
        bare, floor, ours, vs_bare, vs_floor = map(float, row.groups())
        assert bare > 0 and floor > 0 and ours > 0, out
        assert vs_bare == pytest.approx(ours / bare, abs=0.01)
        assert vs_floor == pytest.approx(ours / floor, abs=0.01)
    assert "note:" not in out, out          # every probe of the path answered
    assert re.search(r"load average [\d.]+ at the end", proc.stdout), out
    profiled = re.search(r"^container -> container, one bridge\s+(\d+)\s+(\d+)\s+(\d+)\s+n/a\s+"
                         r"[\d.]+x\s+[\d.]+x\s+([\d.]+) / ([\d.]+) / [\d.]+ / [\d.]+ / [\d.]+\s+([\d.]+)$",
                         proc.stdout, re.M)
    assert profiled, out
    bare_ms, floor_ms, ours_ms, br_netfilter, bridge, total = map(float, profiled.groups())
    assert bare_ms > 0 and floor_ms > 0 and ours_ms > 0
    assert bridge > 0 and 0 < total < 100
    assert _left(tmp_path, _namespaces(out), since) == []


def test_profile_sorts_kernel_functions_into_families():
    from bench import kprofile
    script = "\n".join([
        "  iperf3  ffffffff81 br_nf_pre_routing", "  iperf3  ffffffff82 br_handle_frame",
        "  iperf3  ffffffff83 __nf_conntrack_find_get", "  iperf3  ffffffff84 nft_do_chain",
        "  iperf3  ffffffff85 nf_hook_slow", "  iperf3  ffffffff86 tcp_sendmsg_locked",
        "  iperf3  ffffffff87 [unknown]", " swapper  ffffffff88 br_handle_frame", ""])
    total, families = kprofile.tally(script, "iperf3")
    assert total == 7
    assert dict(families) == {"br_netfilter": 1, "bridge": 1, "conntrack": 1, "rules": 1, "nf hooks": 1}
    assert kprofile.Profile(999, families, 2.0).cpu_ms_per_gb() == pytest.approx(500.0)
    assert kprofile.Profile(10, families, 0.0).cpu_ms_per_gb() is None


def test_profile_without_perf_is_refused_in_one_line(monkeypatch, capsys):
    import shutil
    from bench import datapath
    real = shutil.which
    monkeypatch.setattr(datapath.shutil, "which", lambda t: None if t == "perf" else real(t))
    assert datapath.main(["--profile", "--no-docker"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "perf missing" in err, err


def test_ctrl_c_in_a_measurement_removes_everything(tmp_path):
    """SIGINT while iperf3 runs (a long test, recorded by perf): exit 130,
    nothing left (perf stopped, its data removed)."""
    since = time.time() - 1
    proc = subprocess.Popen([BENCH, *ONE_PATH, "--seconds", "60", "--profile"], env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(TIMEOUT, proc.kill)
    watchdog.start()
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "throwaway namespaces:" in line:
                break
        names = _namespaces("".join(lines))
        deadline = time.monotonic() + 60
        while not any(_cmdline(p).startswith("iperf3 -c") and p.create_time() >= since
                      for p in psutil.process_iter()):
            assert time.monotonic() < deadline, "no iperf3 client started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        rest = proc.stdout.read()
        assert proc.wait(timeout=TIMEOUT) == 130, "".join(lines) + rest
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    assert "interrupted; everything it made is removed" in rest, rest
    assert _left(tmp_path, names, since) == []


@pytest.mark.parametrize("args, named", [
    (["--seconds", "0"], "--seconds 0: give 0.1 to 600"),
    (["--runs", "0"], "--runs 0: give 1 to 100"),
    (["--path", "nowhere"], "invalid choice: 'nowhere'"),
    (["--backend", "ipvs"], "invalid choice: 'ipvs'"),
])
def test_bad_options_are_refused_in_one_line_before_anything_is_made(tmp_path, args, named):
    proc = subprocess.run([BENCH, "datapath", *args], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("bench datapath: ")
    assert named in proc.stderr
    assert list(tmp_path.iterdir()) == []
    assert os.path.isdir(tmp_path)
