"""`minidocker system ...`: prune, the command line only (the work is
prune.py's). Loaded lazily by cli.py (never on `run`)."""
from __future__ import annotations

import click

from minidocker.confirm import confirmed

WARNING = ("WARNING! This will tear down containers whose shim or process is gone and\n"
           "remove every network namespace, veth, firewall rule, lease, mount and state\n"
           "file that belongs to no running container.\nAre you sure you want to continue?")


@click.group("system", help="Manage minidocker's node state.")
def system():
    pass


@system.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
def prune_cmd(force):
    """Reconcile the node with the running containers (crash recovery)."""
    if not confirmed("system prune", WARNING, force):
        return
    from minidocker import prune
    report = prune.prune()
    if not report.total():
        click.echo("Nothing to prune: the node holds only running containers' state.")
        return
    for what, items in report.lines.items():
        click.echo(f"{what}:")
        for item in items:
            click.echo(f"  {item}")
    click.echo(f"\nTotal: {report.total()} objects")
