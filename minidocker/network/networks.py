"""THE network type and THE resolver: native networks and networks of the
CNI configuration directory alike.

A native network is a small JSON record (`networks/<id>/network.json`:
name, id, subnets, options) that minidocker turns into a cni-bridge network
list (driver.py). A CNI-file network is a file the administrator owns
(driver `cni`): minidocker lists, inspects and attaches to it but never
creates or removes it; its id is a hash of its name (which picks the file),
so `ls`, `run --network ID` and endpoints recorded under it agree across
edits of the file, and `digest` (of the file's bytes) tells an edit apart.

`resolve(ref)` finds either by name, full id or unique id prefix, native
first (a CNI file whose name a native network has is shadowed); `run`
resolves once at create and carries the id in the record. `bridge`, `host`
and `none` always exist, as in Docker; the `bridge` record (device
minidocker0) is written on first use (`ensure_default`). Changing native
records (create, rm) and the endpoint index are store.py's.
"""
from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from pathlib import Path

from cni.record import Record
from minidocker import paths, state
from minidocker.errors import MinidockerError, NotFound
from minidocker.network import subnets
from minidocker.network.subnets import SubnetError

DEFAULT_NETWORK = "bridge"
DEFAULT_BRIDGE = "minidocker0"
BUILTIN_DRIVERS = {"bridge": "bridge", "host": "host", "none": "null"}
#: The driver of a network of the CNI configuration directory.
CNI_DRIVER = "cni"

OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_MTU = "com.docker.network.driver.mtu"
OPT_ICC = "com.docker.network.bridge.enable_icc"
# Destinations the network's containers reach with their own address (not
# masqueraded), comma-separated CIDRs: a cluster's pod range (cni-bridge's
# nonMasqueradeCIDRs).
OPT_NO_MASQ = "minidocker.network.non_masquerade_cidrs"
# The VIPs of the services on this network (default: MINIDOCKER_SERVICE_RANGE
# or 10.96.0.0/16).
OPT_SERVICE_RANGE = "minidocker.network.service_range"

#: Only a CNI-file network has these (they are never written to a record).
_FILE_FIELDS = ("source", "digest", "cni_version", "plugins")


class IPAMConfig(Record):
    subnet: str
    gateway: str
    ip_range: str = ""

    def docker(self) -> dict:
        out = {"Subnet": self.subnet}
        if self.gateway:
            out["Gateway"] = self.gateway
        if self.ip_range:
            out["IPRange"] = self.ip_range
        return out


class Network(Record):
    FACTORIES = {"ipam": list, "options": dict, "plugins": list}
    name: str
    id: str
    driver: str = "bridge"
    created: str = ""
    bridge: str = ""
    ipam: list[IPAMConfig]
    ipv6: bool = False
    internal: bool = False
    options: dict[str, str]
    # a network of the CNI configuration directory (driver `cni`):
    source: str = ""          # its file
    digest: str = ""          # sha256 of the file's bytes
    cni_version: str = ""
    plugins: list[str]   # the plugin types of its chain

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def from_file(self) -> bool:
        """A network of the CNI configuration directory (not minidocker's)."""
        return self.driver == CNI_DRIVER

    @property
    def names_containers(self) -> bool:
        """Containers on it find each other by name (Docker: not the default bridge)."""
        return self.name != DEFAULT_NETWORK

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
        out = self.as_dict()
        for key in _FILE_FIELDS:
            out.pop(key)
        out["ipam"] = [c.as_dict() for c in self.ipam]
        out["options"] = dict(self.options)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Network":
        d = dict(d)
        d["ipam"] = [IPAMConfig(**c) for c in d.get("ipam", [])]
        return cls(**d)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


def record_path(net_id: str):
    return Path(paths.networks_dir()) / net_id / "network.json"


def lock():
    """The network records' lock (create, rm, the default's first use)."""
    return state.locked(Path(paths.locks_dir()) / "networks.lock")


def cni_id(name: str) -> str:
    """The id of a CNI-file network: a hash of its name."""
    return hashlib.sha256(f"cni/{name}".encode()).hexdigest()


def _builtin(name: str) -> Network:
    # Stable ids for the two that have no record, so `ls` and `inspect` agree
    # (a hash of the name: their 12-character short ids differ too).
    return Network(name=name, id=hashlib.sha256(f"minidocker/{name}".encode()).hexdigest(),
                   driver=BUILTIN_DRIVERS[name])


# --- native networks -----------------------------------------------------------------

def records() -> list[Network]:
    """Every native network with a record on disk, oldest first."""
    base = Path(paths.networks_dir())
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


