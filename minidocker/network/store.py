"""Networks: the records behind `network create / ls / inspect / rm`.

A native network is a small JSON record (name, id, subnets, options) plus one
endpoint file per attached container; the network's kernel objects (bridge,
veths, rules, leases) belong to the cni-bridge plugin, driven through the CNI
executor. `bridge`, `host` and `none` always exist, as in Docker; the
`bridge` record (device minidocker0) is written on first use.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import asdict, dataclass, field

from minidocker import paths, state
from minidocker.errors import Conflict, MinidockerError, NotFound
from minidocker.network import subnets
from minidocker.network.subnets import SubnetError

DEFAULT_NETWORK = "bridge"
DEFAULT_BRIDGE = "minidocker0"
USER_BRIDGE_PREFIX = "mdbr-"
BUILTIN_DRIVERS = {"bridge": "bridge", "host": "host", "none": "null"}

OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_MTU = "com.docker.network.driver.mtu"
OPT_ICC = "com.docker.network.bridge.enable_icc"
# Destinations the network's containers reach with their own address (not
# masqueraded), comma-separated CIDRs: a cluster's pod range (cni-bridge's
# nonMasqueradeCIDRs).
OPT_NO_MASQ = "minidocker.network.non_masquerade_cidrs"
ACCEPTED_OPTIONS = (OPT_BRIDGE_NAME, OPT_MTU, OPT_ICC, OPT_NO_MASQ)

# The name becomes a lease directory, a veth alias and part of rule comments.
MAX_NAME = 128
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z")  # \Z: `$` allows a trailing newline
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}\Z")


@dataclass
class IPAMConfig:
    subnet: str
    gateway: str
    ip_range: str = ""

    def docker(self) -> dict:
        out = {"Subnet": self.subnet, "Gateway": self.gateway}
        if self.ip_range:
            out["IPRange"] = self.ip_range
        return out


@dataclass
class Network:
    name: str
    id: str
    driver: str = "bridge"
    created: str = ""
    bridge: str = ""
    ipam: list[IPAMConfig] = field(default_factory=list)
    ipv6: bool = False
    internal: bool = False
    options: dict[str, str] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def icc(self) -> bool:
        return self.options.get(OPT_ICC, "true").lower() != "false"

    @property
    def mtu(self) -> int | None:
        value = self.options.get(OPT_MTU)
        return int(value) if value else None

    @property
    def no_masq_to(self) -> list[str]:
        value = self.options.get(OPT_NO_MASQ, "")
        return [c for c in value.split(",") if c]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Network":
        d = dict(d)
        d["ipam"] = [IPAMConfig(**c) for c in d.get("ipam", [])]
        return cls(**d)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


def _record_path(net_id: str):
    return paths.networks_dir() / net_id / "network.json"


def _lock():
    return state.locked(paths.locks_dir() / "networks.lock")


def _builtin(name: str) -> Network:
    # Stable ids for the two that have no record, so `ls` and `inspect` agree
    # (a hash of the name: their 12-character short ids differ too).
    import hashlib
    return Network(name=name, id=hashlib.sha256(f"minidocker/{name}".encode()).hexdigest(),
                   driver=BUILTIN_DRIVERS[name])


def records() -> list[Network]:
    """Every native network with a record on disk, oldest first."""
    base = paths.networks_dir()
    out = []
    if base.is_dir():
        for entry in sorted(os.listdir(base)):
            data = state.read_json(base / entry / "network.json")
            if isinstance(data, dict):
                try:
                    out.append(Network.from_dict(data))
                except (TypeError, KeyError, ValueError):
                    continue  # a corrupt record is reported by `system prune`, not here
    return sorted(out, key=lambda n: n.created)


def all_networks() -> list[Network]:
    """What `network ls` shows: bridge, host, none, then user networks."""
    recs = records()
    default = next((n for n in recs if n.name == DEFAULT_NETWORK), None)
    out = [default or Network(name=DEFAULT_NETWORK, id="", driver="bridge", bridge=DEFAULT_BRIDGE),
           _builtin("host"), _builtin("none")]
    out += [n for n in recs if n.name != DEFAULT_NETWORK]
    return out


def get(ref: str) -> Network:
    """A network by name, full id or unique id prefix."""
    if ref in ("host", "none"):
        return _builtin(ref)
    for name in ("host", "none"):  # by id, as `network ls` shows it
        if len(ref) >= 12 and _builtin(name).id.startswith(ref):
            return _builtin(name)
    if ref == DEFAULT_NETWORK:
        return ensure_default()
    return match_ref(records(), ref)


def match_ref(nets: list, ref: str):
    """The one of `nets` named `ref`, with id `ref`, or whose id starts with it."""
    for net in nets:
        if net.name == ref or net.id == ref:
            return net
    matches = [n for n in nets if ref and n.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise MinidockerError(f"network id prefix {ref!r} is ambiguous; give more characters")
    raise NotFound(f"network {ref!r} not found; see `minidocker network ls`")


def _used_subnets(recs: list[Network]) -> list:
    used = [ipaddress.ip_network(c.subnet) for n in recs for c in n.ipam]
    return used + subnets.host_routes()


def _validate_options(options: dict[str, str], recs: list[Network]) -> dict[str, str]:
    for key, value in options.items():
        if key not in ACCEPTED_OPTIONS:
            raise MinidockerError(f"unknown network option {key!r}; accepted: {', '.join(ACCEPTED_OPTIONS)}")
        if key == OPT_BRIDGE_NAME:
            if not _IFNAME_RE.match(value) or value in (".", ".."):
                raise MinidockerError(f"invalid bridge name {value!r}: 1-15 characters of "
                                      "letters, digits, '_', '.', '-'")
            other = next((n for n in recs if n.bridge == value), None)
            if other:
                raise Conflict(f"bridge name {value!r} is already used by network {other.name!r}")
        elif key == OPT_MTU:
            if not value.isdigit() or not 68 <= int(value) <= 65535:
                raise MinidockerError(f"invalid MTU {value!r}: a number from 68 to 65535")
        elif key == OPT_ICC:
            if value.lower() not in ("true", "false"):
                raise MinidockerError(f"invalid {OPT_ICC} {value!r}: true or false")
        elif key == OPT_NO_MASQ:
            for cidr in value.split(","):
                try:
                    ipaddress.ip_network(cidr, strict=False)
                except ValueError:
                    raise MinidockerError(f"invalid {OPT_NO_MASQ} entry {cidr!r}: comma-separated "
                                          "CIDRs such as 10.244.0.0/16") from None
    return dict(options)


@dataclass
class CreateRequest:
    """`network create` flags; lists pair up by position as Docker's do."""
    name: str
    driver: str = "bridge"
    subnets: list[str] = field(default_factory=list)
    gateways: list[str] = field(default_factory=list)
    ip_ranges: list[str] = field(default_factory=list)
    internal: bool = False
    ipv6: bool = False
    options: dict[str, str] = field(default_factory=dict)


