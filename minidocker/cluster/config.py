"""The cluster's configuration and the facts derived from it: which /N out
of the cluster range a node may lease, and what each backend needs. Pure
data, no etcd and no kernel, so every check runs before anything changes."""
from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import asdict, dataclass

from minidocker.errors import MinidockerError

BACKENDS = ("host-gw", "vxlan")
DEFAULT_CIDR = "10.244.0.0/16"
DEFAULT_PREFIX = 24
MAX_NODE_PREFIX = 30          # a /31 or /32 leaves no container address
VXLAN_OVERHEAD = 50           # outer IPv4 + UDP + VXLAN headers
NETWORK = "pods"              # the cluster network every node's containers join
NODE_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")   # a DNS label-ish, as Kubernetes'


@dataclass(frozen=True)
class ClusterConfig:
    cluster_cidr: str = DEFAULT_CIDR
    node_prefix: int = DEFAULT_PREFIX
    backend: str = "vxlan"
    vni: int = 1
    port: int = 4789

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cluster_cidr)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ClusterConfig":
        try:
            data = json.loads(text)
            return validate(cls(**data))
        except (ValueError, TypeError) as exc:
            raise MinidockerError(f"the cluster configuration in etcd is unreadable: {exc}") from None

    def subnets(self):
        """Every node subnet, in order (the first one too: flannel skips it,
        Kubernetes does not; we keep .0/24 free for nothing)."""
        return self.network.subnets(new_prefix=self.node_prefix)

    def capacity(self) -> int:
        return 2 ** (self.node_prefix - self.network.prefixlen)


def validate(cfg: ClusterConfig) -> ClusterConfig:
    """Refuse what cannot work, naming the value and what is accepted."""
    try:
        net = ipaddress.ip_network(cfg.cluster_cidr, strict=True)
    except ValueError:
        raise MinidockerError(f"invalid --cluster-cidr {cfg.cluster_cidr!r}: an IPv4 network "
                              "such as 10.244.0.0/16 (host bits zero)") from None
    if net.version != 4:
        raise MinidockerError(f"invalid --cluster-cidr {cfg.cluster_cidr!r}: IPv4 only")
    if not isinstance(cfg.node_prefix, int) or not 1 <= cfg.node_prefix <= MAX_NODE_PREFIX:
        raise MinidockerError(f"invalid --node-prefix {cfg.node_prefix!r}: 1 to {MAX_NODE_PREFIX} "
                              "(a longer prefix leaves no address for a container)")
    if cfg.node_prefix <= net.prefixlen:
        raise MinidockerError(f"--cluster-cidr {cfg.cluster_cidr} is too small for /{cfg.node_prefix} "
                              f"node subnets: the node prefix must be longer than /{net.prefixlen}")
    if cfg.backend not in BACKENDS:
        raise MinidockerError(f"invalid --backend {cfg.backend!r}; accepted: {', '.join(BACKENDS)}")
    if not isinstance(cfg.vni, int) or not 1 <= cfg.vni <= 2 ** 24 - 1:
        raise MinidockerError(f"invalid --vni {cfg.vni!r}: 1 to 16777215")
    if not isinstance(cfg.port, int) or not 1 <= cfg.port <= 65535:
        raise MinidockerError(f"invalid --port {cfg.port!r}: 1 to 65535")
    return cfg


def check_node_name(name: str) -> str:
    if not NODE_NAME_RE.match(name or ""):
        raise MinidockerError(f"invalid node name {name!r}: lower-case letters, digits, '-' and '.', "
                              "starting and ending with a letter or digit, at most 63 characters")
    return name


def parse_ttl(text: str) -> int:
    """`30s`, `2m` or a plain number of seconds; etcd's leases count whole seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*(s|m)?\s*", str(text))
    if not m:
        raise MinidockerError(f"invalid --lease-ttl {text!r}: seconds such as 30s or 2m")
    seconds = int(m.group(1)) * (60 if m.group(2) == "m" else 1)
    if not 3 <= seconds <= 3600:
        raise MinidockerError(f"invalid --lease-ttl {text!r}: between 3s and 1h")
    return seconds


def pick_subnet(cfg: ClusterConfig, taken: set[str], preferred: str | None) -> str:
    """The node's subnet: its previous one when still free (a restarted node
    keeps its containers' addresses), else the first free one."""
    if preferred and preferred not in taken:
        sub = ipaddress.ip_network(preferred)
        if sub.subnet_of(cfg.network) and sub.prefixlen == cfg.node_prefix:
            return preferred
    for sub in cfg.subnets():
        if str(sub) not in taken:
            return str(sub)
    raise MinidockerError(f"no free /{cfg.node_prefix} left in cluster range {cfg.cluster_cidr} "
                          f"({cfg.capacity()} node subnets, all leased)")


def gateway(subnet: str) -> str:
    """The bridge's address in a node subnet: the first host, as Docker's."""
    return str(next(ipaddress.ip_network(subnet).hosts()))


def vtep_address(subnet: str) -> str:
    """The vxlan device's own address: the subnet's network address, as
    flannel gives flannel.1 (never handed to a container)."""
    return str(ipaddress.ip_network(subnet).network_address)


def vtep_mac(subnet: str, vni: int) -> str:
    """A stable, locally administered MAC per (subnet, VNI): a restarted
    agent re-creates the device with the address its peers already know."""
    net = ipaddress.ip_network(subnet)
    octets = [0x0A, vni & 0xFF] + list(net.network_address.packed)
    return ":".join(f"{o:02x}" for o in octets)


def mtu(cfg: ClusterConfig, underlay_mtu: int) -> int:
    return underlay_mtu - VXLAN_OVERHEAD if cfg.backend == "vxlan" else underlay_mtu
