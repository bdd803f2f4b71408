"""podman 4.3.1 (rootful, CNI backend) running pods and containers on
cni-bridge, set up as a podman user with a cni-bridge conflist would.

Everything podman keeps lives under the test's node directory: storage, run
root (but the run root), libpod's tmpdir with file locks (not /dev/shm/libpod_lock), the events
log, runc's state (through a `runc` wrapper passing --root: conmon's cleanup
callback cannot carry runtime flags) and a cgroup parent of the test's own.
podman runs in the node's netns, so the plugin's links and rules land there.
What podman 4.3 cannot move is checked and swept by container id instead: the
netns pin in /run/netns and libcni's result cache in /var/lib/cni/results.
There is no registry: the image is a busybox rootfs `podman import`ed, and it
doubles as the pod's infra image (its `/pause` exits on TERM, so `pod rm` is quick).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from harness import CNI_BRIDGE, EXT_ADDR, NODE_ADDR, REFERENCE_CNI, UPLINK, run
from mdtools import busybox_tree, tree_tar, wait_for

IMAGE = "localhost/bb:test"
NET = "mdnet"
SUBNET = "10.66.0.0/24"
CNI_CACHE = Path("/var/lib/cni/results")     # libcni's default; podman 4.3 has no setting for it
# What rootful podman writes by default; with the settings below none of it may appear.
HOST_PATHS = ("/dev/shm/libpod_lock", "/var/lib/containers/storage", "/run/libpod", "/run/containers",
              "/etc/cni/net.d")
# containers/image's blob-info cache: rootful podman 4.3 has no setting for it
# (only the library's SystemContext does), so a test that made it removes it.
BLOB_CACHE = Path("/var/lib/containers/cache")
# cni-bridge's lock dir without MINIDOCKER_RUN; its files carry the netns inode
PLUGIN_LOCKS = Path("/run/minidocker/cni-bridge")
PAUSE = """#!/bin/sh
# the pod's infra process: holds the namespaces, exits at once on TERM
trap 'exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
"""


@pytest.fixture(scope="module")
def image_tar(tmp_path_factory) -> Path:
    """busybox with httpd, a page to serve and an infra command."""
    d = tmp_path_factory.mktemp("podman-image")
    tree = busybox_tree(d / "rootfs")
    os.symlink("busybox", tree / "bin/httpd")
    (tree / "www").mkdir()
    (tree / "www/index.html").write_text("hello from podman\n")
    (tree / "pause").write_text(PAUSE)
    (tree / "pause").chmod(0o755)
    tar = d / "rootfs.tar"
    tar.write_bytes(tree_tar(tree))
    return tar


class Podman:
    """One podman installation confined to the node's directory."""

    def __init__(self, node, *, version: str, backend: str):
        self.node = node
        self.dir = d = node.root / "podman"
        self.cgroup_parent = "/" + node.name
        self.ipam = d / "ipam"
        self.ids: set[str] = set()        # every container id seen: what the sweep looks for
        self.sandboxes: set[str] = set()  # their netns pins
        # podman refuses a runroot over 50 characters (conmon's socket paths): a
        # short one in /tmp, named after the node and removed by the sweep
        self.runroot = Path("/tmp") / f"{node.name}-runroot"
        for sub in ("root", "tmp", "net.d", "plugins", "runtime", "ipam", "home"):
            (d / sub).mkdir(parents=True)
        self.host_before = {p for p in HOST_PATHS if os.path.exists(p)}
        self.blob_cache_before = BLOB_CACHE.exists()
        self.netns_ino = os.stat(node.netns).st_ino
        # the plugin dir podman searches: cni-bridge beside the reference plugins
        os.symlink(CNI_BRIDGE, d / "plugins/cni-bridge")
        for p in Path(REFERENCE_CNI).iterdir():
            os.symlink(p, d / "plugins" / p.name)
        runc = d / "runtime/runc"
        runc.write_text(f'#!/bin/sh\nexec {shutil.which("runc")} --root {node.run_root / "runc"} "$@"\n')
        runc.chmod(0o755)
        self.runtime = str(runc)
        (d / "containers.conf").write_text(f"""\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "{runc}"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/tmp/events.log"
tmp_dir = "{d}/tmp"
lock_type = "file"
# for podman's own environment, so also for conmon's cleanup callback (conmon
# passes on only a few variables): cni-bridge's locks stay in the node's run dir
env = ["MINIDOCKER_RUN={node.run_root}"]
image_copy_tmp_dir = "{d}/tmp"
infra_image = "{IMAGE}"

[network]
network_backend = "cni"
cni_plugin_dirs = ["{d}/plugins"]
network_config_dir = "{d}/net.d"
""")
        (d / "storage.conf").write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{d}/root"\n'
                                        f'runroot = "{self.runroot}"\n')
        (d / "registries.conf").write_text("")
        plugin = {"type": "cni-bridge", "bridge": "mdtbr0", "isGateway": True, "isDefaultGateway": True,
                  "ipMasq": True, "hairpinMode": True, "firewallBackend": backend,
                  "removeIdleBridge": True,
                  "ipam": {"type": "cni-bridge", "dataDir": str(self.ipam), "ranges": [[{"subnet": SUBNET}]]},
                  "capabilities": {"portMappings": True}}
        (d / "net.d" / f"{NET}.conflist").write_text(json.dumps(
            {"cniVersion": version, "name": NET, "plugins": [plugin]}))
        self.env = node.env(CONTAINERS_CONF=d / "containers.conf",
                            CONTAINERS_STORAGE_CONF=d / "storage.conf",
                            CONTAINERS_REGISTRIES_CONF=d / "registries.conf",
                            HOME=d / "home", TMPDIR=d / "tmp")
        self.argv = ["podman", "--root", str(d / "root"), "--runroot", str(self.runroot),
                     "--tmpdir", str(d / "tmp"), "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                     "--runtime", self.runtime, "--network-backend", "cni",
                     "--network-config-dir", str(d / "net.d"), "--storage-driver", "overlay"]
        self.runroot.mkdir()

    def __call__(self, args, *, check=True, timeout=60) -> subprocess.CompletedProcess:
        return self.node.run([*self.argv, *args], env=self.env, check=check, timeout=timeout)

    def inspect(self, ref: str) -> dict:
        info = json.loads(self(["inspect", ref]).stdout)[0]
        self.ids.add(info["Id"])
        if info["NetworkSettings"].get("SandboxKey"):
            self.sandboxes.add(info["NetworkSettings"]["SandboxKey"])
        return info

    def container_ids(self) -> list[str]:
        return self(["ps", "-a", "-q", "--no-trunc"]).stdout.split()

    # --- what must be gone once podman removed its containers -------------
    def leases(self) -> list[str]:
        d = self.ipam / NET
        return sorted(p.name for p in d.iterdir()
                      if p.name != "lock" and not p.name.startswith("last_reserved_ip")) if d.is_dir() else []

    def cache_entries(self) -> list[str]:
        return sorted(p.name for p in CNI_CACHE.iterdir()
                      if any(cid in p.name for cid in self.ids)) if CNI_CACHE.is_dir() else []

    def traces(self) -> dict:
        """Everything of this podman's containers in the node and on the host."""
        node = self.node
        rules = node.iptables_save() + node.nft_ruleset()
        return {"links": sorted(node.link_names() - {"lo", UPLINK}),
                "rules": sorted(cid[:12] for cid in self.ids if cid in rules),
                "leases": self.leases(),
                "cni cache": self.cache_entries(),
                "netns pins": sorted(s for s in self.sandboxes if os.path.exists(s)),
                "processes": [(p.pid, p.name()) for p in _alive(node.processes())],
                "mounts": node.mounts(),
                "runc": node.runc_containers(),
                "containers": self.container_ids(),
                "host paths": sorted({p for p in HOST_PATHS if os.path.exists(p)} - self.host_before),
                "plugin locks outside": sorted(p.name for p in PLUGIN_LOCKS.glob(f"*-{self.netns_ino}.lock"))}

    def assert_clean(self) -> None:
        """conmon and its cleanup callback exit just after podman returns: wait for them."""
        empty = {k: [] for k in self.traces()}
        try:
            wait_for(lambda: self.traces() == empty, timeout=15, interval=0.1)
        except AssertionError:
            assert self.traces() == empty

    # --- the safety net ------------------------------------------------------
    def sweep(self) -> None:
        """Remove whatever a failed test left, by id and pid; podman first."""
        for cid in self.container_ids():
            try:
                self.inspect(cid)
            except AssertionError:
                pass
        self(["pod", "rm", "-f", "-a", "-t", "0"], check=False)
        self(["rm", "-f", "-a", "-t", "0"], check=False)
        for p in _alive(self.node.processes()):
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        for cid in self.node.runc_containers():
            run(["runc", "--root", str(self.node.run_root / "runc"), "delete", "--force", cid], check=False)
        for mnt in sorted(self.node.mounts(), key=len, reverse=True):
            run(["umount", "-l", mnt], check=False)
        for pin in self.sandboxes:
            if os.path.exists(pin):
                run(["umount", "-l", pin], check=False)
                os.unlink(pin)
        for name in self.cache_entries():
            os.unlink(CNI_CACHE / name)
        # podman 4.3 on cgroup v1 leaves the pod's cgroup in the named
        # hierarchies (systemd, unified): the whole parent goes.
        for top in [Path("/sys/fs/cgroup"), *Path("/sys/fs/cgroup").iterdir()]:
            base = top / self.cgroup_parent.lstrip("/")
            if base.is_dir():
                for dirpath, _, _ in sorted(os.walk(base), key=lambda w: -len(w[0])):
                    try:
                        os.rmdir(dirpath)
                    except OSError:
                        pass
        shutil.rmtree(self.runroot, ignore_errors=True)
        if not self.blob_cache_before:
            shutil.rmtree(BLOB_CACHE, ignore_errors=True)
            try:
                BLOB_CACHE.parent.rmdir()   # only when podman made it for us: it is empty then
            except OSError:
                pass


