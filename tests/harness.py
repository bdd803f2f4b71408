"""The node-namespace harness: a throwaway network namespace plays the host.

A `Node` is a network namespace (the "host" of a test) wired by a veth pair
to an `ext` namespace (the outside world). Everything a test runs goes through
`nsenter --net=<node>`, so links, rules and sysctls the program makes land in
the node and never on the real host. `ip netns exec` is avoided on purpose:
its private mount namespace would hide the bind mounts that pin container
namespaces from the next command.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
if not VENV_BIN.is_dir():
    VENV_BIN = Path(sys.executable).parent
MINIDOCKER = str(VENV_BIN / "minidocker")
CNI_BRIDGE = str(VENV_BIN / "cni-bridge")
REFERENCE_CNI = "/usr/lib/cni"
NETNS_DIR = Path("/run/netns")

# Every namespace the suite makes carries this prefix, so the leak check can
# find it and so it never collides with other work on the machine.
NS_PREFIX = "mdt-"
# This pytest session's own mark: several sessions (developers, CI) may share
# the machine, and each must check only what it made itself.
SESSION = uuid.uuid4().hex[:4]
SESSION_PREFIX = f"{NS_PREFIX}{SESSION}"

# The node <-> ext link. TEST-NET addresses that exist only inside our
# namespaces.
NODE_ADDR = "203.0.113.1"
EXT_ADDR = "203.0.113.2"
NODE_ADDR6 = "2001:db8:ffff::1"
EXT_ADDR6 = "2001:db8:ffff::2"
UPLINK = "uplink0"

DEFAULT_TIMEOUT = 60


def run(argv, *, check=True, timeout=DEFAULT_TIMEOUT, **kw):
    """subprocess.run with text output captured and a timeout, no shell."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    proc = subprocess.run(argv, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{argv!r} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def netns_inode(path: str | Path) -> int:
    return os.stat(path).st_ino


