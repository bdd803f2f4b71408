"""`node join`, `node leave`, `node ls`, `cluster init`: the engine behind
the cluster commands. join checks everything it can before it changes
anything, then starts the agent and waits until the agent's routes or
overlay reach every live peer; leave is its mirror image."""
from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time

from minidocker import state
from minidocker.cluster import backends, config as cconf, nodestate
from minidocker.cluster.nodestate import NodeState
from minidocker.cluster.store import Store, Unreachable
from minidocker.errors import Conflict, MinidockerError

JOIN_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def init(url: str, cfg: cconf.ClusterConfig) -> bool:
    store = Store(url)
    store.ping()
    return store.init(cfg)


# --- the agent's process ----------------------------------------------------------------

def agent_process():
    """The running agent as a psutil.Process, or None (pid and start time
    must both match: a recycled pid is not our agent)."""
    import psutil
    st = nodestate.read_status()
    pid = st.get("pid")
    if not pid:
        return None
    try:
        proc = psutil.Process(pid)
        return proc if abs(proc.create_time() - st.get("started", -1)) < 0.01 else None
    except psutil.Error:
        return None


def _spawn_agent() -> subprocess.Popen:
    log = nodestate.log_file()
    state.ensure_dir(log.parent)
    argv = [sys.executable, "-m", "minidocker", "node", "agent", "--from-state"]
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, close_fds=True)


def _wait_ready(proc: subprocess.Popen) -> dict:
    deadline = time.monotonic() + JOIN_TIMEOUT
    while time.monotonic() < deadline:
        st = nodestate.read_status()
        if st.get("ready") and st.get("pid") == proc.pid:
            return st
        if st.get("error") or proc.poll() is not None:
            proc.wait(timeout=STOP_TIMEOUT)
            raise MinidockerError(st.get("error") or f"the node agent exited ({proc.returncode}): "
                                  f"{_last_line(nodestate.log_file())}")
        time.sleep(0.02)
    proc.kill()
    proc.wait(timeout=STOP_TIMEOUT)
    raise MinidockerError(f"the node agent was not ready within {JOIN_TIMEOUT:.0f}s; "
                          f"see {nodestate.log_file()}")


