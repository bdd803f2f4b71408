"""Secure defaults (issue 6), each checked on a real container or a real call:
Docker's capability set, Docker's no_new_privs default (off), no way to change its own network,
runc's masked paths, a read-only /sys, private state files, bare plugin
types, and plugins that see PATH and CNI_* but not the caller's secrets.
Archives that would write outside their directory are in test_hostile.py."""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from harness import REFERENCE_CNI, VENV_BIN

NOOP = Path(__file__).resolve().parent / "plugins" / "noop"

# Docker's default capabilities (moby's oci/caps/defaults.go), by number:
# CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, FSETID 4, KILL 5, SETGID 6, SETUID 7,
# SETPCAP 8, NET_BIND_SERVICE 10, NET_RAW 13, SYS_CHROOT 18, MKNOD 27,
# AUDIT_WRITE 29, SETFCAP 31. `docker run busybox grep Cap /proc/self/status`
# shows this very mask.
DOCKER_CAPS = 0x00000000A80425FB

# One shell run inside the container prints every fact as KEY=VALUE.
PROBE = r"""
for k in CapInh CapPrm CapEff CapBnd CapAmb NoNewPrivs; do
  echo "$k=$(grep "^$k:" /proc/self/status | tr -d ' \t' | cut -d: -f2)"
done
echo "linkadd=$(ip link add probe0 type bridge 2>&1)"
echo "addradd=$(ip addr add 10.99.99.9/24 dev eth0 2>&1)"
echo "linkdown=$(ip link set eth0 down 2>&1)"
echo "eth0=$(cat /sys/class/net/eth0/operstate)"
for p in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do
  echo "$p=$(head -c 64 $p 2>/dev/null | wc -c)"
done
echo "/sys/firmware=$(ls -A /sys/firmware 2>/dev/null | wc -l)"
touch /sys/probe 2>/dev/null; echo "sysw=$?"
mkdir /sys/fs/cgroup/probe 2>/dev/null; echo "cgroupw=$?"
echo 1 > /proc/sys/net/ipv4/ip_forward 2>/dev/null; echo "procsysw=$?"
echo 1 > /proc/sysrq-trigger 2>/dev/null; echo "sysrq=$?"
grep -E ' /sys (sysfs|.*) ' /proc/mounts | head -1 | cut -d' ' -f4 | cut -d, -f1 | sed 's/^/sysmount=/'
"""


def _facts(node, runtime: str) -> dict:
    out = node.md("run", "--rm", "--runtime", runtime, "busybox", "sh", "-c", PROBE).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="module", params=["builtin", "runc"])
def facts(request, tmp_path_factory):
    """One bridge container per runtime: every container check reads it."""
    from harness import Node
    node = Node.create(tmp_path_factory.mktemp(f"secure-{request.param}") / "node")
    try:
        yield _facts(node, request.param)
        left = node.leftovers()
    finally:
        node.destroy()
    assert not left, left


def test_capabilities_are_dockers_default_set(facts):
    assert int(facts["CapEff"], 16) == DOCKER_CAPS, facts
    assert int(facts["CapPrm"], 16) == DOCKER_CAPS
    assert int(facts["CapBnd"], 16) == DOCKER_CAPS
    assert int(facts["CapAmb"], 16) == 0


def test_no_new_privs_off_as_in_docker(facts):
    """Docker sets no_new_privs only with --security-opt no-new-privileges, so
    an image's setuid binaries (su, sudo, passwd) work; what they can gain is
    bounded by the capability set above (test_images_real.py runs a setuid
    root binary as a user and checks its capabilities are Docker's 14)."""
    assert facts["NoNewPrivs"] == "0"


def test_container_cannot_change_its_network(facts):
    """No CAP_NET_ADMIN: no new link, no address, eth0 stays up."""
    for attempt in ("linkadd", "addradd", "linkdown"):
        assert "Operation not permitted" in facts[attempt], facts  # EPERM, not a missing tool
    assert facts["eth0"] == "up"


