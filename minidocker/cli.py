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

from minidocker import clock, containers, exits, images, runcmd  # noqa: E402
from minidocker.errors import MinidockerError  # noqa: E402

RUN_COMMANDS = {"run", "create"}


class LazyGroup(click.Group):
    """Command groups kept in other modules, imported only when used: their
    imports would otherwise slow down every `run`. Add a group to LAZY as
    name -> (module, attribute)."""

    LAZY = {"cni": ("minidocker.cli_cni", "cni"),
            "network": ("minidocker.cli_network", "network"),
            "trace": ("minidocker.cli_network", "trace_cmd"),
            "system": ("minidocker.cli_system", "system"),
            "volume": ("minidocker.cli_volume", "volume"),
            "service": ("minidocker.cli_service", "service"),
            "cluster": ("minidocker.cluster.command", "cluster"),
            "node": ("minidocker.cluster.command", "node_group"),
            "kill": ("minidocker.cli_lifecycle", "kill_cmd"),
            "wait": ("minidocker.cli_lifecycle", "wait_cmd"),
            "pause": ("minidocker.cli_lifecycle", "pause_cmd"),
            "unpause": ("minidocker.cli_lifecycle", "unpause_cmd"),
            "rename": ("minidocker.cli_lifecycle", "rename_cmd"),
            "top": ("minidocker.cli_lifecycle", "top_cmd"),
            "stats": ("minidocker.cli_lifecycle", "stats_cmd"),
            "diff": ("minidocker.cli_lifecycle", "diff_cmd"),
            "export": ("minidocker.cli_lifecycle", "export_cmd"),
            "cp": ("minidocker.cli_lifecycle", "cp_cmd"),
            "version": ("minidocker.cli_lifecycle", "version_cmd"),
            "info": ("minidocker.cli_lifecycle", "info_cmd"),
            "events": ("minidocker.cli_lifecycle", "events_cmd"),
            "attach": ("minidocker.cli_lifecycle", "attach_cmd"),
            "create": ("minidocker.cli_lifecycle", "create_cmd"),
            "restart": ("minidocker.cli_lifecycle", "restart_cmd"),
            "logs": ("minidocker.cli_lifecycle", "logs_cmd"),
            "commit": ("minidocker.cli_image", "commit_cmd"),
            "save": ("minidocker.cli_image", "save_cmd"),
            "history": ("minidocker.cli_image", "history_cmd"),
            "inspect": ("minidocker.cli_image", "inspect_cmd"),
            "image": ("minidocker.cli_image", "image")}

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

def human_age(stamp: str) -> str:
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


def human_size(n: int) -> str:
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
                       f"{human_age(img['Created']) + ' ago':<20} {human_size(img.get('Size', 0))}")


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
    """Import a root filesystem tarball (plain, gzip, zstd, bzip2, xz; `-` reads
    standard input) as image REF."""
    img = images.import_rootfs(archive, ref)
    click.echo(img["Id"])


@cli.command("load")
@click.option("-i", "--input", "archive", default="-", show_default=True,
              help="docker save or OCI layout archive (`-`: standard input).")
def load_cmd(archive):
    """Load images from a `docker save` or OCI image-layout archive."""
    for img in images.load(archive):
        for tag in img["RepoTags"] or []:
            click.echo(f"Loaded image: {tag}")
        if not img["RepoTags"]:
            click.echo(f"Loaded image ID: {img['Id']}")


@cli.command("tag")
@click.argument("source")
@click.argument("target")
def tag_cmd(source, target):
    """Tag image SOURCE as TARGET ([REGISTRY/]NAME[:TAG])."""
    images.tag(source, target)


@cli.command("pull")
@click.argument("ref")
def pull_cmd(ref):
    """Pull [REGISTRY/]NAME[:TAG|@sha256:DIGEST] from a registry."""
    images.pull(ref)


@cli.command("push")
@click.argument("ref")
def push_cmd(ref):
    """Push a local image to the registry its REGISTRY/NAME:TAG names."""
    images.push(ref)


@cli.command("login")
@click.option("-u", "--username", required=True)
@click.option("-p", "--password", default=None, help="Prompted for when absent.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.argument("server", default="docker.io")
def login_cmd(username, password, password_stdin, server):
    """Log in to a registry: the credentials are checked, then kept 0600."""
    if password_stdin:
        password = sys.stdin.read().rstrip("\n")
    elif password is None:
        password = click.prompt("Password", hide_input=True)
    images.login(server, username, password)


# --- containers -------------------------------------------------------------------

def each(refs, action) -> None:
    """Docker's commands over several containers: act on each, echo its name."""
    for ref in refs:
        action(ref)
        click.echo(ref)


STOP_TIME = click.option(
    "-t", "--time", "timeout", type=click.IntRange(min=-1), default=None,
    help="Seconds to wait before SIGKILL (the container's --stop-timeout, else 10).")

def run_options(f):
    """run's options come from runcmd.OPTIONS, declared once there: the fast
    parser of plain `run` invocations (entry.py) reads the same table."""
    for opt in reversed(runcmd.OPTIONS):
        f = click.option(*opt.decls, opt.dest, **opt.click_kwargs())(f)
    return f


@cli.command("run", context_settings={"allow_interspersed_args": False})
@run_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run_cmd(image, command, **options):
    """Create and start a container."""
    sys.exit(runcmd.run(image, command, options))


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
    each(refs, containers.start)


@cli.command("stop")
@STOP_TIME
@click.argument("refs", nargs=-1, required=True)
def stop_cmd(timeout, refs):
    """Stop running containers: the stop signal (SIGTERM), then SIGKILL."""
    each(refs, lambda ref: containers.stop(ref, timeout))


@cli.command("rm")
@click.option("-f", "--force", is_flag=True, help="Kill a running container first.")
@click.option("-v", "--volumes", is_flag=True, help="Remove its anonymous volumes too.")
@click.argument("refs", nargs=-1, required=True)
def rm_cmd(force, volumes, refs):
    """Remove containers."""
    each(refs, lambda ref: containers.remove(ref, force, volumes))


def _status(record: dict) -> str:
    st = record["State"]
    if st.get("Restarting"):
        return f"Restarting ({st.get('ExitCode', 0)}) {human_age(st.get('FinishedAt', ''))} ago"
    if st.get("Running"):
        return f"Up {human_age(st['StartedAt'])}" + (" (Paused)" if st.get("Paused") else "")
    if st.get("Status") == "created":
        return "Created"
    return f"Exited ({st.get('ExitCode', 0)}) {human_age(st.get('FinishedAt', ''))} ago"


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
            "CreatedAt": r["Created"], "RunningFor": human_age(r["Created"]),
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
                   f"{human_age(r['Created']) + ' ago':<24} {_status(r):<34} {_ports(r) or '':<8} "
                   f"{r['Name'].lstrip('/')}")


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


def main(argv: list[str] | None = None) -> None:
    """Run the command line and exit without interpreter finalisation (see
    exits.finish)."""
    exits.finish(_run(sys.argv[1:] if argv is None else argv))


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
        code = exits.exit_code(exc)
        # 125 (could not create the container) is run's; the image store
        # raises it for every command, and `rmi`, `load`... exit 1, as Docker.
        return 1 if code == 125 and argv[:1] not in (["run"], ["create"]) else code


gc.enable()
