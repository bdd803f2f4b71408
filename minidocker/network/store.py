"""Native networks changed: `network create` and `rm`, and the endpoint index.

The network type, reading records and resolving a reference are
networks.py's; this module writes: a record on create (one name wins under
concurrency, subnets chosen or checked against the host's), its removal
(refused while containers are attached), and one endpoint file per
attached container (`networks/<id>/endpoints/<cid>.json`), the index
`network inspect`, host-port checks, names and the teardown read. The
network's kernel objects belong to the cni-bridge plugin, driven through
the CNI executor (driver.py).
"""
from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

from cni.record import Record
from minidocker import paths, state
from minidocker.errors import Conflict, MinidockerError
from minidocker.network import networks, subnets
from minidocker.network.networks import (BUILTIN_DRIVERS, OPT_BRIDGE_NAME, OPT_ICC, OPT_MTU,
                                         OPT_NO_MASQ, OPT_SERVICE_RANGE, IPAMConfig, Network)
from minidocker.network.subnets import SubnetError

USER_BRIDGE_PREFIX = "mdbr-"
ACCEPTED_OPTIONS = (OPT_BRIDGE_NAME, OPT_MTU, OPT_ICC, OPT_NO_MASQ, OPT_SERVICE_RANGE)

# The name becomes a lease directory, a veth alias and part of rule comments.
MAX_NAME = 128
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z")  # \Z: `$` allows a trailing newline
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}\Z")


def _validate_options(options: dict[str, str], recs: list[Network]) -> dict[str, str]:
    for key, value in options.items():
        if key not in ACCEPTED_OPTIONS:
            raise MinidockerError(f"unknown network option {key!r}; accepted: {', '.join(ACCEPTED_OPTIONS)}")
        if key == OPT_BRIDGE_NAME:
            if not IFNAME_RE.match(value) or value in (".", ".."):
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
        elif key == OPT_SERVICE_RANGE:
            try:
                subnets.service_range(value, f"-o {OPT_SERVICE_RANGE}")
            except SubnetError as exc:
                raise MinidockerError(str(exc)) from None
        elif key == OPT_NO_MASQ:
            for cidr in value.split(","):
                try:
                    ipaddress.ip_network(cidr, strict=False)
                except ValueError:
                    raise MinidockerError(f"invalid {OPT_NO_MASQ} entry {cidr!r}: comma-separated "
                                          "CIDRs such as 10.244.0.0/16") from None
    return dict(options)


class CreateRequest(Record):
    """`network create` flags; lists pair up by position as Docker's do."""
    FACTORIES = {"subnets": list, "gateways": list, "ip_ranges": list, "options": dict}
    name: str
    driver: str = "bridge"
    subnets: list[str]
    gateways: list[str]
    ip_ranges: list[str]
    internal: bool = False
    ipv6: bool = False
    options: dict[str, str]


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


def _check_bridge_name(name: str | None) -> None:
    """A bridge name that is already a link of another kind cannot be ours."""
    if not name or not IFNAME_RE.match(name):
        return  # _validate_options refuses a malformed name with its own message
    from cni_bridge import api
    link = api.link(name)
    if link is not None and link["kind"] != "bridge":
        raise Conflict(f"invalid {OPT_BRIDGE_NAME} {name!r}: a {link['kind'] or 'device'} "
                       "of that name exists on this host; give a free name or a bridge")


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
    if any(c.name == req.name for c in networks.file_networks(shadowed=True)):
        raise Conflict(f"network with name {req.name!r} already exists (a CNI configuration file "
                       "defines it)")
    _check_bridge_name(req.options.get(OPT_BRIDGE_NAME))
    with networks.lock():
        recs = networks.records()
        if any(n.name == req.name for n in recs):
            raise Conflict(f"network with name {req.name!r} already exists")
        options = _validate_options(req.options, recs)
        try:
            ipam = _plan_ipam(req, networks.used_subnets(recs))
        except SubnetError as exc:
            raise MinidockerError(str(exc)) from None
        net_id = os.urandom(32).hex()
        net = Network(name=req.name, id=net_id, driver="bridge", created=networks.now(),
                      bridge=options.get(OPT_BRIDGE_NAME, USER_BRIDGE_PREFIX + net_id[:10]),
                      ipam=ipam, ipv6=req.ipv6, internal=req.internal, options=options)
        state.write_json(networks.record_path(net_id), net.to_dict())
        return net


# --- endpoints: which containers are attached -----------------------------

def _endpoint_dir(net: Network):
    return Path(paths.networks_dir()) / net.id / "endpoints"


def has_endpoints(net: Network) -> bool:
    """Whether anything is attached to net: the first entry of one listing,
    no endpoint read (attach and detach ask it, so its cost must not grow)."""
    try:
        with os.scandir(_endpoint_dir(net)) as it:
            return net.id != "" and any(e.name.endswith(".json") for e in it)
    except (FileNotFoundError, NotADirectoryError):
        return False


def endpoints(net: Network) -> dict[str, dict]:
    """container id -> endpoint record (name, ifname, addresses, veth...)."""
    return endpoints_by_id(net.id)


def endpoints_by_id(net_id: str) -> dict[str, dict]:
    out = {}
    base = Path(paths.networks_dir()) / net_id / "endpoints"
    if net_id and base.is_dir():
        for entry in sorted(os.listdir(base)):
            if entry.endswith(".json"):
                data = state.read_json(base / entry)
                if isinstance(data, dict):
                    out[entry[:-5]] = data
    return out


