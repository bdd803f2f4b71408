"""The node agent: keeps this node's lease alive and converges the kernel to
the live peers in etcd, like flanneld with its etcd backend.

One loop, one owner: the agent is the only writer of the backend's routes,
vxlan device, FDB and neighbour entries. It reconciles on every watch event
and every RESYNC seconds (a watch lost while etcd restarts is caught by the
resync), so a restarted agent converges from etcd and the kernel alone.
Killing it leaves the data path up; `node leave` removes it.

etcd unreachable: the kernel keeps the last known state, retries back off
(1 s doubling to 10 s), and the log gets one line per state change.
"""
from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time

from minidocker.cluster import backends, config as cconf, nodestate
from minidocker.cluster.store import NodeLease, Store, Unreachable
from minidocker.errors import MinidockerError

RESYNC = 5.0
RECOVERED = {"etcd": "etcd reachable again", "reconcile": "reconcile succeeded again",
             "services": "services programmed again"}
MAX_BACKOFF = 10.0


def log(line: str) -> None:
    sys.stderr.write(time.strftime("%Y-%m-%dT%H:%M:%S ") + line + "\n")
    sys.stderr.flush()


class Agent:
    def __init__(self, state: nodestate.NodeState):
        self.state = state
        self.store = Store(state.etcd)
        self.cfg: cconf.ClusterConfig | None = None
        self.me: NodeLease | None = None
        self.lease = None
        self.backend: backends.Backend | None = None
        self.events: queue.Queue = queue.Queue()
        self.watcher = None
        self.stopping = threading.Event()
        self.problems: dict[str, str] = {}     # what -> the problem last logged
        self.peers: dict[str, NodeLease] = {}

    # --- start: lease, cluster network, data path ------------------------------------
    def start(self) -> None:
        """Everything `node join` waits for; on failure, what was made is undone."""
        cfg = self.store.config()
        if cfg is None:
            raise MinidockerError(f"etcd at {self.state.etcd} holds no cluster configuration; "
                                  "run `minidocker cluster init --etcd URL` first")
        self.cfg = cfg
        self.claim()
        made_network = False
        try:
            made_network = nodestate.ensure_network(cfg, self.me)
            self.backend = backends.make(cfg, self.me)
            self.backend.setup()
            self.resync()
        except BaseException:
            if self.backend is not None:
                self.backend.teardown()
            if made_network:
                nodestate.remove_network()
            self.store.release(self.me.name, self.me.subnet, self.lease)
            raise
        self.state.subnet = self.me.subnet
        self.state.save()

    def claim(self) -> None:
        """A lease and a subnet: the node's previous one when still free."""
        cfg, name = self.cfg, self.state.name
        lease = self.store.grant(self.state.ttl)
        try:
            for _ in range(20):     # lost races with other joining nodes
                taken = self.store.taken_subnets()
                holder_of = {v: k for k, v in taken.items()}
                preferred = holder_of.get(name) or self.store.reservation(name) or self.state.subnet
                subnet = cconf.pick_subnet(cfg, {s for s, h in taken.items() if h != name}, preferred)
                me = NodeLease(name=name, subnet=subnet, public_ip=self.state.public_ip, backend=cfg.backend,
                               vtep_mac=cconf.vtep_mac(subnet, cfg.vni) if cfg.backend == "vxlan" else "")
                if self.store.claim(me, lease, taken.get(subnet)):
                    self.me, self.lease = me, lease
                    nodestate.write_status(lease=lease.id)   # commands publish pods on it
                    return
            raise MinidockerError("could not lease a subnet: other nodes kept taking the free ones")
        except BaseException:
            self.store.revoke(lease)     # no lease left behind by a node that did not join
            raise

    # --- the loop ---------------------------------------------------------------------
    def resync(self) -> None:
        nodes, revision = self.store.nodes()
        if self.me.name not in nodes:          # our lease expired (etcd was away past the TTL)
            log(f"lease of {self.me.name} lost: claiming it again")
            self.claim()
            nodes, revision = self.store.nodes()
        peers = [n for name, n in sorted(nodes.items()) if name != self.me.name]
        self.backend.reconcile(peers)
        changed = {p.name: p for p in peers} != self.peers
        self.peers = {p.name: p for p in peers}
        if changed:
            log(f"peers: {', '.join(f'{p.name}={p.subnet}@{p.public_ip}' for p in peers) or 'none'}")
        self.services()
        if self.watcher is None:
            self._watch(revision + 1)

    def services(self) -> None:
        """The cluster's services on this node (services/clustered.py), as
        kube-proxy on every node; a failure is logged, the peers stay."""
        from minidocker.services import clustered, dataplane
        try:
            clustered.converge(self.store, self.me.name, self.lease.id, dataplane.backend())
            self._state_is("services", "")
        except Unreachable:
            raise
        except MinidockerError as exc:
            self._state_is("services", f"services: {exc.message}")

    def _watch(self, revision: int) -> None:
        from etcd3gw.watch import Watcher
        from minidocker.cluster.store import PREFIX
        try:   # nodes, services and endpoints: any change is a resync
            end = PREFIX[:-1] + chr(ord(PREFIX[-1]) + 1)
            self.watcher = Watcher(self.store.client, PREFIX, self.events.put, start_revision=revision,
                                   range_end=end)
        except Exception:  # noqa: BLE001 - no watch now: the resync covers it, retried next round
            self.watcher = None

    def _unwatch(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None

    def run(self) -> None:
        refresh_every = max(1.0, self.state.ttl / 3)
        next_refresh = next_sync = 0.0
        backoff = 1.0
        while not self.stopping.is_set():
            now = time.monotonic()
            try:
                if now >= next_refresh:
                    if self.store.refresh(self.lease) <= 0:
                        self.resync()           # re-claims
                    next_refresh = now + refresh_every
                if now >= next_sync or self._drain():
                    self.resync()
                    next_sync = now + RESYNC
                self._state_is("etcd", "")
                self._state_is("reconcile", "")
                backoff = 1.0
                wait = min(next_refresh, next_sync) - time.monotonic()
            except Unreachable as exc:
                if self._state_is("etcd", f"{exc.message}; keeping the last known peers, retrying"):
                    self._unwatch()
                wait, backoff = backoff, min(backoff * 2, MAX_BACKOFF)
                next_refresh = next_sync = 0.0
            except MinidockerError as exc:
                self._state_is("reconcile", f"reconcile failed: {exc.message}")
                wait, backoff = backoff, min(backoff * 2, MAX_BACKOFF)
                next_sync = 0.0
            try:
                self.events.get(timeout=max(0.0, wait))
                self.events.put(None)       # seen by _drain next round
            except queue.Empty:
                pass
        self._unwatch()

    def _state_is(self, what: str, problem: str) -> bool:
        """Log a problem once when it starts and once when it ends ("" = none);
        True when this call changed the state."""
        before = self.problems.get(what, "")
        if before == problem:
            return False
        self.problems[what] = problem
        log(problem or RECOVERED[what])
        return True

    def _drain(self) -> bool:
        got = False
        while True:
            try:
                self.events.get_nowait()
                got = True
            except queue.Empty:
                return got


def main(state: nodestate.NodeState) -> int:
    """The agent's process: start, announce readiness, loop until TERM."""
    agent = Agent(state)
    signal.signal(signal.SIGTERM, lambda *_: agent.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: agent.stopping.set())
    try:
        agent.start()
    except MinidockerError as exc:
        nodestate.write_status(error=exc.message)
        log(f"Error: {exc.message}")
        return 1
    nodestate.write_status(ready=True, pid=os.getpid(), subnet=agent.me.subnet)
    log(f"node {agent.me.name} holds {agent.me.subnet} ({agent.cfg.backend}); agent pid {os.getpid()}")
    agent.run()
    log("agent stopped; the data path stays until `node leave`")
    return 0
