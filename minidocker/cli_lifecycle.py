"""The lifecycle commands beyond run/start/stop/rm (click): kill, wait,
pause, unpause, rename, top, stats, diff, export, cp, version, info, events,
attach. Loaded lazily by cli.py's LazyGroup (never on `run`)."""
from __future__ import annotations

import json
import sys
import time

import click

from minidocker import clock, containers
from minidocker.cli import STOP_TIME, each, run_options
from minidocker.errors import MinidockerError


@click.command("kill")
@click.option("-s", "--signal", "sig", default="KILL", show_default=True,
              help="Signal name or number.")
@click.argument("refs", nargs=-1, required=True)
def kill_cmd(sig, refs):
    """Send a signal to running containers."""
    from minidocker import lifecycle
    each(refs, lambda ref: lifecycle.kill(ref, sig))


@click.command("wait")
@click.argument("refs", nargs=-1, required=True)
def wait_cmd(refs):
    """Block until containers stop; print each exit code."""
    from minidocker import lifecycle
    for ref in refs:
        click.echo(lifecycle.wait(ref))


@click.command("pause")
@click.argument("refs", nargs=-1, required=True)
def pause_cmd(refs):
    """Freeze every process of containers (the freezer cgroup)."""
    from minidocker import lifecycle
    each(refs, lifecycle.pause)


@click.command("unpause")
@click.argument("refs", nargs=-1, required=True)
def unpause_cmd(refs):
    """Thaw paused containers."""
    from minidocker import lifecycle
    each(refs, lifecycle.unpause)


@click.command("rename")
@click.argument("ref")
@click.argument("new_name")
def rename_cmd(ref, new_name):
    """Rename a container."""
    from minidocker import lifecycle
    lifecycle.rename(ref, new_name)


@click.command("top", context_settings={"ignore_unknown_options": True})
@click.argument("ref")
@click.argument("ps_args", nargs=-1, type=click.UNPROCESSED)
def top_cmd(ref, ps_args):
    """A running container's processes (ps -ef columns, or PS_ARGS)."""
    from minidocker import stats
    for line in stats.top(ref, list(ps_args)):
        click.echo(line)


@click.command("stats")
@click.option("--no-stream", is_flag=True, help="One sample, then exit.")
@click.option("--format", "fmt", default="table", help="table, json, or a template of "
              "{{.ID}} {{.Name}} {{.CPUPerc}} {{.MemUsage}} {{.MemPerc}} {{.NetIO}} {{.BlockIO}} {{.PIDs}}.")
@click.argument("refs", nargs=-1)
def stats_cmd(no_stream, fmt, refs):
    """Resource usage of running containers, from their cgroups."""
    from minidocker import stats
    while True:
        rows = stats.sample(list(refs))
        if fmt == "table":
            lines = stats.table(rows)
        elif fmt == "json":
            lines = [json.dumps(r) for r in rows]
        else:
            lines = [_fill_stats(fmt, r) for r in rows]
        if not no_stream:
            click.echo("\x1b[2J\x1b[H", nl=False)
        for line in lines:
            click.echo(line)
        if no_stream:
            return


def _fill_stats(fmt: str, row: dict) -> str:
    import re
    text = fmt.replace("\\t", "\t").replace("\\n", "\n")

    def one(m):
        if m.group(1) not in row:
            raise MinidockerError(f"invalid --format {fmt!r}: no field {m.group(1)!r}; known are "
                                  f"{', '.join(row)}")
        return row[m.group(1)]
    return re.sub(r"\{\{\s*\.(\w+)\s*\}\}", one, text)


@click.command("diff")
@click.argument("ref")
def diff_cmd(ref):
    """Files added (A), changed (C) and deleted (D) in a container."""
    from minidocker import fsview
    for line in fsview.diff(ref):
        click.echo(line)


@click.command("export")
@click.option("-o", "--output", help="Write to this file instead of stdout.")
@click.argument("ref")
def export_cmd(output, ref):
    """A container's file system as a tar archive."""
    from minidocker import fsview
    if output is None and sys.stdout.isatty():
        raise MinidockerError("cowardly refusing to write a tar archive to a terminal: "
                              "give -o FILE or redirect stdout")
    if output:
        with open(output, "wb") as out:
            fsview.export(ref, out)
    else:
        fsview.export(ref, sys.stdout.buffer)
        sys.stdout.buffer.flush()


