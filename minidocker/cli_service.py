"""`minidocker service ...`: create, ls, inspect, rm. Parse, call
services/lifecycle.py, print. Loaded lazily by cli.py."""
from __future__ import annotations

import json

import click

from minidocker.services import lifecycle, store


@click.group("service", help="Manage services: a virtual IP in front of labelled containers.")
def service():
    pass


@service.command("create")
@click.option("--selector", multiple=True, metavar="KEY=VALUE", help="Label the endpoints carry (run --label).")
@click.option("--port", "ports", multiple=True, metavar="PORT[:TARGET][/tcp|/udp]",
              help="A port of the virtual IP and the containers' port it goes to.")
@click.option("--type", "service_type", default="ClusterIP", show_default=True,
              help="ClusterIP | NodePort")
@click.option("--node-port", default=None, help="With --type NodePort: 30000-32767 (default: a free one).")
@click.option("--network", default="bridge", show_default=True, help="The endpoints' network.")
@click.option("--session-affinity", default=None, help="ClientIP: one client stays on one endpoint.")
@click.argument("name")
def create_cmd(selector, ports, service_type, node_port, network, session_affinity, name):
    """Create a service; prints its virtual IP."""
    svc = lifecycle.create(name, selector=selector, ports=ports, service_type=service_type,
                           node_port=node_port, network=network, affinity=session_affinity)
    click.echo(svc["ClusterIP"])


@service.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only names.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def ls_cmd(quiet, fmt):
    """List services."""
    rows = [lifecycle.ls_row(s) for s in store.all_services()]
    if quiet:
        for row in rows:
            click.echo(row["Name"])
        return
    if fmt == "json":
        for row in rows:
            click.echo(json.dumps(row))
        return
    cols = ("Name", "Type", "ClusterIP", "Ports", "Endpoints", "Network", "Selector")
    table = [[c.upper() for c in cols]] + [[str(r[c]) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    for line in table:
        click.echo("   ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip())


@service.command("inspect")
@click.argument("names", nargs=-1, required=True)
def inspect_cmd(names):
    """VIP, ports, endpoints (address, node) and the rules behind them."""
    click.echo(json.dumps([lifecycle.view(store.get(n)) for n in names], indent=4))


@service.command("rm")
@click.argument("names", nargs=-1, required=True)
def rm_cmd(names):
    """Remove services and their rules."""
    for n in names:
        click.echo(lifecycle.remove(n)["Name"])
