"""The four hosts `bench datapath` measures side by side, each a
throwaway node namespace with an `ext` namespace on its outside link
(harness.wire_uplink: the tests' node and outside world), a server `srv`
(iperf3 and an echo server) and a client `cli`:

- `Bare`: no container runtime. srv and cli are namespaces, each with a
  veth pair to the node and routes only (no bridge, no rule, no NAT); ext
  routes the namespaces' subnet through the node, so every path is the
  kernel's routing and nothing else. The published-port paths go straight
  to srv's address: the direct route without DNAT.
- `Floor`: the kernel objects any docker0-style network needs, wired by
  hand and nothing more: srv and cli on one bridge, the subnet masqueraded,
  the published ports DNAT'ed (from localhost too: route_localnet and a
  masquerade of 127/8), one iptables rule each, no chain, no filter rule.
  What a path costs from bare to floor is the kernel's (bridge,
  br_netfilter, conntrack, NAT); from floor to minidocker, ours.
- `Minidocker`: srv and cli are containers on minidocker's default bridge,
  srv publishing its ports (harness.Node, the tests' throwaway node).
- `DockerHost`: the same two containers under Docker 20.10 (bench.peers),
  with its userland proxy on (Docker's default: localhost goes through
  docker-proxy, the host's own address through its DNAT rules).

A client runs `where` one of HOST (the node), EXT (outside) or CLI (the
client container). Each host undoes all it made on exit, also on an error
or Ctrl-C while it is being set up.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.netns import BenchNetns, protected
from bench.peers import Docker, PeerUnavailable
from bench.probes import ECHO_PORT, ECHO_SERVER, IPERF_PORT, IPERF_SERVER, gbps, iperf3_client

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from bridge_helpers import TOOLS  # noqa: E402
from cluster_helpers import ClusterNode  # noqa: E402
from harness import MINIDOCKER, NODE_ADDR, wire_uplink  # noqa: E402

HOST, EXT, CLI = "host", "ext", "cli"
PUBLISHED_IPERF, PUBLISHED_ECHO = 15201, 10007
PUBLISH = ["-p", f"{PUBLISHED_IPERF}:{IPERF_PORT}", "-p", f"{PUBLISHED_ECHO}:{ECHO_PORT}"]
#: srv's command in a container: both servers, the echo server as pid 1.
SERVE = ["sh", "-c", f"{' '.join(IPERF_SERVER)} & exec {' '.join(ECHO_SERVER)}"]
BARE_NET = "10.213.0.0/16"
BARE_LINKS = {"srv": ("bsrv0", "10.213.1"), "cli": ("bcli0", "10.213.2")}   # node link, /24
FLOOR_BRIDGE, FLOOR_PREFIX = "floor0", "10.214.0"
READY_TIMEOUT = 20.0
CMD_TIMEOUT = 120
GRACE = 5.0


@contextlib.contextmanager
def uninterrupted():
    """Ctrl-C waits while a host is torn down (a second one would leave half of it)."""
    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to shield
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def nsenter(netns: str, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net={netns}", "--", *argv]


def run_gently(argv: list[str], timeout: float, env=None) -> subprocess.CompletedProcess:
    """subprocess.run, except that a client cut short (Ctrl-C, timeout) gets
    SIGTERM and a moment before SIGKILL: `minidocker exec` passes SIGTERM on
    to what it started and waits for it. Killed outright, it would orphan
    that process to us (the subreaper while Docker is up), where nobody
    reaps it, and the container could not be removed."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    protected.add(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        proc.terminate()
        try:
            proc.communicate(timeout=GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise
    finally:
        protected.discard(proc.pid)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


class Servers:
    """Server processes started outside containers, each in a session of
    its own, stopped by process group (socat's per-connection children too)."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, netns: str) -> None:
        """iperf3 and the echo server in the namespace at netns, once listening."""
        for argv in (IPERF_SERVER, ECHO_SERVER):
            self.procs.append(subprocess.Popen(nsenter(netns, argv), stdin=subprocess.DEVNULL,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                               start_new_session=True))
            protected.add(self.procs[-1].pid)   # ours to wait for, not an orphan to reap
        wait_listening(netns)

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            protected.discard(proc.pid)
        self.procs = []


def wait_listening(netns: str, ports=(IPERF_PORT, ECHO_PORT)) -> None:
    """Until something listens on every port in the namespace at netns
    (asked with ss: a probe connection would count as one of iperf3's tests)."""
    deadline = time.monotonic() + READY_TIMEOUT
    for port in ports:
        while not subprocess.run(nsenter(netns, ["ss", "-Hltn", f"sport = :{port}"]),
                                 capture_output=True, text=True, timeout=10).stdout.strip():
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port} in {netns} after {READY_TIMEOUT:g}s")
            time.sleep(0.05)


def address_and_netns(inspect_json: str) -> tuple[str, str]:
    """(address, network namespace path) of a container, from `inspect` (ours or Docker's)."""
    info = json.loads(inspect_json)[0]
    return info["NetworkSettings"]["IPAddress"], f"/proc/{info['State']['Pid']}/ns/net"


class Host:
    """What every host answers: where its clients run and one iperf3 test."""

    name = "host"
    published = True        # the published-port paths use the published ports
    namespaces: list[str]
    srv_ip: str
    netns: dict[str, str]   # HOST / EXT / CLI -> namespace path

    def __enter__(self):
        try:
            self.setup()
        except BaseException:   # an error or Ctrl-C half-way: undo what was made
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        with uninterrupted():
            self.teardown()

    def setup(self) -> None:
        raise NotImplementedError

    def teardown(self) -> None:
        raise NotImplementedError

    def throwaway(self, stack: contextlib.ExitStack, count: int) -> list[BenchNetns]:
        """count fresh namespaces (undone with stack), the first two wired as node and ext."""
        spaces = [stack.enter_context(BenchNetns()) for _ in range(count)]
        self.namespaces = [ns.name for ns in spaces]
        wire_uplink(spaces[0].path, spaces[1].path)
        return spaces

    def client(self, where: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        return run_gently(nsenter(self.netns[where], argv), timeout)

    def iperf(self, where: str, host: str, port: int, seconds: float) -> float:
        """Gbit/s of one iperf3 test from `where` to host:port."""
        proc = self.client(where, iperf3_client(host, port, seconds), timeout=seconds + 60)
        return gbps(proc.stdout or proc.stderr)


class Bare(Host):
    """Namespaces, veth pairs and routes, nothing else."""

    name = "bare"
    published = False

    def __init__(self):
        self.stack = contextlib.ExitStack()
        self.servers = Servers()

    def setup(self) -> None:
        node, ext, srv, cli = self.throwaway(self.stack, 4)
        node.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        self.wire(node, ext, srv, cli)
        self.netns = {HOST: node.path, EXT: ext.path, CLI: cli.path}
        self.servers.start(srv.path)
        self.servers.start(ext.path)

    def wire(self, node: BenchNetns, ext: BenchNetns, srv: BenchNetns, cli: BenchNetns) -> None:
        """A routed /24 per namespace; ext routes them all through the node."""
        for ns, (link, prefix) in zip((srv, cli), BARE_LINKS.values()):
            veth(node, link, ns)
            node.run(["ip", "addr", "add", f"{prefix}.1/24", "dev", link])
            node.run(["ip", "link", "set", link, "up"])
            address(ns, f"{prefix}.2", f"{prefix}.1")
        ext.run(["ip", "route", "add", BARE_NET, "via", NODE_ADDR])
        self.srv_ip = BARE_LINKS["srv"][1] + ".2"

    def teardown(self) -> None:
        self.servers.stop()
        self.stack.close()


class Floor(Bare):
    """One bridge and the NAT rules it needs, by hand: the kernel's floor
    under any bridge network's paths."""

    name = "floor"
    published = True

    def wire(self, node: BenchNetns, ext: BenchNetns, srv: BenchNetns, cli: BenchNetns) -> None:
        gateway, srv_ip, cli_ip = (f"{FLOOR_PREFIX}.{n}" for n in (1, 2, 3))
        node.run(["ip", "link", "add", FLOOR_BRIDGE, "type", "bridge"])
        node.run(["ip", "addr", "add", f"{gateway}/24", "dev", FLOOR_BRIDGE])
        node.run(["ip", "link", "set", FLOOR_BRIDGE, "up"])
        node.run(["sysctl", "-qw", f"net.ipv4.conf.{FLOOR_BRIDGE}.route_localnet=1"])
        for ns, link, ip in ((srv, "fsrv0", srv_ip), (cli, "fcli0", cli_ip)):
            veth(node, link, ns)
            node.run(["ip", "link", "set", link, "master", FLOOR_BRIDGE, "up"])
            address(ns, ip, gateway)
        subnet = f"{FLOOR_PREFIX}.0/24"
        rules = [["POSTROUTING", "-s", subnet, "!", "-o", FLOOR_BRIDGE, "-j", "MASQUERADE"],
                 ["POSTROUTING", "-s", "127.0.0.0/8", "-o", FLOOR_BRIDGE, "-j", "MASQUERADE"]]
        for published, port in ((PUBLISHED_IPERF, IPERF_PORT), (PUBLISHED_ECHO, ECHO_PORT)):
            dnat = ["-p", "tcp", "--dport", str(published), "-j", "DNAT",
                    "--to-destination", f"{srv_ip}:{port}"]
            rules += [["PREROUTING", "-d", NODE_ADDR, *dnat],
                      ["OUTPUT", "-d", f"{NODE_ADDR},127.0.0.1", *dnat]]
        for rule in rules:
            node.run(["iptables", "-t", "nat", "-A", *rule])
        self.srv_ip = srv_ip


def veth(node: BenchNetns, link: str, ns: BenchNetns) -> None:
    """A veth pair: link in the node, eth0 in ns."""
    node.run(["ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns.path])


def address(ns: BenchNetns, ip: str, gateway: str) -> None:
    """ns's eth0 up at ip/24, its default route through gateway."""
    ns.run(["ip", "addr", "add", f"{ip}/24", "dev", "eth0"])
    ns.run(["ip", "link", "set", "eth0", "up"])
    ns.run(["ip", "route", "add", "default", "via", gateway])


class ContainerHost(Host):
    """srv and cli as containers; Docker's command line and ours take the
    same words, so one sequence serves both."""

    archive: Path
    servers: Servers

    def runtime_cmd(self, args: list[str]) -> tuple[list[str], dict]:
        """(argv, environment) of the runtime's command line with args."""
        raise NotImplementedError

    def runtime(self, args: list[str], *, check=True, timeout=CMD_TIMEOUT) -> subprocess.CompletedProcess:
        argv, env = self.runtime_cmd(args)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
        if check and proc.returncode:
            raise RuntimeError(f"{self.name} {' '.join(args[:4])}: "
                               f"{(proc.stderr or proc.stdout).strip()[-300:] or proc.returncode}")
        return proc

    def start_containers(self, node_ns: str, ext_ns: str) -> None:
        """Load the image, start srv (publishing) and cli, wait for srv's
        servers, start ext's."""
        self.runtime(["load", "-i", str(self.archive)])
        self.runtime(["run", "-d", "--name", "srv", *PUBLISH, TOOLS, *SERVE])
        self.runtime(["run", "-d", "--name", "cli", TOOLS, "sleep", "86400"])
        self.srv_ip, srv_netns = address_and_netns(self.runtime(["inspect", "srv"]).stdout)
        _, cli_netns = address_and_netns(self.runtime(["inspect", "cli"]).stdout)
        self.netns = {HOST: node_ns, EXT: ext_ns, CLI: cli_netns}
        wait_listening(srv_netns)
        self.servers.start(ext_ns)

    def remove_containers(self) -> str:
        """`rm -f` both; what it said when it failed."""
        self.servers.stop()
        proc = self.runtime(["rm", "-f", "srv", "cli"], check=False)
        return proc.stderr.strip() if proc.returncode else ""

    def client(self, where: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        if where == CLI:
            cmd, env = self.runtime_cmd(["exec", "cli", *argv])
            return run_gently(cmd, timeout, env=env)
        return super().client(where, argv, timeout)


class Minidocker(ContainerHost):
    """The containers in a harness node (its own state root and cgroup parent)."""

    name = "minidocker"

    def __init__(self, root: Path, archive: Path, backend: str):
        self.root, self.archive, self.backend = root, archive, backend
        self.servers = Servers()
        self.node = None
        self.leftovers: list[str] = []

    def runtime_cmd(self, args: list[str]) -> tuple[list[str], dict]:
        return self.node.cmd([MINIDOCKER, *args]), self.node.env()

    def setup(self) -> None:
        self.node = ClusterNode.create(self.root)
        self.node.firewall = self.backend
        self.namespaces = [self.node.name, self.node.ext]
        self.start_containers(self.node.netns, self.node.ext_netns)

    def teardown(self) -> None:
        if self.node is None:
            return
        try:
            said = self.remove_containers()
            self.leftovers = self.node.leftovers() + ([f"rm -f: {said}"] if said else [])
        finally:
            self.node.destroy()
            self.node = None
        if self.leftovers:
            print(f"bench datapath: `rm -f` left {self.leftovers} (removed with the node)",
                  file=sys.stderr)


class DockerHost(ContainerHost):
    """The containers under Docker 20.10; PeerUnavailable says why not."""

    name = "docker"

    def __init__(self, archive: Path):
        self.archive = archive
        self.stack = contextlib.ExitStack()
        self.servers = Servers()
        self.docker: Docker | None = None

    def runtime_cmd(self, args: list[str]) -> tuple[list[str], dict]:
        return self.docker.cmd(args), self.docker.env

    def setup(self) -> None:
        node, ext = self.throwaway(self.stack, 2)
        self.docker = self.stack.enter_context(Docker(node))
        try:
            self.start_containers(node.path, ext.path)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            raise PeerUnavailable(f"docker: {str(exc)[-300:]}") from exc

    def teardown(self) -> None:
        try:
            if self.docker is not None:
                self.remove_containers()
            else:
                self.servers.stop()
        finally:
            self.stack.close()
            self.docker = None