def _alive(procs):
    out = []
    for p in procs:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


@pytest.fixture
def podman(node, image_tar):
    """podman in the node, made per test by `podman(version=..., backend=...)`."""
    made = []

    def make(version="1.0.0", backend="iptables"):
        made.append(Podman(node, version=version, backend=backend))
        made[-1](["import", "-q", str(image_tar), IMAGE])
        return made[-1]

    try:
        yield make
    finally:
        for pm in made:
            pm.sweep()


def curl(node, url: str, ns=None, tries: int = 1) -> str:
    """The page, or "" when unreachable; retried for a server still starting."""
    argv = ["curl", "-sS", "-m", "5", url]
    for _ in range(tries):
        proc = run(node.cmd(argv, ns=ns), check=False, timeout=30)
        if proc.returncode == 0:
            return proc.stdout.strip()
    return ""


def infra_ip(pm: Podman, pod: str) -> tuple[dict, str]:
    infra = json.loads(pm(["pod", "inspect", pod]).stdout)["InfraContainerID"]
    info = pm.inspect(infra)
    return info, info["NetworkSettings"]["Networks"][NET]["IPAddress"]


@pytest.mark.parametrize("version,backend", [("1.0.0", "iptables"), ("1.0.0", "nftables"),
                                             ("0.4.0", "iptables")])
