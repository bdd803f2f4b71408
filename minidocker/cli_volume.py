"""`minidocker volume ...`: create, ls, inspect, rm, prune (volumes.py holds
the store). Loaded lazily by cli.py (never on `run`)."""
from __future__ import annotations

import json

import click

from minidocker import containers, volumes
from minidocker.confirm import confirmed


@click.group("volume", help="Manage volumes.")
def volume():
    pass


@volume.command("create")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE metadata.")
@click.argument("name", required=False)
def create_cmd(labels, name):
    """Create a volume (a random name when none is given); prints its name."""
    parsed = dict(l.partition("=")[::2] for l in labels)
    click.echo(volumes.create(name, labels=parsed)["Name"])


@volume.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only names.")
def ls_cmd(quiet):
    """List volumes."""
    rows = volumes.all_volumes()
    if quiet:
        for v in rows:
            click.echo(v["Name"])
        return
    click.echo(f"{'DRIVER':<16}VOLUME NAME")
    for v in rows:
        click.echo(f"{v['Driver']:<16}{v['Name']}")


@volume.command("inspect")
@click.argument("names", nargs=-1, required=True)
def inspect_cmd(names):
    """Volume details as JSON (Docker's fields)."""
    found = [volumes.get(n) for n in names]
    click.echo(json.dumps(found, indent=4))


@volume.command("rm")
@click.option("-f", "--force", is_flag=True, help="Accepted for Docker's sake.")
@click.argument("names", nargs=-1, required=True)
def rm_cmd(force, names):
    """Remove volumes no container uses."""
    records = containers.all_records()
    for name in names:
        volumes.remove(name, records, force)
        click.echo(name)


@volume.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
def prune_cmd(force):
    """Remove every volume no container uses."""
    if not confirmed("volume prune", "WARNING! This will remove all local volumes not used by "
                     "at least one container.\nAre you sure you want to continue?", force):
        return
    removed = volumes.prune(containers.all_records())
    if removed:
        click.echo("Deleted Volumes:")
        for name, _ in removed:
            click.echo(name)
        click.echo("")
    total = sum(size for _, size in removed)
    click.echo(f"Total reclaimed space: {_human(total)}")


def _human(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n}{unit}" if unit == "B" else f"{n:.3g}{unit}"
        n /= 1000
    return str(n)
