"""The `run` command without click: its options, declared once, and its body.

Importing click costs about as much as `runc run` takes to run a container,
so a plain `run` is parsed here instead (entry.py): OPTIONS is the single
declaration of `run`'s options, cli.py builds the click command from it, and
parse() understands the plain, well-formed invocations. Anything else (help,
errors, `--`, short-option bundles, values that look like options, a repeated
single-valued option, an option with a click type) gets None, and click
parses it, so help and error messages stay click's.

To add an option: one Option line here, and the same name in
containers.CreateOptions.DEFAULTS (run passes every option on by name).
"""
from __future__ import annotations

import os
import sys

from minidocker import containers


class Option:
    """One `run` option. dest is containers.CreateOptions' field; a flag
    takes no value; multiple collects repeated values into a tuple. click
    holds extra click.option arguments (a type, say): the fast parser leaves
    invocations that use such an option to click."""

    def __init__(self, *decls: str, dest: str, help: str, flag: bool = False,
                 multiple: bool = False, default=None, show_default: bool = False,
                 click: dict | None = None):
        self.decls = decls
        self.dest = dest
        self.help = help
        self.flag = flag
        self.multiple = multiple
        self.default = False if flag and default is None else default
        self.show_default = show_default
        self.click = click or {}

    def click_kwargs(self) -> dict:
        """click.option's keyword arguments for this option."""
        kw = dict(help=self.help, **self.click)
        if self.flag:
            kw["is_flag"] = True
        if self.multiple:
            kw["multiple"] = True
        if self.default is not None and not self.flag:
            kw["default"] = self.default
        if self.show_default:
            kw["show_default"] = True
        return kw

    def empty(self):
        """The value when the option is not given (what click gives)."""
        return () if self.multiple else self.default


OPTIONS = (
    Option("-d", "--detach", dest="detach", flag=True, help="Run in the background; print the id."),
    Option("--rm", dest="auto_remove", flag=True, help="Remove the container when it exits."),
    Option("--name", dest="name", help="Container name."),
    Option("-e", "--env", dest="env", multiple=True, help="KEY=VALUE (or KEY: copied from here)."),
    Option("--env-file", dest="env_files", multiple=True, help="File of KEY=VALUE lines."),
    Option("-w", "--workdir", dest="workdir", help="Working directory inside the container."),
    Option("--hostname", dest="hostname", help="Container host name."),
    Option("--entrypoint", dest="entrypoint", help="Override the image's entrypoint."),
    Option("-i", "--interactive", dest="interactive", flag=True, help="Keep stdin attached."),
    Option("-t", "--tty", dest="tty", flag=True, help="Allocate a pseudo-terminal."),
    Option("--network", "--net", dest="network", default="bridge", show_default=True,
           help="bridge | NETWORK | container:<id> | none | host"),
    Option("-p", "--publish", dest="publish", multiple=True,
           help="[IP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp]; ranges A-B; IPv6 hosts in [ ]."),
    Option("-P", "--publish-all", dest="publish_all", flag=True,
           help="Publish the image's exposed ports on random host ports."),
    Option("--ip", dest="ip", help="IPv4 address on the network."),
    Option("--ip6", dest="ip6", help="IPv6 address on the network."),
    Option("--dns", dest="dns", multiple=True, help="DNS server address."),
    Option("--add-host", dest="add_hosts", multiple=True, help="NAME:IP line for /etc/hosts."),
    Option("--network-alias", dest="aliases", multiple=True, help="Another name on a user network."),
    Option("--mac-address", dest="mac", help="The container's MAC address."),
    Option("-v", "--volume", dest="volumes", multiple=True,
           help="HOST-PATH:CONTAINER-PATH[:ro], NAME:CONTAINER-PATH[:ro] or CONTAINER-PATH."),
    Option("--mount", dest="mounts", multiple=True,
           help="type=bind|volume|tmpfs,source=...,target=...[,readonly]"),
    Option("--tmpfs", dest="tmpfs", multiple=True, help="PATH[:OPTIONS]: a tmpfs mount."),
    Option("--read-only", dest="read_only", flag=True, help="Mount the root file system read-only."),
    Option("-u", "--user", dest="user", help="USER[:GROUP], names or numbers."),
    Option("--group-add", dest="group_add", multiple=True, help="Another group (name or gid)."),
    Option("-l", "--label", dest="labels", multiple=True, help="KEY=VALUE metadata."),
    Option("--label-file", dest="label_files", multiple=True, help="File of KEY=VALUE lines."),
    Option("--cap-add", dest="cap_add", multiple=True, help="Add a capability (or ALL)."),
    Option("--cap-drop", dest="cap_drop", multiple=True, help="Drop a capability (or ALL)."),
    Option("--privileged", dest="privileged", flag=True,
           help="Every capability and host device, no masked paths."),
    Option("--security-opt", dest="security_opt", multiple=True,
           help="no-new-privileges[=true|false]."),
    Option("--sysctl", dest="sysctls", multiple=True, help="KEY=VALUE of the container's namespaces."),
    Option("--ulimit", dest="ulimits", multiple=True, help="TYPE=SOFT[:HARD], e.g. nofile=1024:2048."),
    Option("--init", dest="init", flag=True, help="Run an init (tini) that reaps zombies as pid 1."),
    Option("--stop-signal", dest="stop_signal", help="Signal that stops the container (SIGTERM)."),
    Option("--stop-timeout", dest="stop_timeout", help="Seconds `stop` waits before SIGKILL (10)."),
    Option("--restart", dest="restart", help="no | on-failure[:N] | always | unless-stopped"),
    Option("-m", "--memory", dest="memory", help="Memory limit (32m, 1g, bytes)."),
    Option("--memory-swap", dest="memory_swap",
           help="Memory plus swap limit; -1 for unlimited swap (default: twice --memory)."),
    Option("--cpus", dest="cpus", help="Number of CPUs (0.5, 1.5...)."),
    Option("-c", "--cpu-shares", dest="cpu_shares", help="CPU shares (relative weight, 1024 = default)."),
    Option("--pids-limit", dest="pids_limit", help="At most this many processes (-1: unlimited)."),
    Option("--runtime", dest="runtime", default="builtin", show_default=True,
           help="builtin | runc"),
)