def endpoint(net: Network, container_id: str) -> dict | None:
    """One container's endpoint on net: one file, whatever else is attached."""
    if not net.id:
        return None
    return _endpoint_file(net.id, container_id)


def _endpoint_file(net_id: str, container_id: str) -> dict | None:
    data = state.read_json(Path(paths.networks_dir()) / net_id / "endpoints" / f"{container_id}.json")
    return data if isinstance(data, dict) else None


def add_endpoint(net: Network, container_id: str, endpoint: dict) -> None:
    """The port index first: an entry without its endpoint is ignored, an
    endpoint without its entries would hide a taken port."""
    _ensure_port_index()
    _index_ports(Path(paths.ports_dir()), net.id, container_id, endpoint)
    state.write_json(_endpoint_dir(net) / f"{container_id}.json", endpoint)


def remove_endpoint(net: Network, container_id: str) -> None:
    ep = endpoint(net, container_id)
    try:
        os.unlink(_endpoint_dir(net) / f"{container_id}.json")
    except FileNotFoundError:
        pass
    if ep:
        _unindex_ports(net.id, container_id, ep)


def all_endpoints():
    """(network id, container id, endpoint) of every endpoint on record."""
    base = Path(paths.networks_dir())
    if not base.is_dir():
        return
    for entry in sorted(os.listdir(base)):
        eps = base / entry / "endpoints"
        if not eps.is_dir():
            continue
        for name in sorted(os.listdir(eps)):
            if name.endswith(".json"):
                ep = state.read_json(eps / name)
                if isinstance(ep, dict):
                    yield entry, name[:-5], ep


def endpoints_of(cid: str) -> list[dict]:
    """The endpoints of one container, on every network: one file looked
    for per network, never every endpoint read."""
    base = Path(paths.networks_dir())
    found = (_endpoint_file(nid, cid) for nid in (sorted(os.listdir(base)) if base.is_dir() else []))
    return [ep for ep in found if ep]


# --- the host-port index: which endpoints publish (protocol, port) -----------

def _port_keys(ep: dict) -> set[tuple[str, int]]:
    return {(p["Protocol"], int(p["HostPort"])) for p in ep.get("Ports") or []}


def _index_ports(base, net_id: str, cid: str, ep: dict) -> None:
    for proto, port in _port_keys(ep):
        d = base / f"{proto}-{port}"
        for _ in range(3):  # a detach may rmdir an emptied directory in between
            state.ensure_dir(d)
            try:
                os.close(os.open(d / f"{net_id}.{cid}", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
                break
            except FileNotFoundError:
                continue


def _unindex_ports(net_id: str, cid: str, ep: dict) -> None:
    for proto, port in _port_keys(ep):
        d = Path(paths.ports_dir()) / f"{proto}-{port}"
        try:
            os.unlink(d / f"{net_id}.{cid}")
            os.rmdir(d)
        except OSError:
            pass  # gone already, or another endpoint still holds the port


def _ensure_port_index() -> None:
    """Built once from the endpoints of a state root older than the index,
    in a scratch directory renamed into place (readers see all or nothing)."""
    final = Path(paths.ports_dir())
    if final.is_dir():
        return
    scratch = final.with_name(f".ports.{os.getpid()}")
    state.ensure_dir(scratch)
    for nid, cid, ep in all_endpoints():
        _index_ports(scratch, nid, cid, ep)
    try:
        os.rename(scratch, final)
    except OSError:  # another process built it first
        import shutil
        shutil.rmtree(scratch, ignore_errors=True)


def port_holders(protocol: str, port: int):
    """(network id, container id, endpoint) of the endpoints publishing this
    host port: one directory listing, entries checked against their endpoint."""
    _ensure_port_index()
    d = Path(paths.ports_dir()) / f"{protocol}-{int(port)}"
    try:
        entries = sorted(os.listdir(d))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for entry in entries:
        nid, _, cid = entry.partition(".")
        ep = _endpoint_file(nid, cid) if nid and cid and not entry.startswith(".") else None
        if ep and (protocol, int(port)) in _port_keys(ep):
            out.append((nid, cid, ep))
    return out


def network_of(ep: dict) -> Network:
    """The network an endpoint is on, as far as it is still known: a CNI
    file or native record may be gone while the endpoint is not."""
    if ep.get("Driver") == networks.CNI_DRIVER:
        return Network(name=ep["Network"], id=ep["NetworkID"], driver=networks.CNI_DRIVER)
    return networks.by_id(ep["NetworkID"]) or Network(name=ep["Network"], id=ep["NetworkID"])


def remove(ref: str, stale=None) -> Network:
    """Forget a network; refused for the built-ins and while containers are
    attached. `stale(container_id)` may say an endpoint's container is gone
    (its record was deleted without a teardown): such endpoints do not hold
    the network. The caller removes the kernel objects of the returned network."""
    if ref in BUILTIN_DRIVERS:
        raise MinidockerError(f"{ref} is a pre-defined network and cannot be removed")
    with networks.lock():
        net = networks.get(ref)
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
        record = networks.record_path(net.id)
        try:
            os.unlink(record)
        except FileNotFoundError:
            pass
        # the record is gone, so the rest of the directory (endpoints, the
        # IPAM data dir when it lives here) is no one's any more
        import shutil
        shutil.rmtree(record.parent, ignore_errors=True)
        return net
