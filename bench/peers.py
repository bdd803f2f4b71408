"""Docker and podman as bench peers, set up and torn down by the bench itself.

    with BenchNetns() as ns, Docker(ns) as docker:
        samples = docker.time_run(["--network", "bridge", "-p", "8080:80"], runs=20)

Each peer lives in a temporary directory (state, sockets, storage, config) and
runs every command through `nsenter --net=<bench netns>`, so its bridges,
veths and iptables rules die with the namespace. Teardown stops what the peer
started by pid, unmounts what it mounted under the temp dir, removes the dir,
and undoes the few host-global traces the peers leave outside it (see
`HostTraces`). When a peer cannot be installed or started, entering it raises
`PeerUnavailable` with a one-line reason and the bench skips its rows.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.netns import (BenchNetns, alive, all_pids, comm, kill_matching, kill_tree, protected,
                         reap_orphans, subreaper_acquire, subreaper_release, unmount_under)
from bench.peers_image import build_rootfs_tar
from bench.table import median_ms, print_table, time_cmd

IMAGE = "busybox"
TEMP_BASE = "/var/tmp"
START_TIMEOUT = 60
CMD_TIMEOUT = 120


class PeerUnavailable(Exception):
    """The peer cannot run here; str() is a one-line reason for the bench's note."""


# -- installation ------------------------------------------------------------

_apt_updated = False


def _one_line(text: str, limit: int = 300) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[:limit]


def ensure_installed(binaries: list[str], packages: list[str]) -> None:
    """apt-get install the packages unless every binary is already there.

    Services stay stopped: package scripts go through invoke-rc.d, which finds
    no runlevel here (no init system) and obeys policy-rc.d (one saying "no"
    is put in place for the install when there is none); any daemon that
    still appears is killed, so the only ones running are ours, in the netns.
    """
    global _apt_updated
    if all(Path(b).exists() for b in binaries):
        return
    if not shutil.which("apt-get"):
        raise PeerUnavailable(f"{' '.join(packages)} not installed and no apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", NEEDRESTART_MODE="l")
    before = _daemon_pids()
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = not policy.exists()
    if own_policy:  # "exit 101": package scripts may not start services
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        if not _apt_updated:
            subprocess.run(["apt-get", "update"], capture_output=True, timeout=600, env=env)
            _apt_updated = True
        proc = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *packages],
                              capture_output=True, text=True, timeout=1200, env=env)
    except subprocess.TimeoutExpired:
        raise PeerUnavailable(f"apt-get install {' '.join(packages)} timed out") from None
    finally:
        if own_policy:
            policy.unlink(missing_ok=True)
        for pid in _daemon_pids() - before:
            kill_tree(pid)
    if proc.returncode != 0:
        raise PeerUnavailable(f"apt-get install {' '.join(packages)} failed: {_one_line(proc.stderr)}")
    missing = [b for b in binaries if not Path(b).exists()]
    if missing:
        raise PeerUnavailable(f"{' '.join(missing)} missing after installing {' '.join(packages)}")


def _daemon_pids() -> set[int]:
    names = {"dockerd", "containerd", "podman", "conmon"}
    return {pid for pid in all_pids() if comm(pid) in names}


# -- host-global traces --------------------------------------------------------