#: click's shell-completion switch for prog_name "minidocker": click's business.
COMPLETE_VAR = "_MINIDOCKER_COMPLETE"


def parse(argv: list[str]) -> dict | None:
    """click's parameters for `run ...` (image, command and every option's
    dest), or None when click has to parse argv itself."""
    if not argv or argv[0] != "run" or COMPLETE_VAR in os.environ:
        return None
    by_name = {decl: opt for opt in OPTIONS for decl in opt.decls}
    values: dict = {}
    i, n = 1, len(argv)
    while i < n:
        token = argv[i]
        if token[:1] != "-" or token == "-":
            break  # the image: options end here (no interspersed options)
        name, eq, inline = token.partition("=") if token[:2] == "--" else (token, "", "")
        opt = by_name.get(name)
        if opt is None or opt.click:
            return None  # --help, unknown, -eVALUE, -di, `--`, a typed option
        if opt.flag:
            if eq:
                return None  # click: "does not take a value"
            values[opt.dest] = True
            i += 1
            continue
        if eq:
            value, i = inline, i + 1
        elif i + 1 < n and argv[i + 1][:1] != "-":
            value, i = argv[i + 1], i + 2
        else:
            return None  # a missing value, or one that looks like an option
        if opt.multiple:
            values.setdefault(opt.dest, []).append(value)
        elif opt.dest in values:
            return None  # repeated: click's rules
        else:
            values[opt.dest] = value
    if i >= n:
        return None  # no image: click's message
    params = {opt.dest: opt.empty() for opt in OPTIONS}
    for dest, value in values.items():
        params[dest] = tuple(value) if isinstance(value, list) else value
    params["image"] = argv[i]
    params["command"] = tuple(argv[i + 1:])
    return params


def run(image: str, command, options: dict) -> int:
    """Create and start a container: detached, print its id; attached, relay
    signals and return its exit code. options: every OPTIONS dest."""
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
    detach = options.pop("detach")
    if options["tty"] and options["interactive"] and not detach and not os.isatty(0):
        from minidocker.errors import MinidockerError
        raise MinidockerError("the input device is not a TTY: -t with -i needs a terminal "
                              "on stdin (drop -t, or run from a terminal)", 1)
    record = containers.create(containers.CreateOptions(image, cmd=list(command), **options))
    if detach:
        containers.start(record["Id"])
        sys.stdout.write(record["Id"] + "\n")
        sys.stdout.flush()
        return 0
    relay = containers.SignalRelay()
    try:
        started = containers.start(record["Id"], attach=True)
    except BaseException:
        relay.restore()
        raise
    sys.stdout.flush()
    if options["tty"]:
        from minidocker import attach
        if attach.terminal_session(record["Id"], stdin=options["interactive"]):
            relay.restore()
            return 0  # detached (ctrl-p ctrl-q): the container runs on
    return containers.wait_attached(started, relay)
