"""The image commands beyond images/rmi/import/load/tag/pull/push (click):
commit, save, history, inspect (containers, then images, as Docker), and
the `image` group (inspect, prune, and ls/rm/tag/... aliases). Loaded
lazily by cli.py's LazyGroup (never on `run`)."""
from __future__ import annotations

import json
import sys

import click

from minidocker import containers, images
from minidocker.cli import (human_age, human_size, images_cmd, import_cmd, load_cmd, pull_cmd,
                            push_cmd, rmi_cmd, tag_cmd)
from minidocker.errors import MinidockerError, NotFound


def _in_use() -> set[str]:
    return {r["Image"] for r in containers.all_records()}


@click.command("commit")
@click.option("-a", "--author", default="", help='Author ("Name <email>").')
@click.option("-m", "--message", default="", help="Commit message.")
@click.option("-p", "--pause", type=click.BOOL, default=True, show_default=True,
              help="Pause the container while its files are read (--pause=false: do not).")
@click.argument("ref")
@click.argument("target", required=False)
def commit_cmd(author, message, pause, ref, target):
    """Make an image of a container's changes: CONTAINER [REPOSITORY[:TAG]]."""
    from minidocker import commit
    click.echo(commit.commit(ref, target, message, author, pause)["Id"])


@click.command("save")
@click.option("-o", "--output", default=None, help="Write to this file, not standard output.")
@click.argument("refs", nargs=-1, required=True)
def save_cmd(output, refs):
    """Save images to a `docker save` archive (tar) that `load` and `docker load` read."""
    if output is None and sys.stdout.isatty():
        raise MinidockerError("cowardly refusing to save to a terminal: use the -o flag or redirect")
    from minidocker.images import saver
    saver.save(list(refs), output, sys.stdout.buffer)


@click.command("history")
@click.option("-H", "--human", type=click.BOOL, default=True, show_default=True,
              help="Sizes and dates for people (--human=false: bytes and RFC 3339).")
@click.option("--no-trunc", is_flag=True, help="Do not shorten the output.")
@click.option("-q", "--quiet", is_flag=True, help="Only image ids.")
@click.argument("ref")
def history_cmd(human, no_trunc, quiet, ref):
    """Show the history of an image: IMAGE CREATED CREATED BY SIZE COMMENT."""
    from minidocker.images import view
    from minidocker.psview import align
    rows = view.history(images.lookup(ref))
    short = (lambda i: i) if no_trunc else (lambda i: i if i == "<missing>" else i[7:19])
    if quiet:
        for row in rows:
            click.echo(short(row["ID"]))
        return
    lines = ["IMAGE\tCREATED\tCREATED BY\tSIZE\tCOMMENT"]
    for row in rows:
        by = " ".join(row["CreatedBy"].split()) if not no_trunc else row["CreatedBy"]
        if not no_trunc and len(by) > 45:
            by = by[:44] + "…"
        created = human_age(row["CreatedAt"]) + " ago" if human else row["CreatedAt"]
        size = human_size(row["Size"]) if human else str(row["Size"])
        lines.append(f"{short(row['ID'])}\t{created}\t{by}\t{size}\t{row['Comment']}")
    for line in align(lines):
        click.echo(line.rstrip())


def _image_objects(refs) -> list[dict]:
    from minidocker.images import view
    return [view.inspect(images.lookup(ref)) for ref in refs]


@click.command("inspect")
@click.option("--type", "kind", type=click.Choice(["container", "image"]), default=None,
              help="Only look for this kind of object.")
@click.argument("refs", nargs=-1, required=True)
def inspect_cmd(kind, refs):
    """Low-level information on containers or images (Docker's field names), as JSON."""
    found = []
    for ref in refs:
        if kind == "image":
            found.extend(_image_objects([ref]))
            continue
        try:
            record = containers.find(ref)
        except NotFound:
            if kind == "container":
                raise
            try:
                found.extend(_image_objects([ref]))
            except NotFound:
                raise NotFound(f"no such object {ref!r}: neither a container (see `minidocker "
                               "ps -a`) nor an image (see `minidocker images`)") from None
            continue
        record.pop("ShimPid", None)
        found.append(record)
    click.echo(json.dumps(found, indent=4))


@click.group("image")
def image():
    """Manage images."""


@image.command("inspect")
@click.argument("refs", nargs=-1, required=True)
def image_inspect_cmd(refs):
    """Low-level information on images (Docker's field names), as JSON."""
    click.echo(json.dumps(_image_objects(refs), indent=4))


@image.command("prune")
@click.option("-a", "--all", "every", is_flag=True, help="Every image no container uses, not only dangling ones.")
@click.option("-f", "--force", is_flag=True, help="Do not ask.")
def image_prune_cmd(every, force):
    """Remove dangling images (no tag), or with -a every image no container uses."""
    from minidocker.confirm import confirmed
    from minidocker.images import view
    what = ("all images without at least one container associated to them" if every
            else "all dangling images")
    if not confirmed("image prune", f"WARNING! This will remove {what}.\n"
                     "Are you sure you want to continue?", force):
        return
    lines, freed = view.prune(every, _in_use())
    if lines:
        click.echo("Deleted Images:")
        for line in lines:
            click.echo(line)
        click.echo()
    click.echo(f"Total reclaimed space: {human_size(freed)}")


for _name, _cmd in (("ls", images_cmd), ("rm", rmi_cmd), ("tag", tag_cmd), ("load", load_cmd),
                    ("import", import_cmd), ("pull", pull_cmd), ("push", push_cmd),
                    ("save", save_cmd), ("history", history_cmd)):
    image.add_command(_cmd, _name)
