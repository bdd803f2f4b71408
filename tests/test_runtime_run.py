"""Foreground `run` with both runtimes: isolation, defaults, network modes,
options, exit codes, stdin and signals."""
from __future__ import annotations

import json
import os
import signal

import pytest

from harness import UPLINK
from mdtools import wait_for

RUNTIMES = ["builtin", "runc"]


@pytest.fixture(params=RUNTIMES)
def runtime(request):
    return request.param


def sh(node, runtime, script, *opts, check=True, **kw):
    return node.md("run", "--rm", "--runtime", runtime, *opts, "busybox", "sh", "-c", script,
                   check=check, **kw)


def test_exit_code_and_streams(node, runtime):
    proc = sh(node, runtime, "echo out; echo err >&2; exit 42", check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (42, "out\n", "err\n")
    assert sh(node, runtime, "true").returncode == 0


def test_network_none_only_lo_up(node, runtime):
    out = sh(node, runtime, "ip -o link show; ip -o addr show", "--network", "none").stdout
    links = [l.split(":")[1].strip() for l in out.splitlines() if ": <" in l]
    assert links == ["lo"], out
    assert "UP" in out.splitlines()[0] and "127.0.0.1/8" in out


def test_network_host_sees_node_links(node, runtime):
    out = sh(node, runtime, "ip -o link show", "--network", "host").stdout
    names = {l.split(":")[1].strip().split("@")[0] for l in out.splitlines()}
    assert names == node.link_names() == {"lo", UPLINK}


def test_namespaces_are_new(node, runtime):
    out = sh(node, runtime, "echo $$; for n in pid mnt uts ipc net; do readlink /proc/self/ns/$n; done").stdout
    lines = out.split()
    assert lines[0] == "1"
    ours = [os.readlink(f"/proc/self/ns/{n}") for n in ("pid", "mnt", "uts", "ipc", "net")]
    for inside, outside in zip(lines[1:], ours):
        assert inside != outside
    host = sh(node, runtime, "readlink /proc/self/ns/net", "--network", "host").stdout.strip()
    assert host == f"net:[{os.stat(node.netns).st_ino}]"  # --network host: the node's own


def test_docker_defaults(node, runtime):
    script = ("grep -E '^(CapBnd|CapEff|CapPrm|NoNewPrivs):' /proc/self/status; "
              "wc -c < /proc/keys; ls /sys/firmware | wc -l; "
              "echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo proc-sys-rw || echo proc-sys-ro; "
              "touch /sys/x 2>/dev/null && echo sys-rw || echo sys-ro; "
              "echo x > /proc/sysrq-trigger 2>/dev/null && echo sysrq-rw || echo sysrq-ro; "
              "ls -l /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty | cut -c1; "
              "grep -E ' /dev (tmpfs)| /dev/pts | /dev/shm | /dev/mqueue | / overlay' /proc/mounts | cut -d' ' -f2,3")
    out = sh(node, runtime, script).stdout.split("\n")
    assert out[:4] == ["CapPrm:\t00000000a80425fb", "CapEff:\t00000000a80425fb",
                       "CapBnd:\t00000000a80425fb", "NoNewPrivs:\t0"]
    assert out[4:10] == ["0", "0", "proc-sys-ro", "sys-ro", "sysrq-ro", "c"]
    assert set(out[10:15]) == {"c"}
    assert sorted(out[15:20]) == ["/ overlay", "/dev tmpfs", "/dev/mqueue mqueue", "/dev/pts devpts",
                                  "/dev/shm tmpfs"]


def test_generated_etc_files_and_hostname(node, runtime):
    out = sh(node, runtime, "hostname; cat /etc/hostname; grep -c localhost /etc/hosts; "
             "grep -c nameserver /etc/resolv.conf", "--hostname", "box1").stdout.split()
    assert out[:2] == ["box1", "box1"] and int(out[2]) >= 1 and int(out[3]) >= 1
    short = sh(node, runtime, "hostname").stdout.strip()
    assert len(short) == 12 and all(c in "0123456789abcdef" for c in short)


def test_env_workdir_entrypoint(node, runtime, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("# comment\n\nFROM_FILE=yes\nB=file\n")
    out = node.md("run", "--rm", "--runtime", runtime, "-e", "A=1", "-e", "B=two words",
                  "--env-file", env_file, "-w", "/tmp/work", "busybox",
                  "sh", "-c", 'echo "$A|$B|$FROM_FILE|$PATH"; pwd').stdout
    assert out == "1|two words|yes|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n/tmp/work\n"
    out = node.md("run", "--rm", "--runtime", runtime, "--entrypoint", "echo", "busybox",
                  "via", "entrypoint").stdout
    assert out == "via entrypoint\n"


def test_interactive_stdin(node, runtime):
    proc = node.md("run", "--rm", "-i", "--runtime", runtime, "busybox", "sh", "-c", "tr a-z A-Z",
                   input="hello\n")
    assert proc.stdout == "HELLO\n"
    # without -i the container's stdin is empty
    proc = node.md("run", "--rm", "--runtime", runtime, "busybox", "cat", input="ignored\n")
    assert proc.stdout == ""


def test_command_errors_126_127(node, runtime):
    proc = node.md("run", "--rm", "--runtime", runtime, "busybox", "nosuchcommand", check=False)
    assert proc.returncode == 127 and "nosuchcommand" in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("Error: ")
    proc = node.md("run", "--rm", "--runtime", runtime, "busybox", "/etc/passwd", check=False)
    assert proc.returncode == 126 and proc.stderr.startswith("Error: ")
    assert node.md("ps", "-aq").stdout == ""


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 3), (signal.SIGINT, 4)])
def test_foreground_run_forwards_signals(node, runtime, sig, code):
    script = 'trap "exit 3" TERM; trap "exit 4" INT; echo ready; while :; do sleep 0.1; done'
    proc = node.popen([node.env()["PATH"].split(":")[0] + "/minidocker", "run", "--rm",
                       "--runtime", runtime, "busybox", "sh", "-c", script])
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == code
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    wait_for(lambda: node.md("ps", "-aq").stdout == "")


def test_foreground_output_goes_to_the_log_too(node, runtime):
    node.md("run", "--name", "fg", "--runtime", runtime, "busybox", "sh", "-c", "echo one; echo two >&2")
    logs = node.md("logs", "fg")
    assert (logs.stdout, logs.stderr) == ("one\n", "two\n")  # each stream to its own
    info = json.loads(node.md("inspect", "fg").stdout)[0]
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 0
    assert info["State"]["FinishedAt"] >= info["State"]["StartedAt"] > "2000"
    node.md("rm", "fg")


def test_user_from_image_config_gets_no_capabilities(node, runtime, tmp_path):
    # USER is honoured with a name resolved from the image's /etc/passwd
    from mdtools import busybox_tree, docker_save, tree_tar
    tree = busybox_tree(tmp_path / "tree")
    archive = tmp_path / "user.tar"
    archive.write_bytes(docker_save([tree_tar(tree)], {"User": "app", "Cmd": ["id"]}, ["withuser:1"]))
    node.md("load", "-i", archive)
    out = node.md("run", "--rm", "--runtime", runtime, "withuser:1").stdout
    assert out.startswith("uid=1000(app) gid=1000(app)")
    status = node.md("run", "--rm", "--runtime", runtime, "withuser:1", "grep", "CapEff",
                     "/proc/self/status").stdout
    assert status.split()[1] == "0000000000000000"