def _plan_ipam(req: CreateRequest, taken: list) -> list[IPAMConfig]:
    if len(req.gateways) > len(req.subnets) or len(req.ip_ranges) > len(req.subnets):
        raise MinidockerError("--gateway and --ip-range each need a --subnet to belong to")
    configs: list[IPAMConfig] = []
    nets = []
    for i, text in enumerate(req.subnets):
        net = subnets.parse_subnet(text)
        clash = subnets.overlapping(net, taken + nets)
        if clash is not None:
            raise SubnetError(f"subnet {net} overlaps {clash}, already in use on this host")
        gw = subnets.check_gateway(net, req.gateways[i] if i < len(req.gateways) else None)
        rng = subnets.check_ip_range(net, req.ip_ranges[i] if i < len(req.ip_ranges) else None)
        nets.append(net)
        configs.append(IPAMConfig(str(net), gw, str(rng) if rng else ""))
    families = {ipaddress.ip_network(c.subnet).version for c in configs}
    if 6 in families and not req.ipv6:
        raise MinidockerError("an IPv6 --subnet needs --ipv6")
    if 4 not in families:
        net = subnets.choose(taken + nets, 4)
        configs.insert(0, IPAMConfig(str(net), subnets.check_gateway(net, None)))
    if req.ipv6 and 6 not in families:
        net = subnets.choose(taken + nets, 6)
        configs.append(IPAMConfig(str(net), subnets.check_gateway(net, None)))
    return configs


