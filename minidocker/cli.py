"""minidocker's command line: parse, call the engine, print. Nothing else.

Errors reach the user as one line, `Error: ...`, and a non-zero exit code
(125 when `run` could not start the container, 126/127 when its command
cannot be run, as Docker); tracebacks only with MINIDOCKER_DEBUG=1.
"""
from __future__ import annotations

import gc

# Importing click and the engine allocates a lot and frees little: collecting
# during it only costs time (about 5 ms of every command). Enabled again at the
# end of this module, once the commands are defined.
gc.disable()

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import click  # noqa: E402

from minidocker import clock, containers, entry, images, runcmd  # noqa: E402
from minidocker.errors import MinidockerError  # noqa: E402

RUN_COMMANDS = {"run", "create"}


class LazyGroup(click.Group):
    """Command groups kept in other modules, imported only when used: their
    imports would otherwise slow down every `run`. Add a group to LAZY as
    name -> (module, attribute)."""

    LAZY = {"cni": ("minidocker.network.cni.command", "cni"),
            "network": ("minidocker.network.command", "network"),
            "system": ("minidocker.system_cmd", "system"),
            "volume": ("minidocker.volume_cmd", "volume")}

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.LAZY))

    def get_command(self, ctx, name):
        if name in self.LAZY:
            import importlib
            module, attr = self.LAZY[name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="minidocker")
def cli():
    """A small container runtime: busybox and imported images, namespaces,
    overlay rootfs, a shim per container, built-in or runc runtime."""



# --- images ---------------------------------------------------------------------

