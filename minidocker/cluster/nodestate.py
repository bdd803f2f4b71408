"""This node's membership: what `node join` asked for (kept under the state
root, so `node leave` and a restarted agent know it), the agent's status
(under the run root: it dies with the machine), and the cluster network
`pods` the node's containers join."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from minidocker import paths, state
from minidocker.cluster import config as cconf
from minidocker.cluster.store import NodeLease
from minidocker.errors import MinidockerError

PODS_BRIDGE = "mdpods0"


def node_file():
    return Path(paths.state_root()) / "cluster" / "node.json"


def status_file():
    return Path(paths.run_root()) / "cluster" / "agent.json"


def log_file():
    return Path(paths.run_root()) / "cluster" / "agent.log"


@dataclass
class NodeState:
    etcd: str
    name: str
    public_ip: str
    ttl: int = 30
    subnet: str = ""

    def save(self) -> None:
        state.write_json(node_file(), asdict(self))

    @classmethod
    def load(cls) -> "NodeState | None":
        data = state.read_json(node_file())
        return cls(**data) if data else None

    @staticmethod
    def forget() -> None:
        for f in (node_file(), status_file(), log_file()):
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass


def write_status(**fields) -> None:
    """Add fields to the agent's status (pid and start time first, then
    ready or error)."""
    state.write_json(status_file(), {**read_status(), **fields})


def clear_status() -> None:
    state.write_json(status_file(), {})


def read_status() -> dict:
    return state.read_json(status_file()) or {}


# --- the cluster network --------------------------------------------------------------

def _underlay_mtu(public_ip: str) -> int:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        for a in ipr.get_addr(family=2):
            if a.get_attr("IFA_ADDRESS") == public_ip:
                return ipr.get_links(a["index"])[0].get_attr("IFLA_MTU")
    raise MinidockerError(f"address {public_ip} is on no link of this node")


def ensure_network(cfg: cconf.ClusterConfig, me: NodeLease) -> bool:
    """The `pods` network on the node's subnet; True when made now. A `pods`
    network on another subnet (a node that got a new one) is replaced when
    no container uses it."""
    from minidocker.network import networks, store
    try:
        net = networks.get(cconf.NETWORK)
    except MinidockerError:
        net = None
    if net is not None:
        if [c.subnet for c in net.ipam] == [me.subnet]:
            return False
        remove_network()
    mtu = cconf.mtu(cfg, _underlay_mtu(me.public_ip))
    store.create(store.CreateRequest(
        name=cconf.NETWORK, subnets=[me.subnet], gateways=[cconf.gateway(me.subnet)],
        options={networks.OPT_BRIDGE_NAME: PODS_BRIDGE, networks.OPT_MTU: str(mtu),
                 networks.OPT_NO_MASQ: cfg.cluster_cidr}))
    return True


def remove_network() -> None:
    """`network rm pods`: refused while containers are attached."""
    from minidocker.network.driver import remove_network as rm
    try:
        rm(cconf.NETWORK)
    except MinidockerError as exc:
        if "not found" not in exc.message:
            raise