def by_id(net_id: str) -> Network | None:
    """A native network by its full id: one file read (a carried id)."""
    if not net_id or "/" in net_id or net_id.startswith("."):
        return None
    data = state.read_json(record_path(net_id))
    try:
        return Network.from_dict(data) if isinstance(data, dict) else None
    except (TypeError, KeyError, ValueError):
        return None


def used_subnets(recs: list[Network]) -> list:
    used = [ipaddress.ip_network(c.subnet) for n in recs for c in n.ipam]
    return used + subnets.host_routes()


def ensure_default() -> Network:
    """The `bridge` network, recorded on first use with a free pool subnet."""
    for net in records():
        if net.name == DEFAULT_NETWORK:
            return net
    with lock():
        recs = records()
        for net in recs:
            if net.name == DEFAULT_NETWORK:
                return net
        try:
            sub = subnets.choose(used_subnets(recs), 4)
        except SubnetError as exc:
            raise MinidockerError(str(exc)) from None
        net_id = os.urandom(32).hex()
        net = Network(name=DEFAULT_NETWORK, id=net_id, created=now(), bridge=DEFAULT_BRIDGE,
                      ipam=[IPAMConfig(str(sub), subnets.check_gateway(sub, None))])
        state.write_json(record_path(net_id), net.to_dict())
        return net


def native() -> list[Network]:
    """What `network ls` shows first: bridge, host, none, then user networks."""
    recs = records()
    default = next((n for n in recs if n.name == DEFAULT_NETWORK), None)
    out = [default or Network(name=DEFAULT_NETWORK, id="", driver="bridge", bridge=DEFAULT_BRIDGE),
           _builtin("host"), _builtin("none")]
    out += [n for n in recs if n.name != DEFAULT_NETWORK]
    return out


def get(ref: str) -> Network:
    """A native network (or host / none) by name, full id or unique id prefix."""
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


# --- networks of the CNI configuration directory ----------------------------------

def file_networks(shadowed: bool = False) -> list[Network]:
    """The valid networks of the conf dir, in libcni's order, without those
    a native network's name shadows (unless `shadowed`). Invalid files are
    skipped silently here: `minidocker cni ls` reports them."""
    from minidocker.network.cni import config  # the CNI protocol modules only when needed
    taken = set() if shadowed else {n.name for n in records()} | set(BUILTIN_DRIVERS)
    out = []
    for conf in config.load_dir(Path(paths.cni_conf_dir()), warn=False).networks:
        if conf.name in taken:
            continue
        out.append(Network(name=conf.name, id=cni_id(conf.name), driver=CNI_DRIVER,
                           ipam=_file_ipam(conf.plugins), source=conf.source,
                           digest="sha256:" + hashlib.sha256(conf.bytes).hexdigest(),
                           cni_version=conf.cni_version,
                           plugins=[str(p.get("type", "?")) for p in conf.plugins]))
    return out


def _file_ipam(plugins: list[dict]) -> list[IPAMConfig]:
    """Subnets of host-local style `ipam` sections (`subnet` or `ranges`)."""
    out = []
    for plugin in plugins:
        ipam = plugin.get("ipam") if isinstance(plugin, dict) else None
        if not isinstance(ipam, dict):
            continue
        ranges = [r for rs in ipam.get("ranges") or [] if isinstance(rs, list) for r in rs]
        if ipam.get("subnet"):
            ranges.insert(0, ipam)
        for r in ranges:
            if isinstance(r, dict) and r.get("subnet"):
                out.append(IPAMConfig(str(r["subnet"]), str(r.get("gateway") or "")))
    return out


# --- THE resolver --------------------------------------------------------------------

def resolve(ref: str) -> Network:
    """Any network by name, full id or unique id prefix: native first, then
    the CNI configuration directory."""
    try:
        return get(ref)
    except NotFound:
        pass
    return match_ref(file_networks(), ref)


def attachable(ref: str, carried_id: str = "") -> Network:
    """A network a container can have an endpoint on; `carried_id` is the id
    its record carries from create (one file read instead of a search)."""
    if ref in ("host", "none"):
        raise MinidockerError(f"network {ref!r} has no endpoints to attach to; "
                              "use --network host / none as the container's mode", 125)
    net = by_id(carried_id)
    if net is not None:
        return net
    try:
        return resolve(ref)
    except NotFound:
        raise NotFound(f"network {ref!r} not found; accepted: bridge, host, none, "
                       "container:<id> or a network of `minidocker network ls`", 125) from None


def listing() -> list[Network]:
    """`network ls`: bridge, host, none, user networks (oldest first), then CNI files."""
    ensure_default()  # so `bridge` has its id from the first `ls` on
    return [*native(), *file_networks()]