@dataclasses.dataclass
class Node:
    """A throwaway host: a node namespace plus its `ext` peer."""

    name: str
    root: Path  # per-test MINIDOCKER_ROOT / MINIDOCKER_RUN / CNI dirs live here

    @property
    def netns(self) -> str:
        return str(NETNS_DIR / self.name)

    @property
    def ext(self) -> str:
        return self.name + "-ext"

    @property
    def ext_netns(self) -> str:
        return str(NETNS_DIR / self.ext)

    # --- environment of the program under test -------------------------
    @property
    def state_root(self) -> Path:
        return self.root / "lib"

    @property
    def run_root(self) -> Path:
        return self.root / "run"

    @property
    def cni_cache(self) -> Path:
        return self.root / "cni-cache"

    @property
    def cni_conf(self) -> Path:
        return self.root / "net.d"

    @property
    def cni_path(self) -> str:
        return f"{VENV_BIN}:{REFERENCE_CNI}"

    def env(self, **extra) -> dict:
        env = {
            "PATH": f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "MINIDOCKER_ROOT": str(self.state_root),
            "MINIDOCKER_RUN": str(self.run_root),
            "MINIDOCKER_CNI_CACHE": str(self.cni_cache),
            "MINIDOCKER_CNI_CONF": str(self.cni_conf),
            "CNI_PATH": self.cni_path,
            "MINIDOCKER_CGROUP_PARENT": self.cgroup_parent,
            "LANG": "C.UTF-8",
        }
        env.update({k: str(v) for k, v in extra.items()})
        return env

    @property
    def cgroup_parent(self) -> str:
        """The node's own cgroup parent: its containers' cgroups are found there."""
        return f"minidocker-{self.name}"

    # --- running things --------------------------------------------------
    def cmd(self, argv, ns=None):
        return ["nsenter", f"--net={ns or self.netns}", "--", *argv]

    def run(self, argv, *, env=None, check=True, timeout=DEFAULT_TIMEOUT, **kw):
        """Run argv inside the node with the program's environment."""
        return run(self.cmd(argv), env=env or self.env(), check=check, timeout=timeout, **kw)

    def sh(self, *argv, check=True, timeout=DEFAULT_TIMEOUT, **kw):
        """Run a system tool (ip, iptables, nft) inside the node."""
        return run(self.cmd(list(argv)), check=check, timeout=timeout, **kw)

    def ext_sh(self, *argv, check=True, timeout=DEFAULT_TIMEOUT, **kw):
        return run(self.cmd(list(argv), ns=self.ext_netns), check=check, timeout=timeout, **kw)

    def md(self, *args, check=True, timeout=DEFAULT_TIMEOUT, env=None, **kw):
        """Run `minidocker ARGS...` in the node."""
        return self.run([MINIDOCKER, *map(str, args)], env=env, check=check, timeout=timeout, **kw)

    def popen(self, argv, *, env=None, ns=None, **kw):
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        return subprocess.Popen(self.cmd(argv, ns=ns), env=env or self.env(), **kw)

    # --- looking at the node -----------------------------------------------
    def links(self) -> list[dict]:
        out = self.sh("ip", "-j", "link", "show").stdout
        return json.loads(out or "[]")

    def link_names(self) -> set[str]:
        return {l["ifname"] for l in self.links()}

    def iptables_save(self) -> str:
        parts = []
        for tool in ("iptables-save", "ip6tables-save"):
            proc = self.sh(tool, check=False)
            parts.append(proc.stdout)
        return "".join(parts)

    def nft_ruleset(self) -> str:
        return self.sh("nft", "list", "ruleset", check=False).stdout

    def processes(self) -> list[psutil.Process]:
        """Processes that belong to this test: in the node's netns, or started
        with this test's state root in their environment."""
        node_ino = netns_inode(self.netns)
        marker = str(self.state_root)
        found = []
        for proc in psutil.process_iter(["pid"]):
            try:
                if os.stat(f"/proc/{proc.pid}/ns/net").st_ino == node_ino:
                    found.append(proc)
                    continue
                env = proc.environ()
                if env.get("MINIDOCKER_ROOT") == marker:
                    found.append(proc)
                    continue
                if any(marker in part for part in proc.cmdline()):
                    found.append(proc)
                    continue
                # A container's processes: their root mount is an overlay of
                # this test's directory (they carry neither its netns nor its env).
                if self._root_is_ours(proc.pid):
                    found.append(proc)
            except (psutil.Error, OSError):
                continue
        return [p for p in found if p.pid != os.getpid()]

    def _root_is_ours(self, pid: int) -> bool:
        with open(f"/proc/{pid}/mountinfo") as fh:
            for line in fh:
                fields = line.split()
                if fields[4] == "/":
                    return str(self.root) + "/" in line
        return False

    def mounts(self) -> list[str]:
        root = str(self.root)
        with open("/proc/self/mountinfo") as fh:
            return [line.split()[4] for line in fh if root in line.split()[4]]

    def leftovers(self) -> list[str]:
        """What the program left in the node: the leak check's findings."""
        found = []
        extra = self.link_names() - {"lo", UPLINK}
        if extra:
            found.append(f"links: {sorted(extra)}")
        rules = [l for l in self.iptables_save().splitlines()
                 if "minidocker" in l.lower() or "CNI-" in l or "MINIDOCKER" in l]
        if rules:
            found.append(f"iptables: {rules[:10]}")
        nft = self.nft_ruleset()
        for table in ("minidocker", "cni_hostport", "cni_bridge"):
            if f"table ip {table}" in nft or f"table ip6 {table}" in nft or f"table inet {table}" in nft:
                found.append(f"nft table {table}")
        procs = self.processes()
        if procs:
            found.append(f"processes: {[(p.pid, _cmd(p)) for p in procs]}")
        mounts = self.mounts()
        if mounts:
            found.append(f"mounts: {mounts}")
        runc = self.runc_containers()
        if runc:
            found.append(f"runc containers (and their cgroups): {runc}")
        cgroups = self.cgroups()
        if cgroups:
            found.append(f"cgroups: {cgroups}")
        return found

    def cgroups(self) -> list[str]:
        """Container cgroups left under the node's cgroup parent, and under the
        parent its state root gets without one (commands run with `env -i`)."""
        from minidocker.paths import default_cgroup_parent
        return sorted(c for name in (self.cgroup_parent, default_cgroup_parent(self.state_root))
                      for parent in cgroup_parents(name) for c in _subdirs(parent))

    def runc_containers(self) -> list[str]:
        """Containers runc still knows under this test's runtime root."""
        root = self.run_root / "runc"
        return sorted(p.name for p in root.iterdir()) if root.is_dir() else []

    # --- lifecycle -----------------------------------------------------------
    @classmethod
    def create(cls, root: Path) -> "Node":
        node = cls(name=f"{SESSION_PREFIX}{uuid.uuid4().hex[:6]}", root=root)
        root.mkdir(parents=True, exist_ok=True)
        for d in (node.state_root, node.run_root, node.cni_cache, node.cni_conf):
            d.mkdir(parents=True, exist_ok=True)
        run(["ip", "netns", "add", node.name])
        try:
            run(["ip", "netns", "add", node.ext])
            node.sh("ip", "link", "set", "lo", "up")
            node.ext_sh("ip", "link", "set", "lo", "up")
            wire_uplink(node.netns, node.ext_netns)
        except BaseException:  # Ctrl-C too: no half-made node
            node.destroy()
            raise
        return node

    def destroy(self) -> None:
        """Force everything of this test away (after the leak check ran)."""
        for proc in self.processes():
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        time.sleep(0.05)
        for cid in self.runc_containers():  # runc's cgroups live outside the node
            subprocess.run(["runc", "--root", str(self.run_root / "runc"), "delete", "--force", cid],
                           capture_output=True, timeout=30)
        from minidocker.paths import default_cgroup_parent
        for parent in cgroup_parents(self.cgroup_parent) + cgroup_parents(default_cgroup_parent(self.state_root)):
            for path in _subdirs(parent) + [parent]:
                for pid in Path(path, "cgroup.procs").read_text().split():
                    os.kill(int(pid), signal.SIGKILL)
                for _ in range(100):
                    try:
                        os.rmdir(path)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.02)
        for mnt in sorted(self.mounts(), key=len, reverse=True):
            subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=10)
        for ns in (self.name, self.ext):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def wire_uplink(node_ns: str, ext_ns: str) -> None:
    """The node <-> ext link (UPLINK in the node, eth0 in ext), both families,
    the node's default routes through ext. `bench datapath` wires its Docker
    and bare hosts with it too, so every host sees the same outside."""
    def node(*argv):
        run(["nsenter", f"--net={node_ns}", "--", *argv])

    def ext(*argv):
        run(["nsenter", f"--net={ext_ns}", "--", *argv])
    node("ip", "link", "add", UPLINK, "type", "veth", "peer", "name", "eth0", "netns", ext_ns)
    node("ip", "addr", "add", f"{NODE_ADDR}/24", "dev", UPLINK)
    node("ip", "-6", "addr", "add", f"{NODE_ADDR6}/64", "dev", UPLINK, "nodad")
    node("ip", "link", "set", UPLINK, "up")
    node("ip", "route", "add", "default", "via", EXT_ADDR)
    node("ip", "-6", "route", "add", "default", "via", EXT_ADDR6)
    ext("ip", "addr", "add", f"{EXT_ADDR}/24", "dev", "eth0")
    ext("ip", "-6", "addr", "add", f"{EXT_ADDR6}/64", "dev", "eth0", "nodad")
    ext("ip", "link", "set", "eth0", "up")