# Paths outside the temp dir that a peer creates whatever the flags say are
# listed per peer (`Peer.host_paths`) and removed when they were not there
# before. Shared ones (runc's state root, the CNI cache the reference plugins
# use too) only lose emptied-out dirs and entries named after our network.
SHARED_PATHS = ("/run/runc", "/var/lib/cni")
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclasses.dataclass
class HostTraces:
    """What the host looked like before a peer started, to undo what it adds."""

    network: str  # CNI network name whose cache entries are ours
    paths: tuple[str, ...] = ()  # ours alone
    cgroup_names: tuple[str, ...] = ()  # top-level cgroups the peer makes
    sysctl_paths: tuple[str, ...] = ()  # host-global sysctls the peer changes
    existing: set[str] = dataclasses.field(default_factory=set)
    sysctls: dict[str, str] = dataclasses.field(default_factory=dict)
    cgroups: set[str] = dataclasses.field(default_factory=set)

    def snapshot(self) -> "HostTraces":
        self.existing = {p for p in self.paths + SHARED_PATHS if os.path.lexists(p)}
        for s in self.sysctl_paths:
            try:
                self.sysctls[s] = Path(s).read_text().strip()
            except OSError:
                pass
        self.cgroups = set(self._cgroups())
        return self

    def _cgroups(self):
        return (str(p) for p in _cgroup_candidates(self.cgroup_names))

    def undo(self) -> list[str]:
        """Remove what appeared since the snapshot; returns what could not be."""
        problems = []
        for p in self.paths:
            if p not in self.existing and os.path.lexists(p):
                unmount_under(p)
                _remove(p)
        for p in SHARED_PATHS:
            if os.path.isdir(p):
                _prune_shared(Path(p), self.network, remove_root=p not in self.existing)
        for s, value in self.sysctls.items():
            try:
                if Path(s).read_text().strip() != value:
                    Path(s).write_text(value)
            except OSError as e:
                problems.append(f"{s}: {e}")
        for cg in sorted(set(self._cgroups()) - self.cgroups):
            if not _rmdir_tree(Path(cg)):
                problems.append(f"cgroup {cg} still busy")
        problems += [f"{p} left" for p in self.paths
                     if p not in self.existing and os.path.lexists(p)]
        return problems


def _cgroup_candidates(names):
    if not CGROUP_ROOT.is_dir():
        return
    for ctrl in CGROUP_ROOT.iterdir():
        for name in names:
            if (ctrl / name).is_dir():
                yield ctrl / name


def _rmdir_tree(path: Path) -> bool:
    """rmdir a cgroup tree bottom-up (cgroup dirs cannot be rmtree'd)."""
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                      reverse=True):
        try:
            sub.rmdir()
        except OSError:
            pass
    try:
        path.rmdir()
    except OSError:
        return not path.exists()
    return True


def _remove(p: str) -> None:
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            os.unlink(p)
        except OSError:
            pass


def _prune_shared(root: Path, network: str, remove_root: bool) -> None:
    for entry in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if entry.name.startswith(network + "-") or entry.name == network:
            _remove(str(entry))
        elif entry.is_dir():
            try:
                entry.rmdir()  # only when empty
            except OSError:
                pass
    if remove_root:
        try:
            root.rmdir()
        except OSError:
            pass


def _delete_runc_state(needle: str, root: Path = Path("/run/runc")) -> None:
    """`runc delete` containers whose state names our temp dir: a run cut
    short between `runc create` and start leaves one behind in runc's
    host-wide state root (podman passes no --root)."""
    if not root.is_dir():
        return
    for state in root.glob("*/state.json"):
        try:
            if needle not in state.read_text(errors="replace"):
                continue
        except OSError:
            continue
        cid = state.parent.name
        subprocess.run(["runc", "--root", str(root), "delete", "--force", cid],
                       capture_output=True, timeout=30)
        shutil.rmtree(state.parent, ignore_errors=True)


# -- the peers -----------------------------------------------------------------

