"""`minidocker network ...`: create, ls, inspect, rm, prune, connect, disconnect.

Docker's command line and output. Records live in network/store.py, the
views in netview.py, kernel clean-up in kernel.py; attaching a running
container is network/attach.py's. Loaded lazily by cli.py: none of this is
imported on the `run` path.
"""
from __future__ import annotations

import json
import sys

import click

from minidocker.confirm import confirmed
from minidocker.errors import Conflict, MinidockerError, NotFound
from minidocker.network import confnets, kernel, netview, store
from minidocker.network.confnets import ConfNetwork

PRUNE_WARNING = ("WARNING! This will remove all custom networks not used by at least one "
                 "container.\nAre you sure you want to continue?")


def _err(msg: str) -> None:
    click.echo("Error: " + " ".join(str(msg).split()), err=True)


def _options(items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MinidockerError(f"invalid -o {item!r}: KEY=VALUE; accepted keys: "
                                  f"{', '.join(store.ACCEPTED_OPTIONS)}")
        out[key] = value
    return out


@click.group("network", help="Manage networks.")
def network():
    pass


def _check_bridge_name(name: str | None) -> None:
    """A bridge name that is already a link of another kind cannot be ours."""
    if not name or not store._IFNAME_RE.match(name):
        return  # store.create refuses a malformed name with its own message
    from cni_bridge.netlink import Netlink
    with Netlink() as nl:
        link = nl.link(name)
    if link is not None and link["kind"] != "bridge":
        raise Conflict(f"invalid {store.OPT_BRIDGE_NAME} {name!r}: a {link['kind'] or 'device'} "
                       "of that name exists on this host; give a free name or a bridge")


@network.command("create")
@click.option("-d", "--driver", default="bridge", show_default=True, help="Only bridge.")
@click.option("--subnet", multiple=True, help="CIDR, e.g. 10.5.0.0/24 (IPv6 with --ipv6).")
@click.option("--gateway", multiple=True, help="Gateway of the subnet at the same position.")
@click.option("--ip-range", multiple=True, help="Allocate container addresses from this sub-range.")
@click.option("--internal", is_flag=True, help="No masquerade: no way out of the network.")
@click.option("--ipv6", is_flag=True, help="Give the network an IPv6 subnet too.")
@click.option("-o", "--opt", multiple=True, metavar="KEY=VALUE",
              help="com.docker.network.bridge.name, com.docker.network.driver.mtu, "
                   "com.docker.network.bridge.enable_icc.")
@click.argument("name")
def create_cmd(driver, subnet, gateway, ip_range, internal, ipv6, opt, name):
    """Create a bridge network; prints its id."""
    if any(c.name == name for c in confnets.load()):
        raise Conflict(f"network with name {name!r} already exists (a CNI configuration file "
                       "defines it)")
    options = _options(opt)
    _check_bridge_name(options.get(store.OPT_BRIDGE_NAME))
    net = store.create(store.CreateRequest(
        name=name, driver=driver, subnets=list(subnet), gateways=list(gateway),
        ip_ranges=list(ip_range), internal=internal, ipv6=ipv6, options=options))
    click.echo(net.id)


@network.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only network ids.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("--no-trunc", is_flag=True, help="Full ids.")
def ls_cmd(quiet, fmt, no_trunc):
    """List networks: bridge, host, none, user networks, CNI files."""
    nets = netview.listing()
    if quiet:
        for net in nets:
            click.echo(net.id if no_trunc else net.short_id)
        return
    if fmt == "json":
        for net in nets:
            row = netview.ls_row(net)
            if no_trunc:
                row["ID"] = net.id
            click.echo(json.dumps(row))
        return
    width = 64 if no_trunc else 12
    click.echo(f"{'NETWORK ID':<{width}}   {'NAME':<20} {'DRIVER':<10} SCOPE")
    for net in nets:
        nid = net.id if no_trunc else net.short_id
        click.echo(f"{nid:<{width}}   {net.name:<20} {net.driver:<10} local")


@network.command("inspect")
@click.option("--no-debug", is_flag=True, help="Leave out minidocker's live kernel view.")
@click.argument("refs", nargs=-1, required=True)
def inspect_cmd(no_debug, refs):
    """Networks as JSON (Docker's field names, plus per-container Debug)."""
    found, missing = [], []
    for ref in refs:
        try:
            found.append(netview.inspect(netview.resolve(ref), debug=not no_debug))
        except NotFound as exc:
            missing.append(str(exc))
    click.echo(json.dumps(found, indent=4))
    for msg in missing:
        _err(msg)
    if missing:
        sys.exit(1)


def _stale(cid: str) -> bool:
    """An endpoint whose container record no longer exists."""
    from minidocker import records
    return not records.exists(cid)


def remove_network(ref: str) -> store.Network:
    """Refuse built-ins and CNI files, forget the record, then remove the
    kernel objects."""
    if ref in store.BUILTIN_DRIVERS:
        return store.remove(ref)  # refuses, naming the pre-defined network
    target = netview.resolve(ref)
    if isinstance(target, ConfNetwork):
        raise MinidockerError(f"network {target.name} is defined by the CNI configuration "
                              f"file {target.path} and cannot be removed here; "
                              "remove or edit that file instead")
    # attach's per-network lock, taken alone: no ADD is half-way (bridge made,
    # endpoint not yet recorded) while endpoints are checked and the bridge goes
    with kernel.network_lock(target):
        net = store.remove(target.id, stale=_stale)
        problems = kernel.remove_objects(net)
    if problems:
        raise MinidockerError(f"network {net.name} was removed, but: " + "; ".join(problems))
    return net


@network.command("rm")
@click.argument("refs", nargs=-1, required=True)
def rm_cmd(refs):
    """Remove networks (not while containers are attached)."""
    failed = 0
    for ref in refs:
        try:
            remove_network(ref)
            click.echo(ref)
        except MinidockerError as exc:
            _err(exc.message)
            failed += 1
    if failed:
        sys.exit(1)


@network.command("reload")
def reload_cmd():
    """Re-apply the firewall rules of every network and running container
    (after another tool flushed the tables). Idempotent."""
    from minidocker.network import reload
    checked, changed = reload.reload()
    click.echo(f"Reloaded the rules of {changed} of {checked} endpoints"
               if changed else f"Nothing to reload: the rules of {checked} endpoints are in place")


@network.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
def prune_cmd(force):
    """Remove user networks no container is attached to."""
    if not confirmed("network prune", PRUNE_WARNING, force):
        return
    removed, failed = [], 0
    for net in store.records():
        if net.name in store.BUILTIN_DRIVERS or any(not _stale(c) for c in store.endpoints(net)):
            continue
        try:
            remove_network(net.id)
            removed.append(net.name)
        except Conflict:
            continue  # a container attached meanwhile: it is in use after all
        except MinidockerError as exc:
            _err(exc.message)
            failed += 1
    if removed:
        click.echo("Deleted Networks:")
        for name in removed:
            click.echo(name)
    if failed:
        sys.exit(1)


# --- connect / disconnect ------------------------------------------------------

def _attach_module():
    try:
        from minidocker.network import attach
    except ImportError:
        raise MinidockerError("network connect/disconnect need bridge networking "
                              "(minidocker.network.attach), which this build does not have") from None
    return attach


@network.command("connect")
@click.option("--ip", help="IPv4 address for the container on this network.")
@click.option("--ip6", help="IPv6 address for the container on this network.")
@click.option("--alias", multiple=True, help="Network-scoped alias for the container.")
@click.option("--mac-address", "mac", help="MAC address of the new interface.")
@click.argument("network_ref", metavar="NETWORK")
@click.argument("container_ref", metavar="CONTAINER")
def connect_cmd(ip, ip6, alias, mac, network_ref, container_ref):
    """Connect a running container to a network (as eth1, eth2, ...)."""
    from minidocker.network import connect
    connect.connect(_attach_module(), network_ref, container_ref, ip=ip, ip6=ip6,
                    aliases=list(alias), mac=mac)


@network.command("disconnect")
@click.argument("network_ref", metavar="NETWORK")
@click.argument("container_ref", metavar="CONTAINER")
def disconnect_cmd(network_ref, container_ref):
    """Disconnect a container from a network (removes its interface there)."""
    from minidocker.network import connect
    connect.disconnect(_attach_module(), network_ref, container_ref)