@pytest.mark.parametrize("path", ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug"])
def test_masked_paths_read_empty(facts, path):
    assert facts[path] == "0", facts


def test_sys_firmware_masked_and_sys_read_only(facts):
    assert facts["/sys/firmware"] == "0"
    assert facts["sysw"] != "0" and facts["cgroupw"] != "0"
    assert facts["sysmount"] == "ro"


def test_proc_sys_and_sysrq_read_only(facts):
    assert facts["procsysw"] != "0" and facts["sysrq"] != "0"


# --- state on disk ------------------------------------------------------------------

# Files that leave the state directory's privacy on purpose: bind-mounted into
# the container, where any user of the image must be able to read them.
CONTAINER_FILES = {"hosts", "hostname", "resolv.conf"}


def _private_violations(base: Path) -> list[str]:
    """Directories not 0700 and files not 0600 under base; image trees and
    container roots (the image's own modes) and pinned namespaces (nsfs
    mounts) are what containers see, not state."""
    bad = []
    for dirpath, dirnames, filenames in os.walk(base):
        rel = os.path.relpath(dirpath, base)
        parts = rel.split(os.sep)
        # a container's overlay (upper, work, rootfs) and an image's rootfs
        dirnames[:] = [d for d in dirnames if not (
            d in ("upper", "work", "rootfs", "diff") and (parts[:1] in (["containers"], ["images"])))]
        for name in dirnames:
            st = os.lstat(os.path.join(dirpath, name))
            mode = stat.S_IMODE(st.st_mode)
            if mode != 0o700 and not stat.S_ISLNK(st.st_mode):   # images/l/: links to layers
                bad.append(f"{os.path.join(rel, name)}/ {mode:04o}")
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode) or (parts[:1] == ["netns"] and st.st_dev != os.lstat(dirpath).st_dev):
                continue
            if parts[:1] == ["containers"] and name in CONTAINER_FILES:
                continue
            if stat.S_IMODE(st.st_mode) != 0o600:
                bad.append(f"{os.path.join(rel, name)} {stat.S_IMODE(st.st_mode):04o}")
    return bad


def test_state_directories_0700_and_files_0600(node):
    """After a published, bridged, running container: the state root, the
    runtime root and the CNI cache hold nothing group- or world-readable."""
    node.md("run", "-d", "--name", "web", "-p", "8080:80", "busybox", "httpd", "-f", "-p", "80")
    node.md("network", "create", "--subnet", "10.78.0.0/24", "priv")
    try:
        bad = []
        for base in (node.state_root, node.run_root, node.cni_cache):
            bad += [f"{base.name}: {b}" for b in _private_violations(base)]
        assert not bad, bad
    finally:
        node.md("rm", "-f", "web")
        node.md("network", "rm", "priv")


# --- plugins --------------------------------------------------------------------------