class Peer:
    """Common life cycle: install, temp dir, start, import the image; undo it all."""

    name = "peer"
    binaries: list[str] = []
    packages: list[str] = []
    network = "peer"
    host_paths: tuple[str, ...] = ()
    cgroup_names: tuple[str, ...] = ()
    sysctl_paths: tuple[str, ...] = ()
    force_rm = ["rm", "--force"]  # kills at once (Docker's SIGKILL)

    def __init__(self, ns: BenchNetns, *, image_tar: Path | None = None):
        self.ns = ns
        self.image_tar = image_tar
        self.tmp: Path | None = None
        self.traces: HostTraces | None = None
        self.env = dict(os.environ)
        self.leftovers: list[str] = []

    # subclasses fill these in
    def client(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def __enter__(self):
        ensure_installed(self.binaries, self.packages)
        subreaper_acquire()
        self.traces = HostTraces(self.network, self.host_paths, self.cgroup_names,
                                 self.sysctl_paths).snapshot()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"mdbench-{self.name}-", dir=TEMP_BASE))
        try:
            self.start()
            tar = self.image_tar or build_rootfs_tar(self.tmp / "busybox-rootfs.tar")
            self.run(["import", str(tar), IMAGE], timeout=CMD_TIMEOUT)
        except BaseException as e:
            self.__exit__(None, None, None)
            if isinstance(e, PeerUnavailable):
                raise
            if isinstance(e, (Exception, subprocess.TimeoutExpired)):
                raise PeerUnavailable(f"{self.name}: {_one_line(str(e))}") from e
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            if self.tmp:
                kill_matching(str(self.tmp))
                _delete_runc_state(str(self.tmp))
                unmount_under(str(self.tmp))
                shutil.rmtree(self.tmp, ignore_errors=True)
                if self.tmp.exists():
                    self.leftovers.append(f"{self.tmp} left")
            if self.traces:
                self.leftovers += self.traces.undo()
            self.tmp = self.traces = None
            subreaper_release()
        if self.leftovers:
            print(f"bench: {self.name} teardown: {'; '.join(self.leftovers)}", file=sys.stderr)

    def cmd(self, args: list[str]) -> list[str]:
        return self.ns.cmd([*self.client(), *args])

    def run(self, args: list[str], *, timeout=CMD_TIMEOUT, check=True):
        proc = subprocess.run(self.cmd(args), capture_output=True, text=True,
                              timeout=timeout, env=self.env)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{self.name} {' '.join(args)}: "
                               f"{_one_line(proc.stderr or proc.stdout) or proc.returncode}")
        return proc

    def time_run(self, args: list[str], runs: int = 20) -> list[float]:
        """Wall-clock seconds of `<peer> run --rm <args> busybox true`, after one warm-up."""
        argv = self.cmd(["run", "--rm", *args, IMAGE, "true"])
        time_cmd(argv, 1, env=self.env, timeout=CMD_TIMEOUT)
        try:
            return time_cmd(argv, runs, env=self.env, timeout=CMD_TIMEOUT)
        finally:
            reap_orphans()