def create(req: CreateRequest) -> Network:
    """Create a native bridge network; one name wins under concurrency."""
    if not _NAME_RE.match(req.name or "") or len(req.name) > MAX_NAME:
        shown = req.name if len(req.name or "") <= 40 else req.name[:40] + "..."
        raise MinidockerError(f"invalid network name {shown!r}: letters, digits and '_.-', "
                              f"starting with a letter or digit, at most {MAX_NAME} characters")
    if req.driver != "bridge":
        raise MinidockerError(f"unsupported network driver {req.driver!r}; accepted: bridge")
    if req.name in BUILTIN_DRIVERS:
        raise Conflict(f"network name {req.name!r} is reserved")
    with _lock():
        recs = records()
        if any(n.name == req.name for n in recs):
            raise Conflict(f"network with name {req.name!r} already exists")
        options = _validate_options(req.options, recs)
        try:
            ipam = _plan_ipam(req, _used_subnets(recs))
        except SubnetError as exc:
            raise MinidockerError(str(exc)) from None
        net_id = os.urandom(32).hex()
        net = Network(name=req.name, id=net_id, driver="bridge", created=_now(),
                      bridge=options.get(OPT_BRIDGE_NAME, USER_BRIDGE_PREFIX + net_id[:10]),
                      ipam=ipam, ipv6=req.ipv6, internal=req.internal, options=options)
        state.write_json(_record_path(net_id), net.to_dict())
        return net


def ensure_default() -> Network:
    """The `bridge` network, recorded on first use with a free pool subnet."""
    for net in records():
        if net.name == DEFAULT_NETWORK:
            return net
    with _lock():
        recs = records()
        for net in recs:
            if net.name == DEFAULT_NETWORK:
                return net
        try:
            sub = subnets.choose(_used_subnets(recs), 4)
        except SubnetError as exc:
            raise MinidockerError(str(exc)) from None
        net_id = os.urandom(32).hex()
        net = Network(name=DEFAULT_NETWORK, id=net_id, created=_now(), bridge=DEFAULT_BRIDGE,
                      ipam=[IPAMConfig(str(sub), subnets.check_gateway(sub, None))])
        state.write_json(_record_path(net_id), net.to_dict())
        return net


# --- endpoints: which containers are attached -----------------------------

def _endpoint_dir(net: Network):
    return paths.networks_dir() / net.id / "endpoints"


def endpoints(net: Network) -> dict[str, dict]:
    """container id -> endpoint record (name, ifname, addresses, veth...)."""
    out = {}
    base = _endpoint_dir(net)
    if net.id and base.is_dir():
        for entry in sorted(os.listdir(base)):
            if entry.endswith(".json"):
                data = state.read_json(base / entry)
                if isinstance(data, dict):
                    out[entry[:-5]] = data
    return out


def add_endpoint(net: Network, container_id: str, endpoint: dict) -> None:
    state.write_json(_endpoint_dir(net) / f"{container_id}.json", endpoint)


def remove_endpoint(net: Network, container_id: str) -> None:
    try:
        os.unlink(_endpoint_dir(net) / f"{container_id}.json")
    except FileNotFoundError:
        pass


def remove(ref: str, stale=None) -> Network:
    """Forget a network; refused for the built-ins and while containers are
    attached. `stale(container_id)` may say an endpoint's container is gone
    (its record was deleted without a teardown): such endpoints do not hold
    the network. The caller removes the kernel objects of the returned network."""
    if ref in BUILTIN_DRIVERS:
        raise MinidockerError(f"{ref} is a pre-defined network and cannot be removed")
    with _lock():
        net = get(ref)
        if net.name in BUILTIN_DRIVERS:
            raise MinidockerError(f"{net.name} is a pre-defined network and cannot be removed")
        attached = endpoints(net)
        for cid in [c for c in attached if stale and stale(c)]:
            remove_endpoint(net, cid)
            del attached[cid]
        if attached:
            names = ", ".join(sorted(e.get("Name", cid[:12]) for cid, e in attached.items()))
            raise Conflict(f"network {net.name} has active endpoints ({names}); "
                           "stop or disconnect them first")
        record = _record_path(net.id)
        try:
            os.unlink(record)
        except FileNotFoundError:
            pass
        # the record is gone, so the rest of the directory (endpoints, the
        # IPAM data dir when it lives here) is no one's any more
        import shutil
        shutil.rmtree(record.parent, ignore_errors=True)
        return net