def _age(stamp: str) -> str:
    """Docker's human duration since stamp ("3 seconds", "About a minute")."""
    try:
        seconds = max(0.0, time.time() - clock.parse(stamp))
    except ValueError:
        return "?"
    if seconds < 1:
        return "Less than a second"
    if seconds < 60:
        return "1 second" if int(seconds) == 1 else f"{int(seconds)} seconds"
    minutes, hours = int(seconds // 60), int(seconds // 3600)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 14:
        return f"{hours // 24} days"
    if hours < 24 * 60:
        return f"{hours // (24 * 7)} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // (24 * 30)} months"
    return f"{hours // (24 * 365)} years"


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{n}B"
        n /= 1000
    return f"{n}"


@cli.command("images")
@click.option("-q", "--quiet", is_flag=True, help="Only image ids.")
def images_cmd(quiet):
    """List images."""
    rows = images.list_images()
    if quiet:
        for img in rows:
            click.echo(img["Id"].split(":")[1][:12])
        return
    click.echo(f"{'REPOSITORY':<24} {'TAG':<12} {'IMAGE ID':<14} {'CREATED':<20} SIZE")
    for img in rows:
        tags = img["RepoTags"] or ["<none>:<none>"]
        for tag in tags:
            repo, _, t = tag.rpartition(":")
            click.echo(f"{repo:<24} {t:<12} {img['Id'].split(':')[1][:12]:<14} "
                       f"{_age(img['Created']) + ' ago':<20} {_size(img.get('Size', 0))}")


@cli.command("rmi")
@click.argument("refs", nargs=-1, required=True)
def rmi_cmd(refs):
    """Remove images (untag; delete when no tag is left)."""
    in_use = {r["Image"] for r in containers.all_records()}
    for ref in refs:
        for line in images.remove(ref, in_use):
            click.echo(line)


@cli.command("import")
@click.argument("archive")
@click.argument("ref")
def import_cmd(archive, ref):
    """Import a root filesystem tarball (.tar or .tar.gz) as image REF."""
    img = images.import_rootfs(archive, ref)
    click.echo(img["Id"])


@cli.command("load")
@click.option("-i", "--input", "archive", required=True, help="docker save or OCI layout archive.")
def load_cmd(archive):
    """Load images from a `docker save` or OCI image-layout archive."""
    for img in images.load(archive):
        for tag in img["RepoTags"] or []:
            click.echo(f"Loaded image: {tag}")
        if not img["RepoTags"]:
            click.echo(f"Loaded image ID: {img['Id']}")


# --- containers -------------------------------------------------------------------

def _each(refs, action) -> None:
    """Docker's commands over several containers: act on each, echo its name."""
    for ref in refs:
        action(ref)
        click.echo(ref)


_STOP_TIME = click.option(
    "-t", "--time", "timeout", type=click.IntRange(min=-1), default=None,
    help="Seconds to wait before SIGKILL (the container's --stop-timeout, else 10).")

def _run_options(f):
    """run's options come from runcmd.OPTIONS, declared once there: the fast
    parser of plain `run` invocations (entry.py) reads the same table."""
    for opt in reversed(runcmd.OPTIONS):
        f = click.option(*opt.decls, opt.dest, **opt.click_kwargs())(f)
    return f


@cli.command("run", context_settings={"allow_interspersed_args": False})
@_run_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run_cmd(image, command, **options):
    """Create and start a container."""
    sys.exit(runcmd.run(image, command, options))


@cli.command("create", context_settings={"allow_interspersed_args": False})
@_run_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def create_cmd(image, command, **options):
    """Create a container without starting it; prints its id."""
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
    options.pop("detach")
    record = containers.create(containers.CreateOptions(image, cmd=list(command), **options))
    click.echo(record["Id"])


@cli.command("start")
@click.option("-a", "--attach", is_flag=True, help="Attach its output (and terminal); its exit code.")
@click.option("-i", "--interactive", is_flag=True, help="With -a and a -t container: its stdin too.")
@click.argument("refs", nargs=-1, required=True)
def start_cmd(attach, interactive, refs):
    """Start created or stopped containers (detached, or attached with -a)."""
    if attach:
        if len(refs) != 1:
            raise MinidockerError("start -a attaches to one container: give exactly one")
        from minidocker import attach as attaching
        sys.exit(attaching.start_attached(refs[0], interactive))
    _each(refs, containers.start)


@cli.command("restart")
@_STOP_TIME
@click.argument("refs", nargs=-1, required=True)
def restart_cmd(timeout, refs):
    """Stop, then start containers."""
    from minidocker import lifecycle
    _each(refs, lambda ref: lifecycle.restart(ref, timeout))


@cli.command("kill")
@click.option("-s", "--signal", "sig", default="KILL", show_default=True,
              help="Signal name or number.")
@click.argument("refs", nargs=-1, required=True)
def kill_cmd(sig, refs):
    """Send a signal to running containers."""
    from minidocker import lifecycle
    _each(refs, lambda ref: lifecycle.kill(ref, sig))


@cli.command("wait")
@click.argument("refs", nargs=-1, required=True)
def wait_cmd(refs):
    """Block until containers stop; print each exit code."""
    from minidocker import lifecycle
    for ref in refs:
        click.echo(lifecycle.wait(ref))


@cli.command("pause")
@click.argument("refs", nargs=-1, required=True)
def pause_cmd(refs):
    """Freeze every process of containers (the freezer cgroup)."""
    from minidocker import lifecycle
    _each(refs, lifecycle.pause)


@cli.command("unpause")
@click.argument("refs", nargs=-1, required=True)
def unpause_cmd(refs):
    """Thaw paused containers."""
    from minidocker import lifecycle
    _each(refs, lifecycle.unpause)


@cli.command("rename")
@click.argument("ref")
@click.argument("new_name")
def rename_cmd(ref, new_name):
    """Rename a container."""
    from minidocker import lifecycle
    lifecycle.rename(ref, new_name)


@cli.command("top", context_settings={"ignore_unknown_options": True})
@click.argument("ref")
@click.argument("ps_args", nargs=-1, type=click.UNPROCESSED)
def top_cmd(ref, ps_args):
    """A running container's processes (ps -ef columns, or PS_ARGS)."""
    from minidocker import stats
    for line in stats.top(ref, list(ps_args)):
        click.echo(line)


@cli.command("stats")
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


@cli.command("diff")
@click.argument("ref")
def diff_cmd(ref):
    """Files added (A), changed (C) and deleted (D) in a container."""
    from minidocker import fsview
    for line in fsview.diff(ref):
        click.echo(line)


@cli.command("export")
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


@cli.command("cp")
@click.option("-L", "--follow-link", is_flag=True, help="Follow a symlink given as the source.")
@click.argument("src")
@click.argument("dest")
def cp_cmd(follow_link, src, dest):
    """Copy between a container and the host: CONTAINER:PATH PATH or PATH CONTAINER:PATH."""
    from minidocker import fsview
    fsview.cp(src, dest, follow_link)


@cli.command("version")
def version_cmd():
    """minidocker's version and its runtimes'."""
    from minidocker import sysinfo
    for line in sysinfo.version():
        click.echo(line)


@cli.command("info")
def info_cmd():
    """Containers, images, runtimes, cgroup version, storage and network backends."""
    from minidocker import sysinfo
    for line in sysinfo.info():
        click.echo(line)


@cli.command("events")
@click.option("--since", help="Events from this time (RFC 3339, Unix time, or 10m ago).")
@click.option("--until", help="Stop at this time; without it, keep following.")
@click.option("-f", "--filter", "filters", multiple=True,
              help="container=NAME|ID, event=ACTION, type=container.")
@click.option("--format", "fmt", default=None, help="json, or a template of {{.Action}} {{.ID}}...")
def events_cmd(since, until, filters, fmt):
    """The events journal: container create, start, die, kill, stop, pause... """
    from minidocker import eventsview
    eventsview.show(since, until, list(filters), fmt)


@cli.command("stop")
@_STOP_TIME
@click.argument("refs", nargs=-1, required=True)
def stop_cmd(timeout, refs):
    """Stop running containers: the stop signal (SIGTERM), then SIGKILL."""
    _each(refs, lambda ref: containers.stop(ref, timeout))


@cli.command("rm")
@click.option("-f", "--force", is_flag=True, help="Kill a running container first.")
@click.option("-v", "--volumes", is_flag=True, help="Remove its anonymous volumes too.")
@click.argument("refs", nargs=-1, required=True)
def rm_cmd(force, volumes, refs):
    """Remove containers."""
    _each(refs, lambda ref: containers.remove(ref, force, volumes))


def _status(record: dict) -> str:
    st = record["State"]
    if st.get("Restarting"):
        return f"Restarting ({st.get('ExitCode', 0)}) {_age(st.get('FinishedAt', ''))} ago"
    if st.get("Running"):
        return f"Up {_age(st['StartedAt'])}" + (" (Paused)" if st.get("Paused") else "")
    if st.get("Status") == "created":
        return "Created"
    return f"Exited ({st.get('ExitCode', 0)}) {_age(st.get('FinishedAt', ''))} ago"


def _command(record: dict) -> str:
    return " ".join([record["Path"], *record["Args"]])


def _ports(record: dict) -> str:
    """Docker's PORTS column: 0.0.0.0:8080->80/tcp, ..."""
    out = []
    for key, bindings in sorted((record.get("NetworkSettings") or {}).get("Ports", {}).items()):
        for b in bindings or []:
            host = f"[{b['HostIp']}]" if ":" in b["HostIp"] else b["HostIp"]
            out.append(f"{host}:{b['HostPort']}->{key}")
    return ", ".join(out)


@cli.command("ps")
@click.option("-a", "--all", "show_all", is_flag=True, help="Include stopped containers.")
@click.option("-q", "--quiet", is_flag=True, help="Only ids.")
@click.option("-f", "--filter", "filters", multiple=True,
              help="label=KEY[=VALUE], status=STATUS, name=NAME, id=PREFIX.")
@click.option("--format", "fmt", default="table",
              help='table, json, or a template: "{{.ID}}\\t{{.Names}}", "table {{.Names}}".')
def ps_cmd(show_all, quiet, filters, fmt):
    """List containers."""
    from minidocker import psview
    wanted = psview.parse_filters(list(filters))
    rows = [r for r in containers.all_records()
            if (show_all or r["State"].get("Running") or "status" in wanted)
            and psview.matches(r, wanted)]
    if quiet:
        for r in rows:
            click.echo(r["Id"][:12])
        return
    if fmt != "table":
        fields = [{
            "ID": r["Id"][:12], "Image": r["Config"]["Image"], "Command": _command(r),
            "CreatedAt": r["Created"], "RunningFor": _age(r["Created"]),
            "State": r["State"]["Status"], "Status": _status(r),
            "Names": r["Name"].lstrip("/"), "Networks": r["HostConfig"]["NetworkMode"],
            "Ports": _ports(r), "ExitCode": r["State"].get("ExitCode", 0),
            "Labels": r["Config"].get("Labels") or {}, "Size": "",
            "Mounts": ",".join(m.get("Name") or m.get("Source", "") for m in r.get("Mounts") or []),
        } for r in rows]
        for line in psview.render(fields, fmt):
            click.echo(line)
        return
    click.echo(f"{'CONTAINER ID':<14} {'IMAGE':<16} {'COMMAND':<22} {'CREATED':<24} "
               f"{'STATUS':<34} {'PORTS':<8} NAMES")
    for r in rows:
        cmd = _command(r)
        cmd = json.dumps(cmd if len(cmd) <= 20 else cmd[:19] + "…", ensure_ascii=False)
        click.echo(f"{r['Id'][:12]:<14} {r['Config']['Image'][:16]:<16} {cmd:<22} "
                   f"{_age(r['Created']) + ' ago':<24} {_status(r):<34} {_ports(r) or '':<8} "
                   f"{r['Name'].lstrip('/')}")


@cli.command("inspect")
@click.argument("refs", nargs=-1, required=True)
def inspect_cmd(refs):
    """Low-level information on containers (Docker's field names), as JSON."""
    found = [containers.find(ref) for ref in refs]
    for r in found:
        r.pop("ShimPid", None)
    click.echo(json.dumps(found, indent=4))


@cli.command("logs")
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


@cli.command("port")
@click.argument("ref")
@click.argument("port", required=False)
def port_cmd(ref, port):
    """List a container's published ports (or the host side of PORT[/PROTO])."""
    record = containers.find(ref)
    published = record.get("NetworkSettings", {}).get("Ports") or {}
    if port:
        key = port if "/" in port else port + "/tcp"
        if key not in published:
            raise MinidockerError(f"no public port {key!r} published for {ref}; "
                                  f"published: {', '.join(sorted(published)) or 'none'}")
        published = {key: published[key]}
    for key in sorted(published, key=lambda k: (int(k.split("/")[0]), k)):
        for b in published[key] or []:
            host = f"[{b['HostIp']}]" if ":" in b["HostIp"] else b["HostIp"]
            click.echo(f"{host}:{b['HostPort']}" if port else f"{key} -> {host}:{b['HostPort']}")


@cli.command("exec", context_settings={"allow_interspersed_args": False})
@click.option("-i", "--interactive", is_flag=True, help="Keep stdin attached.")
@click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-terminal.")
@click.argument("ref")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_cmd(interactive, tty, ref, command):
    """Run a command in a running container."""
    sys.stdout.flush()
    sys.exit(containers.exec_(ref, list(command), interactive, tty))


@cli.command("attach")
@click.argument("ref")
def attach_cmd(ref):
    """Attach to a running container's terminal (ctrl-p ctrl-q detaches) or output."""
    from minidocker import attach
    sys.exit(attach.attach(ref))


def main(argv: list[str] | None = None) -> None:
    """Run the command line and exit without interpreter finalisation (see
    entry.finish)."""
    entry.finish(_run(sys.argv[1:] if argv is None else argv))


def _run(argv: list[str]) -> int:
    try:
        cli.main(args=argv, prog_name="minidocker", standalone_mode=False)
        return 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        in_run = bool(ctx and ctx.command and ctx.command.name in RUN_COMMANDS)
        click.echo(f"Error: {exc.format_message()}", err=True)
        return 125 if in_run else exc.exit_code
    except click.exceptions.Abort:
        return 130
    except BaseException as exc:  # noqa: BLE001 - one line for users; the fast `run` path shares it
        code = entry.exit_code(exc)
        # 125 (could not create the container) is run's; the image store
        # raises it for every command, and `rmi`, `load`... exit 1, as Docker.
        return 1 if code == 125 and argv[:1] not in (["run"], ["create"]) else code


gc.enable()