def _stand_in(node, *, environ: bool) -> tuple[dict, Path]:
    """The stand-in plugin in a private bin directory, logging its calls, and
    a network `sd` that uses it; returns the environment and the log."""
    bindir = node.root / "bin"
    bindir.mkdir(exist_ok=True)
    shutil.copy(NOOP, bindir / "noop")
    log = node.root / "calls.jsonl"
    (bindir / "noop.debug").write_text(json.dumps({"log": str(log), "environ": environ}))
    (node.cni_conf / "10-sd.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "sd", "plugins": [{"type": "noop"}]}))
    return node.env(CNI_PATH=f"{bindir}:{VENV_BIN}:{REFERENCE_CNI}"), log


def test_plugins_get_cni_variables_and_path_not_the_callers_environment(node):
    env, log = _stand_in(node, environ=True)
    env["MD_SECRET_TOKEN"] = "hunter2"
    env["AWS_SECRET_ACCESS_KEY"] = "hunter3"
    node.md("run", "--rm", "--network", "sd", "busybox", "true", env=env)
    node.md("cni", "validate", node.cni_conf / "10-sd.conflist", env=env)  # the VERSION probe
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert {c["command"] for c in calls} >= {"ADD", "DEL", "VERSION"}, calls
    for call in calls:
        names = set(call["environ"])
        assert "hunter2" not in json.dumps(call) and "hunter3" not in json.dumps(call)
        extra = {n for n in names if not n.startswith("CNI_")} - {"PATH", "MINIDOCKER_RUN"}
        # the interpreter of the stand-in may add its own (LC_CTYPE)
        assert extra <= {"LC_CTYPE"}, (call["command"], sorted(extra))
        assert names >= {"CNI_COMMAND", "CNI_PATH", "PATH"}
    add = next(c for c in calls if c["command"] == "ADD")
    assert {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"} <= set(add["environ"])


@pytest.mark.parametrize("exec_", ["in-process", "exec"])
def test_ipam_delegate_of_cni_bridge_gets_no_secrets(node, exec_):
    """cni-bridge runs inside minidocker's process by default: the IPAM
    delegate it executes must not inherit minidocker's environment."""
    env, log = _stand_in(node, environ=True)
    (node.root / "bin" / "noop.debug").write_text(json.dumps({
        # a delegate reads the whole config: its tag is the top-level type
        "log": str(log), "environ": True, "plugins": {"cni-bridge": {"ADD": {"result": {
            "cniVersion": "1.0.0", "ips": [{"address": "10.79.0.5/24", "gateway": "10.79.0.1"}]}}}}}))
    (node.cni_conf / "10-sd.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "sd", "plugins": [
            {"type": "cni-bridge", "bridge": "sdbr0", "isGateway": True, "ipam": {"type": "noop"}}]}))
    env["MD_SECRET_TOKEN"] = "hunter2"
    if exec_ == "exec":
        env["MINIDOCKER_CNI_EXEC"] = "1"
    node.md("run", "--rm", "--network", "sd", "busybox", "true", env=env)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert {c["command"] for c in calls} >= {"ADD", "DEL"}, calls
    for call in calls:
        assert "MD_SECRET_TOKEN" not in call["environ"], call["command"]
        assert "MINIDOCKER_ROOT" not in call["environ"]
    node.sh("ip", "link", "del", "sdbr0")


def test_passenv_names_what_a_plugin_may_see(node):
    """An operator can hand a plugin a variable on purpose, by name only."""
    env, log = _stand_in(node, environ=True)
    env.update(HTTPS_PROXY="http://proxy:3128", MD_SECRET_TOKEN="hunter2",
               MINIDOCKER_CNI_PASSENV="HTTPS_PROXY")
    node.md("run", "--rm", "--network", "sd", "busybox", "true", env=env)
    for call in (json.loads(line) for line in log.read_text().splitlines()):
        assert call["environ"].get("HTTPS_PROXY") == "http://proxy:3128"
        assert "MD_SECRET_TOKEN" not in call["environ"]


@pytest.mark.parametrize("ptype", ["../noop", "/bin/sh", "bin/noop", ".."])
def test_plugin_type_with_a_path_is_refused_by_validate(node, ptype):
    env, log = _stand_in(node, environ=False)
    bad = node.root / "bad.conflist"
    bad.write_text(json.dumps({"cniVersion": "1.0.0", "name": "bad", "plugins": [{"type": ptype}]}))
    proc = node.md("cni", "validate", bad, env=env, check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"invalid plugin type {ptype!r}" in proc.stderr
    assert not log.exists()  # nothing ran


@pytest.mark.parametrize("ptype", ["../noop", "/bin/sh", "bin/noop"])
def test_plugin_type_with_a_path_is_refused_by_the_executor(tmp_path, ptype):
    """Even a config object that skipped validation never runs a path."""
    from cni.conf import NetworkConfigList
    from cni.errors import CNIError
    from minidocker.network.cni.executor import CNIExecutor, RuntimeConf
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shutil.copy(NOOP, bindir / "noop")
    net = NetworkConfigList.from_bytes(json.dumps(
        {"cniVersion": "1.0.0", "name": "t", "plugins": [{"type": "noop"}]}).encode())
    net.plugins[0]["type"] = ptype
    netns = tmp_path / "netns"
    netns.write_text("")
    ex = CNIExecutor(tmp_path / "net.d", tmp_path / "cache", [str(bindir)], timeout=10)
    with pytest.raises(CNIError, match="invalid plugin type"):
        ex.add(net, RuntimeConf("c1", str(netns), "eth0", [], {}))
    with pytest.raises(CNIError, match="invalid plugin type"):
        ex.version_info(ptype)