def test_pod_with_published_port(node, podman, version, backend):
    pm = podman(version=version, backend=backend)
    # podman 4.3 takes the infra image from containers.conf but not infra_command
    # (with an infra_image set it then fails: "no command or entrypoint provided")
    pm(["pod", "create", "--name", "p1", "--network", NET, "-p", "8091:80", "--infra-command", "/pause",
        "--cgroup-parent", pm.cgroup_parent])
    pm.inspect(pm(["run", "-d", "--pod", "p1", IMAGE, "httpd", "-f", "-p", "80", "-h", "/www"]).stdout.strip())
    infra, ip = infra_ip(pm, "p1")
    assert ip.startswith("10.66.0.") and infra["NetworkSettings"]["Networks"][NET]["Gateway"] == "10.66.0.1"
    page = "hello from podman"
    assert curl(node, f"http://{ip}/", tries=20) == page
    assert curl(node, f"http://{NODE_ADDR}:8091/") == page
    assert curl(node, "http://127.0.0.1:8091/") == page
    assert curl(node, f"http://{NODE_ADDR}:8091/", ns=node.ext_netns) == page
    # what the plugin made is what the clean-up check looks for
    during = pm.traces()
    assert "mdtbr0" in during["links"] and len(during["links"]) == 2
    assert during["rules"] == [infra["Id"][:12]] and during["leases"] == [ip]
    assert during["cni cache"] == [f"{NET}-{infra['Id']}-eth0"]
    assert during["netns pins"] == [infra["NetworkSettings"]["SandboxKey"]]
    assert during["processes"] and during["mounts"] and len(during["runc"]) == 2

    pm(["pod", "rm", "-f", "-t", "0", "p1"])
    pm.assert_clean()
    assert curl(node, f"http://{NODE_ADDR}:8091/", ns=node.ext_netns) == ""
    assert pm(["pod", "ls", "-q"]).stdout == ""


def test_run_rm_with_published_port(node, podman):
    """A plain container: `--rm` is carried out by conmon's cleanup callback,
    which finds cni-bridge only through CONTAINERS_CONF."""
    pm = podman()
    cid = pm(["run", "-d", "--rm", "--network", NET, "-p", "8092:80", "--cgroup-parent", pm.cgroup_parent,
              IMAGE, "httpd", "-f", "-p", "80", "-h", "/www"]).stdout.strip()
    info = pm.inspect(cid)
    ip = info["NetworkSettings"]["Networks"][NET]["IPAddress"]
    assert curl(node, f"http://{ip}/", tries=20) == "hello from podman"
    assert curl(node, f"http://{NODE_ADDR}:8092/", ns=node.ext_netns) == "hello from podman"
    assert curl(node, "http://127.0.0.1:8092/") == "hello from podman"
    # outbound: from the container to the outside world, masqueraded as the node
    reply = node.root / "peer.sh"      # a file: socat's address syntax would eat the quoting
    reply.write_text('printf \'HTTP/1.0 200 OK\\r\\n\\r\\n%s\\n\' "$SOCAT_PEERADDR"\n')
    srv = node.popen(["socat", "TCP4-LISTEN:9000,fork,reuseaddr", f"SYSTEM:sh {reply}"],
                     ns=node.ext_netns, start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        seen = wait_for(lambda: pm(["exec", cid, "busybox", "wget", "-q", "-O", "-", f"http://{EXT_ADDR}:9000/"],
                                   check=False).stdout.strip(), timeout=10, interval=0.1)
    finally:
        os.killpg(srv.pid, signal.SIGKILL)
        srv.wait(timeout=5)
    assert seen == NODE_ADDR
    assert pm.traces()["leases"] == [ip]
    pm(["stop", "-t", "0", cid])
    pm.assert_clean()
    assert curl(node, f"http://{NODE_ADDR}:8092/", ns=node.ext_netns) == ""