class Docker(Peer):
    """Docker 20.10: a private dockerd (and the containerd it spawns) in the netns."""

    name = "docker"
    binaries = ["/usr/sbin/dockerd", "/usr/bin/docker", "/usr/bin/containerd"]
    packages = ["docker.io"]
    network = "docker"  # no CNI: nothing of ours in shared CNI dirs
    # dockerd makes /run/docker/plugins and its containerd /run/containerd
    # whatever --exec-root says; dockerd raises the root key quota (a
    # host-global sysctl) on start when it is below 1000000.
    host_paths = ("/var/lib/docker", "/run/docker", "/run/containerd", "/var/lib/containerd",
                  "/etc/docker/key.json", "/root/.docker")
    cgroup_names = ("docker",)
    sysctl_paths = ("/proc/sys/kernel/keys/root_maxkeys", "/proc/sys/kernel/keys/root_maxbytes")

    def __init__(self, ns: BenchNetns, **kw):
        super().__init__(ns, **kw)
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def sock(self) -> Path:
        return self.tmp / "docker.sock"

    def client(self) -> list[str]:
        # /usr/bin/docker, not whatever `docker` is first on PATH: the client
        # must match the 20.10 daemon.
        return ["/usr/bin/docker", "-H", f"unix://{self.sock}"]

    def start(self) -> None:
        t = self.tmp
        # Our own config file: the host's /etc/docker/daemon.json is never
        # read, and the trust key (a config key only, no flag) stays in t.
        (t / "daemon.json").write_text(json.dumps({"deprecated-key-path": str(t / "key.json")}))
        (t / "client").mkdir()
        self.env["DOCKER_CONFIG"] = str(t / "client")
        argv = ["/usr/sbin/dockerd",
                "--data-root", str(t / "data"), "--exec-root", str(t / "exec"),
                "--pidfile", str(t / "docker.pid"), "-H", f"unix://{self.sock}",
                "--config-file", str(t / "daemon.json"),
                "--iptables=true", "--ip-masq=true", "--storage-driver", "overlay2"]
        self._log = open(t / "dockerd.log", "wb")
        self.proc = subprocess.Popen(self.ns.cmd(argv), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env)
        protected.add(self.proc.pid)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PeerUnavailable(f"dockerd exited {self.proc.returncode}: {self._log_tail()}")
            if self.sock.exists() and self.run(["version"], timeout=10, check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise PeerUnavailable(f"dockerd did not answer in {START_TIMEOUT}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            lines = (self.tmp / "dockerd.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        errors = [ln for ln in lines if "level=error" in ln or "level=fatal" in ln]
        return _one_line((errors or lines or [""])[-1])

    def stop(self) -> None:
        if self.proc is None:
            return
        # nsenter execs dockerd, so the Popen pid is dockerd's; containerd,
        # its shims and docker-proxy are its descendants.
        containerd_pid = self.tmp / "exec" / "containerd" / "containerd.pid"
        extra = []
        if containerd_pid.exists():
            try:
                extra.append(int(containerd_pid.read_text().strip()))
            except ValueError:
                pass
        if self.proc.poll() is None:
            kill_tree(self.proc.pid, grace=20.0)
        for pid in extra:
            if alive(pid):
                kill_tree(pid)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        protected.discard(self.proc.pid)
        self.proc = None
        if self._log:
            self._log.close()
        self._remove_network()

    def _remove_network(self) -> None:
        """docker0 and Docker's chains go now, so the next peer in the same
        namespace measures against a clean firewall (the netns would drop
        them too, later)."""
        self.ns.run(["ip", "link", "del", "docker0"], check=False)
        for table in ("nat", "filter"):
            rules = self.ns.run(["iptables", "-t", table, "-S"], check=False).stdout.splitlines()
            for rule in rules:
                words = rule.split()
                if words[:1] == ["-A"] and ("DOCKER" in rule or "docker0" in rule):
                    self.ns.run(["iptables", "-t", table, "-D", *words[1:]], check=False)
            for rule in rules:
                words = rule.split()
                if words[:1] == ["-N"] and words[1].startswith("DOCKER"):
                    self.ns.run(["iptables", "-t", table, "-F", words[1]], check=False)
            for rule in rules:
                words = rule.split()
                if words[:1] == ["-N"] and words[1].startswith("DOCKER"):
                    self.ns.run(["iptables", "-t", table, "-X", words[1]], check=False)
        self.ns.run(["iptables", "-P", "FORWARD", "ACCEPT"], check=False)


CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{tmp}/libpod-tmp"
volume_path = "{tmp}/storage/volumes"

[network]
network_backend = "cni"
cni_plugin_dirs = ["/usr/lib/cni"]
network_config_dir = "{tmp}/cni"
default_network = "podman"
"""

STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{tmp}/storage"
runroot = "{tmp}/run"
"""


def podman_conflist(tmp: Path) -> dict:
    """The `podman` CNI network: bridge with masquerade plus portmap for -p."""
    return {
        "cniVersion": "0.4.0",
        "name": "podman",
        "plugins": [
            {"type": "bridge", "bridge": "cni-podman0", "isGateway": True, "ipMasq": True,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(tmp / "cni-ipam"),
                      "routes": [{"dst": "0.0.0.0/0"}],
                      "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


class Podman(Peer):
    """podman 4.3 rootful with runc and the CNI backend, all state in the temp dir."""

    name = "podman"
    binaries = ["/usr/bin/podman", "/usr/bin/conmon", "/usr/sbin/runc"]
    packages = ["podman", "runc", "conmon", "containernetworking-plugins", "iptables"]
    network = "podman"
    # podman 4.3 keeps its SHM lock (/dev/shm/libpod_lock) and its blob-info
    # cache (/var/lib/containers/cache) on the host whatever storage.conf says,
    # runc its state in /run/runc, libcni its results in /var/lib/cni.
    host_paths = ("/var/lib/containers", "/run/containers", "/run/libpod", "/dev/shm/libpod_lock",
                  "/root/.config/containers", "/root/.local/share/containers")
    cgroup_names = ("libpod_parent", "machine.slice")
    # podman's --force first waits out the stop timeout (10 s) for a process
    # that ignores SIGTERM, as a shell or `sleep` as pid 1 does
    force_rm = ["rm", "--force", "--time", "0"]

    def client(self) -> list[str]:
        return ["/usr/bin/podman"]

    def start(self) -> None:
        t = self.tmp
        (t / "cni").mkdir()
        (t / "cni" / "87-podman.conflist").write_text(json.dumps(podman_conflist(t), indent=2))
        (t / "containers.conf").write_text(CONTAINERS_CONF.format(tmp=t))
        (t / "storage.conf").write_text(STORAGE_CONF.format(tmp=t))
        self.env.update(CONTAINERS_CONF=str(t / "containers.conf"),
                        CONTAINERS_STORAGE_CONF=str(t / "storage.conf"))
        proc = self.run(["info", "--format", "{{.Host.OCIRuntime.Name}} {{.Store.GraphRoot}}"],
                        timeout=START_TIMEOUT, check=False)
        if proc.returncode != 0:
            raise PeerUnavailable(f"podman info: {_one_line(proc.stderr) or proc.returncode}")

    def stop(self) -> None:
        if self.tmp and (self.tmp / "storage.conf").exists():
            # conmon's exit hooks and anything a failed run left behind.
            self.run([*self.force_rm, "--all"], timeout=60, check=False)


# -- `python -m bench.peers` -----------------------------------------------------

# podman 4 takes `--network bridge` as "the default network" (our `podman`
# conflist), so the same arguments serve both peers.
OPERATIONS = [
    ("run --rm --network none", ["--network", "none"]),
    ("run --rm --network host", ["--network", "host"]),
    ("run --rm --network bridge -p 8080:80", ["--network", "bridge", "-p", "8080:80"]),
]


def measure(runs: int, peers=(Docker, Podman)) -> tuple[list, list[str]]:
    """Rows for print_table and notes for peers that could not run."""
    rows, notes = [], []
    with BenchNetns() as ns, tempfile.TemporaryDirectory(prefix="mdbench-image-", dir=TEMP_BASE) as d:
        tar = build_rootfs_tar(Path(d) / "busybox-rootfs.tar")
        for cls in peers:
            try:
                with cls(ns, image_tar=tar) as peer:
                    for label, args in OPERATIONS:
                        ms = median_ms(peer.time_run(args, runs))
                        rows.append((label, None, cls.name, ms))
            except PeerUnavailable as e:
                notes.append(f"{cls.name}: skipped ({e})")
    return rows, notes


def main(argv: list[str]) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m bench.peers",
                                 description="Time `run --rm` for Docker and podman in a throwaway netns.")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--peer", choices=["docker", "podman"], action="append",
                    help="only this peer (repeatable)")
    args = ap.parse_args(argv)
    peers = [c for c in (Docker, Podman) if not args.peer or c.name in args.peer]
    start = time.monotonic()
    rows, notes = measure(args.runs, peers)
    print_table(f"`<peer> run --rm ARGS busybox true`, median of {args.runs} (ms)", rows)
    for n in notes:
        print(f"note: {n}")
    print(f"\n({time.monotonic() - start:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