def _last_line(path) -> str:
    try:
        lines = [l for l in path.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        lines = []
    return lines[-1].strip() if lines else f"see {path}"


# --- join -------------------------------------------------------------------------------

def public_address(iface: str | None, public_ip: str | None) -> str:
    """--public-ip (it must be this node's), or --iface's first IPv4
    address, or the source address of the default route."""
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        mine = {a.get_attr("IFA_ADDRESS"): a["index"] for a in ipr.get_addr(family=2)}
        if public_ip:
            try:
                ipaddress.IPv4Address(public_ip)
            except ValueError:
                raise MinidockerError(f"invalid --public-ip {public_ip!r}: an IPv4 address") from None
            if public_ip not in mine:
                raise MinidockerError(f"--public-ip {public_ip} is not an address of this node")
            return public_ip
        if iface:
            idx = ipr.link_lookup(ifname=iface)
            if not idx:
                raise MinidockerError(f"invalid --iface {iface!r}: no such link on this node")
            for addr, index in mine.items():
                if index == idx[0]:
                    return addr
            raise MinidockerError(f"--iface {iface} has no IPv4 address")
        for r in ipr.get_default_routes(family=2):
            src = r.get_attr("RTA_PREFSRC")
            oif = r.get_attr("RTA_OIF")
            if src:
                return src
            for addr, index in mine.items():
                if index == oif:
                    return addr
    raise MinidockerError("cannot tell this node's address: give --iface or --public-ip")


def join(url: str, name: str | None, iface: str | None, public_ip: str | None, ttl: int) -> dict:
    name = cconf.check_node_name(name or os.uname().nodename.lower())
    if iface and public_ip:
        raise MinidockerError("give --iface or --public-ip, not both")
    store = Store(url)
    cfg = store.config()
    if cfg is None:
        raise MinidockerError(f"etcd at {url} holds no cluster configuration; "
                              "run `minidocker cluster init --etcd URL` first")
    address = public_address(iface, public_ip)
    have = NodeState.load()
    if have is not None:
        if agent_process() is not None:
            raise Conflict(f"this node already joined as {have.name!r} through {have.etcd}; "
                           "run `minidocker node leave` first")
        if (have.etcd, have.name) != (url, name):
            raise Conflict(f"this node still holds membership {have.name!r} of {have.etcd} "
                           "(its agent is not running); run `minidocker node leave` first")
    clash = backends.host_routes_overlapping(cfg.cluster_cidr, nodestate.PODS_BRIDGE)
    if clash:
        raise MinidockerError(f"cluster range {cfg.cluster_cidr} overlaps routes of this node: "
                              f"{', '.join(clash)}")
    live, _ = store.nodes()
    other = live.get(name)
    if other is not None and other.public_ip != address:
        raise Conflict(f"node name {name!r} is held by a live node at {other.public_ip}")
    st = NodeState(etcd=url, name=name, public_ip=address, ttl=ttl, subnet=have.subnet if have else "")
    st.save()
    nodestate.clear_status()
    try:
        ready = _wait_ready(_spawn_agent())
    except BaseException:
        if have is None:
            NodeState.forget()
        raise
    return {"name": name, "subnet": ready["subnet"], "public_ip": address, "backend": cfg.backend}


def run_agent() -> int:
    from minidocker.cluster import agent
    st = NodeState.load()
    if st is None:
        raise MinidockerError("this node has not joined a cluster: run `minidocker node join --etcd URL`")
    import psutil
    nodestate.write_status(pid=os.getpid(), started=psutil.Process().create_time())
    return agent.main(st)


# --- leave ------------------------------------------------------------------------------

def stop_agent() -> None:
    proc = agent_process()
    if proc is None:
        return
    import psutil
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


def leave() -> list[str]:
    """Stop the agent, remove the cluster network, the data path and the
    lease; what could not be undone is returned (etcd away: the lease
    expires by itself after its TTL)."""
    st = NodeState.load()
    if st is None:
        raise MinidockerError("this node is not in a cluster")
    nodestate.remove_network()          # refused while containers use `pods`: nothing changed yet
    stop_agent()
    from minidocker.services import clustered
    clustered.forget_local()            # the agent programmed them: with it gone, they go
    problems = []
    store = Store(st.etcd)
    try:
        cfg = store.config()
    except Unreachable as exc:
        cfg = None
        problems.append(f"{exc}; the lease of {st.name} expires by itself after {st.ttl}s")
    backend_cfg = cfg or _local_config(st)
    if backend_cfg is not None and st.subnet:
        from minidocker.cluster.store import NodeLease
        me = NodeLease(name=st.name, subnet=st.subnet, public_ip=st.public_ip, backend=backend_cfg.backend)
        b = backends.make(backend_cfg, me)
        try:
            b.teardown()
        finally:
            b.close()
    if cfg is not None and st.subnet:
        try:
            store.release(st.name, st.subnet)
        except Unreachable as exc:
            problems.append(f"{exc}; the lease of {st.name} expires by itself after {st.ttl}s")
    NodeState.forget()
    return problems


def _local_config(st: NodeState) -> cconf.ClusterConfig | None:
    """Without etcd, the backend is known from the kernel: a vxlan device of ours means vxlan."""
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME") or ""
            if name.startswith(backends.VXLAN_PREFIX):
                return cconf.ClusterConfig(backend="vxlan", vni=int(name[len(backends.VXLAN_PREFIX):]))
    return cconf.ClusterConfig(backend="host-gw")


# --- ls ---------------------------------------------------------------------------------

def ls(url: str | None) -> list[dict]:
    """Every node in etcd: the live ones (a lease) and the reserved ones
    whose lease expired (health: NotReady)."""
    if url is None:
        st = NodeState.load()
        if st is None:
            raise MinidockerError("give --etcd URL (this node has not joined a cluster)")
        url = st.etcd
    store = Store(url)
    live, _ = store.nodes()
    rows = [{"Name": n.name, "Subnet": n.subnet, "PublicIP": n.public_ip, "Backend": n.backend,
             "Health": "Ready"} for n in live.values()]
    for name, subnet in store.reservations().items():
        if name not in live:
            rows.append({"Name": name, "Subnet": subnet, "PublicIP": "", "Backend": "", "Health": "NotReady"})
    return sorted(rows, key=lambda r: r["Name"])


def describe() -> dict | None:
    """The Cluster block of `network inspect pods`: this node, its peers and
    the routes / FDB entries the agent made for them."""
    st = NodeState.load()
    if st is None:
        return None
    from minidocker.cluster.store import NodeLease
    out = {"Node": st.name, "Subnet": st.subnet, "PublicIP": st.public_ip, "Etcd": st.etcd,
           "AgentPid": (agent_process().pid if agent_process() else 0)}
    try:
        store = Store(st.etcd, timeout=1.0)
        cfg = store.config()
        live, _ = store.nodes()
        out["Peers"] = [{"Name": n.name, "Subnet": n.subnet, "PublicIP": n.public_ip}
                        for n in sorted(live.values(), key=lambda n: n.name) if n.name != st.name]
    except Unreachable as exc:
        cfg, out["Peers"] = _local_config(st), []
        out["EtcdError"] = exc.message
    b = backends.make(cfg, NodeLease(name=st.name, subnet=st.subnet, public_ip=st.public_ip,
                                     backend=cfg.backend))
    try:
        out.update(b.describe())
    finally:
        b.close()
    return out
