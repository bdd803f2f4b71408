"""`minidocker network ...`: create, ls, inspect, diagram, rm, reload, prune, connect,
disconnect; and `minidocker trace`, a probe's path through the rules.

Docker's command line and output, nothing else: networks are networks.py's
and store.py's, removal driver.py's, the views netview.py's, attaching a
running container connect.py's. Loaded lazily by cli.py: none of this is
imported on the `run` path.
"""
from __future__ import annotations

import json
import sys

import click

from minidocker.confirm import confirmed
from minidocker.errors import Conflict, MinidockerError, NotFound
from minidocker.network import driver, networks, netview, store

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
    net = store.create(store.CreateRequest(
        name=name, driver=driver, subnets=list(subnet), gateways=list(gateway),
        ip_ranges=list(ip_range), internal=internal, ipv6=ipv6, options=_options(opt)))
    click.echo(net.id)


@network.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only network ids.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("--no-trunc", is_flag=True, help="Full ids.")
def ls_cmd(quiet, fmt, no_trunc):
    """List networks: bridge, host, none, user networks, CNI files."""
    nets = networks.listing()
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
            found.append(netview.inspect(networks.resolve(ref), debug=not no_debug))
        except NotFound as exc:
            missing.append(str(exc))
    click.echo(json.dumps(found, indent=4))
    for msg in missing:
        _err(msg)
    if missing:
        sys.exit(1)


@network.command("diagram")
@click.option("--format", "fmt", type=click.Choice(["text", "dot", "svg", "png", "json"]), default=None,
              help="text (the default on a terminal), dot, svg, png (Graphviz) or json (the default "
                   "otherwise; the wiring model, keys in README).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to this file.")
@click.argument("refs", nargs=-1)
def diagram_cmd(fmt, output, refs):
    """Draw the live wiring of networks (all when none is named)."""
    from minidocker.network import diagram, wiring
    nets = [networks.resolve(ref) for ref in refs] if refs else None
    tty = sys.stdout.isatty() and not output
    fmt = fmt or ("text" if tty else "json")
    if fmt == "png" and tty:
        raise MinidockerError("--format png is binary: give -o FILE or redirect standard output")
    data = diagram.render(wiring.build(nets), fmt)
    if output:
        with open(output, "wb") as fh:
            fh.write(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


@network.command("rm")
@click.argument("refs", nargs=-1, required=True)
def rm_cmd(refs):
    """Remove networks (not while containers are attached)."""
    failed = 0
    for ref in refs:
        try:
            driver.remove_network(ref)
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
    removed, failed = [], []

    def report(name, error):
        if error is None:
            removed.append(name)
        else:
            _err(error.message)
            failed.append(error)

    driver.prune_networks(report)
    if removed:
        click.echo("Deleted Networks:")
        for name in removed:
            click.echo(name)
    if failed:
        sys.exit(1)


# --- connect / disconnect ------------------------------------------------------

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
    connect.connect(network_ref, container_ref, ip=ip, ip6=ip6, aliases=list(alias), mac=mac)


@network.command("disconnect")
@click.argument("network_ref", metavar="NETWORK")
@click.argument("container_ref", metavar="CONTAINER")
def disconnect_cmd(network_ref, container_ref):
    """Disconnect a container from a network (removes its interface there)."""
    from minidocker.network import connect
    connect.disconnect(network_ref, container_ref)


# --- trace ----------------------------------------------------------------------

@click.command("trace")
@click.option("--from", "src", default="host", show_default=True, metavar="host|CONTAINER|ADDRESS",
              help="Where the probe starts: the host, a container, or an address held in a "
                   "namespace wired to this host (a client outside it).")
@click.option("--to", "dst", required=True, metavar="IP:PORT|CONTAINER:PORT", help="Where it goes.")
@click.option("--proto", type=click.Choice(["tcp", "udp"]), default="tcp", show_default=True)
@click.option("--timeout", type=float, default=1.0, show_default=True,
              help="Seconds to wait for an answer.")
@click.option("--json", "as_json", is_flag=True, help="The trace as JSON (keys in README).")
def trace_cmd(src, dst, proto, timeout, as_json):
    """Send one real probe while the kernel traces it; print the path."""
    from minidocker.network import trace
    result = trace.run(src, dst, proto, timeout)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    p = result["probe"]
    click.echo(f"trace {p['flow']} from {result['from']['what']} "
               f"(probe {p['result']} in {p['ms']} ms; traced by table {p['table']})")
    width = max([len(s["hook"]) for s in result["steps"]] + [5])
    for i, s in enumerate(result["steps"], 1):
        where = f"{s['family']} {s['table']} {s['chain']}"
        owner = f"  [{s['owner']}]" if s["owner"] and not s["words"].endswith(s["owner"]) else ""
        click.echo(f"{i:3}. {s['hook']:<{width}}  {where}: {s['words']}{owner}"
                   + (f"  -> {s['verdict']}" if s["verdict"] not in ("", "continue") else ""))
    if not result["steps"]:
        click.echo("     (no chain of any table saw the packet)")
    click.echo(result["outcome"])