def cgroup_parents(parent: str) -> list[str]:
    """<mount><own cgroup>/<parent> of every cgroup hierarchy, where it exists
    (containers' cgroups are made relative to the starting process's own)."""
    own = {}
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            _, names, path = line.rstrip("\n").split(":", 2)
            for name in names.split(",") if names else ["<v2>"]:
                own[name] = path
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            fstype, _, opts = right.split(" ", 2)
            if fstype not in ("cgroup", "cgroup2"):
                continue
            names = ["<v2>"] if fstype == "cgroup2" else opts.strip().split(",")
            for name in names:
                if name in own:
                    path = left.split(" ")[4] + own[name].rstrip("/") + "/" + parent
                    if os.path.isdir(path):
                        found.append(path)
                    break
    return sorted(set(found))


def _subdirs(path: str) -> list[str]:
    try:
        return [e.path for e in os.scandir(path) if e.is_dir()]
    except FileNotFoundError:
        return []


def default_cgroups() -> list[str]:
    """Containers' cgroups under the default parent `minidocker`."""
    return [c for parent in cgroup_parents("minidocker") for c in _subdirs(parent)]


def _cmd(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())[:120]
    except psutil.Error:
        return "?"


def host_snapshot(session_tmp: str) -> dict:
    """What the real host holds that a leak of this session could add to:
    this session's namespaces, links and rules naming us, mounts under this
    session's temporary tree or the default state roots."""
    netns = sorted(p.name for p in NETNS_DIR.glob(SESSION_PREFIX + "*")) if NETNS_DIR.exists() else []
    from pyroute2 import IPRoute  # start-up does not matter here
    with IPRoute() as ipr:
        links = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
    rules = run(["iptables-save"], check=False).stdout
    with open("/proc/self/mountinfo") as fh:
        mounts = [line.split()[4] for line in fh]
    defaults = ("/var/lib/minidocker", "/run/minidocker")
    return {
        "netns": netns,
        "links": sorted(links),
        "rules": sorted(l for l in rules.splitlines()
                        if "minidocker" in l.lower() or "CNI-" in l),
        "mounts": sorted(m for m in mounts if m.startswith(session_tmp) or m.startswith(defaults)),
        "cgroups": default_cgroups() + [p for p in _cgroup_parents_of_session()],
    }


def _cgroup_parents_of_session() -> list[str]:
    """The cgroup parents of this session's nodes still on the host."""
    out = []
    for parent in cgroup_parents(""):
        out += [p for p in _subdirs(parent) if os.path.basename(p).startswith(
            f"minidocker-{SESSION_PREFIX}")]
    return out
