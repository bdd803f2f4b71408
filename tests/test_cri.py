"""cni-bridge under containerd's CRI, driven as kubelet drives it.

Debian's containerd 1.6 runs inside the node, under this test's own root,
state and socket, and in a private mount namespace whose /var/lib/cni is a
directory of the test (go-cni has no setting for libcni's cache dir). The
test speaks CRI v1 over gRPC with a client compiled at test time from
tests/cri/api.proto (the subset of k8s.io/cri-api it needs), exactly the
calls kubelet makes for a pod with a hostPort. containerd 1.6 reads results
up to 1.0.0, so the conflist is tried at 0.4.0 and 1.0.0. `ctr run --cni`
is the second, simpler client.
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
from grpc_tools import protoc
import psutil
import pytest

from harness import CNI_BRIDGE, NODE_ADDR, REFERENCE_CNI, REPO, run
from mdtools import busybox_tree, oci_layout, tree_tar, wait_for

IMAGE = "localhost/minidocker-cri:test"
NETWORK = "mdcri"
BRIDGE = "mdcri0"
SUBNET = "10.88.7.0/24"
HOST_PORT = 8090
CGROUP_ROOT = Path("/sys/fs/cgroup")
REFERENCE = ("loopback", "host-local", "portmap")


# --- the CRI client ------------------------------------------------------------
@pytest.fixture(scope="module")
def cri(tmp_path_factory):
    """api_pb2 and api_pb2_grpc, generated from tests/cri/api.proto."""
    out = tmp_path_factory.mktemp("cri-stubs")
    proto = REPO / "tests" / "cri"
    assert protoc.main(["protoc", f"-I{proto}", f"--python_out={out}", f"--grpc_python_out={out}",
                        str(proto / "api.proto")]) == 0
    sys.path.insert(0, str(out))
    try:
        pb = importlib.import_module("api_pb2")
        stubs = importlib.import_module("api_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return pb, stubs


@pytest.fixture(scope="module")
def image_archive(tmp_path_factory) -> Path:
    """One busybox image for the sandbox ("pause") and the web server: there
    is no registry here, so the test builds it and `ctr images import`s it."""
    d = tmp_path_factory.mktemp("cri-image")
    root = busybox_tree(d / "rootfs")
    (root / "www").mkdir()
    (root / "www" / "index.html").write_text("hello from a CRI pod\n")
    config = {"Entrypoint": ["/bin/sleep", "2147483647"], "Env": ["PATH=/bin"]}
    archive = d / "image.tar"
    archive.write_bytes(oci_layout([tree_tar(root)], config, IMAGE))
    return archive


# --- containerd inside the node ------------------------------------------------
class Containerd:
    """A containerd of this test: its own root, state, socket and CNI cache,
    in the node's netns and a private mount namespace; stopped by pid."""

    def __init__(self, node, base: Path, version: str, plugin_conf: dict | None = None):
        self.node, self.base = node, base
        self.root, self.state = base / "root", base / "state"
        self.socket = base / "containerd.sock"
        self.conf_dir, self.bin_dir = base / "net.d", base / "bin"
        self.cni_cache, self.ipam = base / "cni-cache", base / "ipam"
        self.cgroup_parent = f"/mdt-cri-{uuid.uuid4().hex[:8]}"
        self.log = base / "containerd.log"
        for d in (self.root, self.state, self.conf_dir, self.bin_dir, self.cni_cache, self.ipam):
            d.mkdir(parents=True)
        os.symlink(CNI_BRIDGE, self.bin_dir / "cni-bridge")
        for name in REFERENCE:
            os.symlink(f"{REFERENCE_CNI}/{name}", self.bin_dir / name)
        plugin = {"type": "cni-bridge", "bridge": BRIDGE, "isGateway": True, "isDefaultGateway": True, "ipMasq": True,
                  "ipam": {"type": "cni-bridge", "dataDir": str(self.ipam),
                           "ranges": [[{"subnet": SUBNET}]]},
                  "capabilities": {"portMappings": True}}
        plugin.update(plugin_conf or {})
        (self.conf_dir / "10-mdcri.conflist").write_text(json.dumps(
            {"cniVersion": version, "name": NETWORK, "plugins": [plugin]}))
        (base / "config.toml").write_text(f"""\
version = 2
root = "{self.root}"
state = "{self.state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[debug]
  address = "{self.socket}.debug"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{self.bin_dir}"
    conf_dir = "{self.conf_dir}"
    max_conf_num = 1
""")
        self.proc = None

    def mount_ns_argv(self, binds: list[tuple[Path, str]], argv: list[str]) -> list[str]:
        """argv in a private mount namespace with `binds` mounted over the
        host's default CNI dirs (only in that namespace)."""
        script = " && ".join(f'mount --bind "${i + 1}" {target}' for i, (_, target) in enumerate(binds))
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                f'{script} && shift {len(binds)} && exec "$@"', "sh",
                *[str(src) for src, _ in binds], *argv]

    def start(self):
        argv = self.mount_ns_argv([(self.cni_cache, "/var/lib/cni")],
                                  ["containerd", "--config", str(self.base / "config.toml")])
        self.proc = self.node.popen(argv, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            wait_for(lambda: self.proc.poll() is not None or (
                self.socket.exists() and self.ctr("version", check=False).returncode == 0), timeout=30)
            assert self.proc.poll() is None, f"containerd exited: {self.log.read_text()[-3000:]}"
        except BaseException:
            self.stop()
            raise

    def ctr(self, *args, check=True, timeout=60):
        return run(["ctr", "--address", str(self.socket), "-n", "k8s.io", *args], check=check, timeout=timeout)

    def channel(self):
        return grpc.insecure_channel(f"unix://{self.socket}")

    def processes(self) -> list[psutil.Process]:
        """containerd, its shims and whatever they run: everything whose
        command line or cwd names this test's base dir, or that descends
        from the daemon."""
        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any(str(self.base) in part for part in proc.info["cmdline"] or []):
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def cgroups(self) -> list[Path]:
        return sorted(CGROUP_ROOT.glob(f"*{self.cgroup_parent}"))

    def stop(self):
        """The daemon and its shims killed by pid, the cgroup parent the pods
        used removed (runc leaves the parent; the test named it)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for proc in self.processes():
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(self.processes(), timeout=10)
        self.node.sh("ip", "link", "del", BRIDGE, check=False)  # CNI bridges outlive their pods by design
        for d in self.cgroups():
            for child in sorted(d.rglob("*"), reverse=True):
                if child.is_dir():
                    child.rmdir()
            d.rmdir()


@pytest.fixture
def containerd(node, tmp_path, image_archive, request):
    """containerd for one conflist version (the test's parameter), with the
    image imported; stopped by pid at the end."""
    version = getattr(request, "param", "1.0.0")
    c = Containerd(node, tmp_path / "containerd", version)
    c.start()
    try:
        c.ctr("images", "import", "--snapshotter", "native", str(image_archive))
        yield c
    finally:
        c.stop()


# --- the pod, as kubelet runs it -----------------------------------------------
def sandbox_config(pb, name: str, cgroup_parent: str):
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=uuid.uuid4().hex, namespace="default", attempt=0),
        hostname=name, log_directory="",
        port_mappings=[pb.PortMapping(protocol=pb.TCP, container_port=80, host_port=HOST_PORT)],
        labels={"app": "web"},
        linux=pb.LinuxPodSandboxConfig(cgroup_parent=cgroup_parent))


def curl(node, url: str, ext: bool = False) -> str:
    argv = ["curl", "-sS", "--max-time", "5", url]
    proc = node.ext_sh(*argv, check=False) if ext else node.sh(*argv, check=False)
    assert proc.returncode == 0, f"{url} (from {'ext' if ext else 'the node'}): {proc.stderr}"
    return proc.stdout


def pod_leftovers(node, c: Containerd, sandbox_id: str) -> list[str]:
    """What of the pod is still there after RemovePodSandbox."""
    found = []
    leases = [p.name for p in (c.ipam / NETWORK).glob("*") if p.name != "lock"
              and not p.name.startswith(("last_reserved_ip", "."))] if (c.ipam / NETWORK).is_dir() else []
    if leases:
        found.append(f"leases {leases}")
    veths = sorted(n for n in node.link_names() if n.startswith("veth"))
    if veths:
        found.append(f"veths {veths}")
    rules = [l for l in (node.iptables_save() + node.nft_ruleset()).splitlines() if sandbox_id in l]
    if rules:
        found.append(f"rules {rules}")
    cache = [str(p.relative_to(c.cni_cache)) for p in c.cni_cache.rglob("*") if sandbox_id in p.name]
    if cache:
        found.append(f"CNI cache {cache}")
    netns = list((c.state / "netns").glob("*")) if (c.state / "netns").is_dir() else []
    if netns:
        found.append(f"netns {netns}")
    cgroups = [str(p) for d in c.cgroups() for p in d.iterdir() if p.is_dir()]
    if cgroups:
        found.append(f"cgroups {cgroups}")
    host_cache = [str(p) for p in Path("/var/lib/cni").rglob(f"*{sandbox_id}*")]
    if host_cache:
        found.append(f"in the host's CNI cache {host_cache}")
    return found


@pytest.mark.parametrize("containerd", ["0.4.0", "1.0.0"], indirect=True)
def test_pod_with_host_port(node, containerd, cri):
    """RunPodSandbox with a hostPort, a web server in it, requests through
    the host port (node address, localhost, from outside) and the pod IP,
    then Stop/Remove: nothing of the pod left."""
    pb, stubs = cri
    rt = stubs.RuntimeServiceStub(containerd.channel())
    assert rt.Version(pb.VersionRequest(version="v1")).runtime_api_version == "v1"
    config = sandbox_config(pb, "web", containerd.cgroup_parent)
    sid = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=60).pod_sandbox_id
    try:
        status = rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sid)).status
        assert status.state == pb.SANDBOX_READY
        pod_ip = status.network.ip
        assert pod_ip.startswith("10.88.7."), pod_ip
        # what kubelet's runtime made for it, where this test told it to
        assert sorted(p.name for p in (containerd.cni_cache / "results").iterdir()) == [
            f"cni-loopback-{sid}-lo", f"{NETWORK}-{sid}-eth0"]
        assert any((d / sid).is_dir() for d in containerd.cgroups())
        ctr_id = rt.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=sid, sandbox_config=config,
            config=pb.ContainerConfig(metadata=pb.ContainerMetadata(name="httpd"),
                                      image=pb.ImageSpec(image=IMAGE),
                                      command=["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"])),
            timeout=60).container_id
        rt.StartContainer(pb.StartContainerRequest(container_id=ctr_id), timeout=60)
        wait_for(lambda: node.sh("curl", "-s", "--max-time", "1", f"http://{pod_ip}/",
                                 check=False).returncode == 0, timeout=15)
        for url, ext in ((f"http://{pod_ip}/", False), (f"http://{NODE_ADDR}:{HOST_PORT}/", False),
                         (f"http://127.0.0.1:{HOST_PORT}/", False), (f"http://{NODE_ADDR}:{HOST_PORT}/", True)):
            assert curl(node, url, ext) == "hello from a CRI pod\n"
        rt.StopContainer(pb.StopContainerRequest(container_id=ctr_id, timeout=0), timeout=60)
        rt.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr_id), timeout=60)
    finally:
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=60)
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=60)
    assert pod_leftovers(node, containerd, sid) == []
    assert curl_fails(node, f"http://{NODE_ADDR}:{HOST_PORT}/", ext=True)


def curl_fails(node, url: str, ext: bool = False) -> bool:
    argv = ["curl", "-sS", "--max-time", "2", url]
    proc = node.ext_sh(*argv, check=False) if ext else node.sh(*argv, check=False)
    return proc.returncode != 0


def test_failing_plugin_fails_the_sandbox_cleanly(node, tmp_path, image_archive, cri):
    """A conflist cni-bridge refuses (a subnet that is no subnet): kubelet
    sees RunPodSandbox fail with the plugin's message, and nothing is left."""
    pb, stubs = cri
    c = Containerd(node, tmp_path / "containerd", "1.0.0",
                   {"ipam": {"type": "cni-bridge", "ranges": [[{"subnet": "10.88.7.0/33"}]]}})
    c.start()
    try:
        c.ctr("images", "import", "--snapshotter", "native", str(image_archive))
        rt = stubs.RuntimeServiceStub(c.channel())
        with pytest.raises(grpc.RpcError) as err:
            rt.RunPodSandbox(pb.RunPodSandboxRequest(config=sandbox_config(pb, "bad", c.cgroup_parent)),
                             timeout=60)
        assert "10.88.7.0/33" in err.value.details(), err.value.details()
        assert "cni-bridge" in err.value.details()
        assert sorted(n for n in node.link_names() if n.startswith("veth")) == []
        assert not list((c.state / "netns").glob("*")) if (c.state / "netns").is_dir() else True
    finally:
        c.stop()


def test_ctr_run_cni(node, containerd):
    """`ctr run --cni`: ctr itself calls the plugins from the default dirs,
    here the test's (bound over /etc/cni/net.d and /opt/cni/bin in ctr's own
    mount namespace); the container gets an address of the subnet."""
    opt = containerd.base / "opt"
    (opt / "cni").mkdir(parents=True)
    os.symlink(containerd.bin_dir, opt / "cni" / "bin")
    argv = containerd.mount_ns_argv(
        [(containerd.conf_dir, "/etc/cni/net.d"), (opt, "/opt"), (containerd.cni_cache, "/var/lib/cni")],
        ["ctr", "--address", str(containerd.socket), "-n", "k8s.io", "run", "--rm", "--cni",
         "--snapshotter", "native", "--cgroup", f"{containerd.cgroup_parent}/ctr1",
         IMAGE, "ctr1", "/bin/busybox", "ip", "-4", "addr", "show", "eth0"])
    proc = node.run(argv, check=False, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert "inet 10.88.7." in proc.stdout, proc.stdout
    assert pod_leftovers(node, containerd, "ctr1") == []