@click.command("cp")
@click.option("-L", "--follow-link", is_flag=True, help="Follow a symlink given as the source.")
@click.argument("src")
@click.argument("dest")
def cp_cmd(follow_link, src, dest):
    """Copy between a container and the host: CONTAINER:PATH PATH or PATH CONTAINER:PATH."""
    from minidocker import fsview
    fsview.cp(src, dest, follow_link)


@click.command("version")
def version_cmd():
    """minidocker's version and its runtimes'."""
    from minidocker import sysinfo
    for line in sysinfo.version():
        click.echo(line)


@click.command("info")
def info_cmd():
    """Containers, images, runtimes, cgroup version, storage and network backends."""
    from minidocker import sysinfo
    for line in sysinfo.info():
        click.echo(line)


@click.command("events")
@click.option("--since", help="Events from this time (RFC 3339, Unix time, or 10m ago).")
@click.option("--until", help="Stop at this time; without it, keep following.")
@click.option("-f", "--filter", "filters", multiple=True,
              help="container=NAME|ID, event=ACTION, type=container.")
@click.option("--format", "fmt", default=None, help="json, or a template of {{.Action}} {{.ID}}...")
def events_cmd(since, until, filters, fmt):
    """The events journal: container create, start, die, kill, stop, pause... """
    from minidocker import eventsview
    eventsview.show(since, until, list(filters), fmt)


@click.command("attach")
@click.argument("ref")
def attach_cmd(ref):
    """Attach to a running container's terminal (ctrl-p ctrl-q detaches) or output."""
    from minidocker import attach
    sys.exit(attach.attach(ref))


@click.command("restart")
@STOP_TIME
@click.argument("refs", nargs=-1, required=True)
def restart_cmd(timeout, refs):
    """Stop, then start containers."""
    from minidocker import lifecycle
    each(refs, lambda ref: lifecycle.restart(ref, timeout))


@click.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the container stops.")
@click.option("-n", "--tail", default="all", help="Only the last N lines (all).")
@click.option("--since", help="Only after this time (RFC 3339, Unix time, or 10m ago).")
@click.option("--until", help="Only before this time (same forms).")
@click.option("-t", "--timestamps", is_flag=True, help="Each line after its time.")
@click.argument("ref")
def logs_cmd(follow, tail, since, until, timestamps, ref):
    """Print a container's output: its stdout to stdout, its stderr to stderr."""
    from minidocker import logfile
    if tail != "all" and not tail.isdigit():
        raise MinidockerError(f"invalid --tail {tail!r}: a number of lines, or all")
    lo = logfile.parse_time(since, "--since") if since else None
    hi = logfile.parse_time(until, "--until") if until else None
    record = containers.find(ref)
    streams = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}

    def show(entries):
        for e in entries:
            stamp = clock.parse(e["time"]) if lo is not None or hi is not None else 0
            if (lo is not None and stamp < lo) or (hi is not None and stamp > hi):
                continue
            out = streams.get(e.get("stream"), sys.stdout.buffer)
            out.write(((e["time"] + " ") if timestamps else "").encode() + e["log"].encode())
            out.flush()

    try:
        fh = open(record["LogPath"], "rb")
    except FileNotFoundError:
        return
    with fh:
        first = logfile.entries(fh)
        if tail != "all":
            first = first[len(first) - int(tail):] if int(tail) else []
        show(first)
        while follow and (hi is None or time.time() < hi):
            chunk = fh.readlines()
            if chunk:
                show(logfile.entries(chunk))
                continue
            if not containers.find(record["Id"])["State"].get("Running"):
                show(logfile.entries(fh.readlines()))
                return
            time.sleep(0.1)


@click.command("create", context_settings={"allow_interspersed_args": False})
@run_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def create_cmd(image, command, **options):
    """Create a container without starting it; prints its id."""
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
    options.pop("detach")
    record = containers.create(containers.CreateOptions(image, cmd=list(command), **options))
    click.echo(record["Id"])
