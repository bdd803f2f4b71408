"""`minidocker cni ...`: cnitool's interface over our executor.

    minidocker cni add|check|del NETWORK NETNS
    minidocker cni gc NETWORK [NETNS] [--valid CID:IFNAME ...]
    minidocker cni status NETWORK [NETNS]
    minidocker cni version NETWORK [NETNS]
    minidocker cni ls
    minidocker cni validate FILE

The environment is cnitool's (NETCONFPATH, CNI_PATH, CAP_ARGS, CNI_ARGS,
CNI_IFNAME); each has a flag that wins over it. Without --container-id the id
is derived from the netns path exactly as cnitool does, so both tools address
the same cache entry.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys

import click

from cni.env import parse_cni_args
from cni.errors import CNIError
from minidocker import paths
from minidocker.network.cni import config as cni_config
from minidocker.network.cni.executor import DEFAULT_TIMEOUT, CNIExecutor, RuntimeConf, failure_text


def cnitool_container_id(netns: str) -> str:
    """cnitool: "cnitool-" + the first 10 bytes of sha512(abs netns path), in hex."""
    return "cnitool-" + hashlib.sha512(os.path.abspath(netns).encode()).hexdigest()[:20]


def _fail(msg: str) -> None:
    first, *rest = str(msg).splitlines() or [""]
    click.echo("Error: " + " ".join(first.split()), err=True)
    for line in rest:   # a consequence (failure_text's cleanup line), after the cause
        click.echo(" ".join(line.split()), err=True)
    sys.exit(1)


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("minidocker.cni")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


def _conf_dir(value: str | None) -> str:
    return value or os.environ.get("NETCONFPATH") or str(paths.cni_conf_dir())


class _Ctx:
    def __init__(self, conf_dir, cni_path, cache_dir, timeout):
        self.conf_dir = _conf_dir(conf_dir)
        path = cni_path if cni_path is not None else os.environ.get("CNI_PATH")
        self.path = [p for p in path.split(":") if p] if path else paths.cni_path()
        self.cache_dir = cache_dir or str(paths.cni_cache_dir())
        self.timeout = timeout

    def executor(self) -> CNIExecutor:
        return CNIExecutor(self.conf_dir, self.cache_dir, self.path, timeout=self.timeout,
                           preferred={"cni-bridge": paths.own_plugin_dirs()})

    def network(self, name: str, cached_for: RuntimeConf | None = None):
        """The directory's network `name`; for a DEL (`cached_for`), the
        config its ADD cached when the directory's is gone or broken."""
        problem = None
        if not os.path.isdir(self.conf_dir):
            problem = f"configuration directory {self.conf_dir!r} does not exist (set NETCONFPATH or --conf-dir)"
        else:
            try:
                return cni_config.load_network(self.conf_dir, name)
            except CNIError as err:
                problem = str(err)
        cached = self.executor().cached_config(name, cached_for) if cached_for else None
        if cached is None:
            _fail(problem)
        click.echo(f"warning: {problem}; using the config cached by the ADD", err=True)
        return cached


@click.group("cni", help="Run CNI network configurations (cnitool's interface).")
@click.option("--conf-dir", metavar="DIR", help="Configuration directory [env NETCONFPATH; "
              "default MINIDOCKER_CNI_CONF or /etc/cni/net.d].")
@click.option("--cni-path", metavar="DIRS", help="Plugin search path, colon-separated [env CNI_PATH].")
@click.option("--cache-dir", metavar="DIR", help="Result cache [env MINIDOCKER_CNI_CACHE; default /var/lib/cni].")
@click.option("--timeout", type=click.FloatRange(min=0.001), default=DEFAULT_TIMEOUT, show_default=True,
              help="Seconds allowed for each operation; a plugin still running is killed.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning",
              show_default=True, help="debug prints every plugin call to stderr.")
@click.pass_context
def cni(ctx, conf_dir, cni_path, cache_dir, timeout, log_level):
    _setup_logging(log_level)
    ctx.obj = _Ctx(conf_dir, cni_path, cache_dir, timeout)


def _runtime_options(f):
    f = click.option("--container-id", metavar="ID",
                     help="Container id [default: derived from NETNS as cnitool does].")(f)
    f = click.option("--ifname", "-i", metavar="NAME", help="Interface name [env CNI_IFNAME; default eth0].")(f)
    f = click.option("--args", "cni_args", metavar="K=V;...", help="CNI_ARGS pairs [env CNI_ARGS].")(f)
    f = click.option("--cap-args", metavar="JSON", help="Capability args as a JSON object [env CAP_ARGS].")(f)
    return f


def _runtime_conf(netns, container_id, ifname, cni_args, cap_args) -> RuntimeConf:
    netns = os.path.abspath(netns) if netns else ""
    ifname = ifname or os.environ.get("CNI_IFNAME") or "eth0"
    raw_args = cni_args if cni_args is not None else os.environ.get("CNI_ARGS", "")
    try:
        args = parse_cni_args(raw_args)
    except CNIError:
        _fail(f"invalid CNI_ARGS {raw_args!r}: expected K=V pairs separated by ';'")
    raw_caps = cap_args if cap_args is not None else os.environ.get("CAP_ARGS", "")
    caps = {}
    if raw_caps:
        try:
            caps = json.loads(raw_caps)
        except ValueError:
            caps = None
        if not isinstance(caps, dict):
            _fail(f"invalid CAP_ARGS {raw_caps[:80]!r}: expected a JSON object, "
                  "e.g. '{\"portMappings\":[...]}'")
    cid = container_id or (cnitool_container_id(netns) if netns else "")
    if not cid:
        _fail("a container id is required: give NETNS or --container-id")
    return RuntimeConf(cid, netns, ifname, args, caps)


def _run(fn):
    try:
        return fn()
    except CNIError as err:
        _fail(failure_text(err))


def _attachment_command(name: str, help: str, call):
    """`add`, `check` and `del`: NETWORK NETNS plus cnitool's runtime options;
    what the executor returns (ADD's result) is printed."""
    @cni.command(name, help=help)
    @click.argument("network")
    @click.argument("netns")
    @_runtime_options
    @click.pass_obj
    def command(obj: _Ctx, network, netns, container_id, ifname, cni_args, cap_args):
        rt = _runtime_conf(netns, container_id, ifname, cni_args, cap_args)
        net = obj.network(network, cached_for=rt if name == "del" else None)
        result = _run(lambda: call(obj.executor(), net, rt))
        if result is not None:
            click.echo(json.dumps(result.to_dict(), indent=4))
    return command


add_cmd = _attachment_command("add", "ADD the network's plugins to NETNS; prints the result.",
                              lambda ex, net, rt: ex.add(net, rt))
check_cmd = _attachment_command("check", "CHECK an attachment made by add.",
                                lambda ex, net, rt: ex.check(net, rt))
del_cmd = _attachment_command("del", "DEL an attachment (reverse order, cached result and "
                              "capability args).", lambda ex, net, rt: ex.delete(net, rt))


def _valid_pair(value: str) -> tuple[str, str]:
    cid, sep, ifname = value.rpartition(":")
    if not sep or not cid or not ifname:
        _fail(f"invalid --valid {value!r}: expected CONTAINER_ID:IFNAME")
    return cid, ifname


@cni.command("gc", help="Remove cached attachments not listed with --valid (none listed: all), "
             "then GC the plugins (cniVersion >= 1.1.0).")
@click.argument("network")
@click.argument("netns", required=False)
@click.option("--valid", multiple=True, metavar="CID:IFNAME", help="An attachment to keep (repeatable).")
@click.pass_obj
def gc_cmd(obj: _Ctx, network, netns, valid):
    net = obj.network(network)
    pairs = [_valid_pair(v) for v in valid]
    _run(lambda: obj.executor().gc(net, pairs))


@cni.command("status", help="Ask the network's plugins whether they are ready (cniVersion >= 1.1.0).")
@click.argument("network")
@click.argument("netns", required=False)
@click.pass_obj
def status_cmd(obj: _Ctx, network, netns):
    net = obj.network(network)
    asked = _run(lambda: obj.executor().status(net))
    if asked:
        click.echo(f"{net.name}: ready")
    else:
        click.echo(f"{net.name}: cniVersion {net.cni_version} has no STATUS; assumed ready")


@cni.command("version", help="Show the spec versions each plugin of NETWORK supports.")
@click.argument("network")
@click.argument("netns", required=False)
@click.pass_obj
def version_cmd(obj: _Ctx, network, netns):
    net = obj.network(network)
    ex = obj.executor()
    click.echo(f"{net.name}: cniVersion {net.cni_version}")
    failed = False
    for plugin in net.plugins:
        try:
            versions = ex.version_info(plugin["type"])
            mark = "" if net.cni_version in versions else "  (does not support the config's version)"
            click.echo(f"  {plugin['type']}: {', '.join(versions)}{mark}")
        except CNIError as err:
            failed = True
            click.echo(f"  {plugin['type']}: error: {err}")
    if failed:
        sys.exit(1)


@cni.command("ls", help="List the networks of the configuration directory.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def ls_cmd(obj: _Ctx, as_json):
    if not os.path.isdir(obj.conf_dir):
        _fail(f"configuration directory {obj.conf_dir!r} does not exist (set NETCONFPATH or --conf-dir)")
    loaded = cni_config.load_dir(obj.conf_dir)
    rows = [{"name": n.name, "cniVersion": n.cni_version, "plugins": [p["type"] for p in n.plugins],
             "file": os.path.basename(n.source), "default": i == 0}
            for i, n in enumerate(loaded.networks)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'NETWORK':20} {'VERSION':8} {'PLUGINS':40} FILE")
    for r in rows:
        name = r["name"] + (" *" if r["default"] else "")
        click.echo(f"{name:20} {r['cniVersion']:8} {','.join(r['plugins']):40} {r['file']}")


@cni.command("validate", help="Check a configuration file: syntax, fields, plugins and their versions.")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--no-plugins", is_flag=True, help="Only check the file, not the plugins on CNI_PATH.")
@click.pass_obj
def validate_cmd(obj: _Ctx, file, no_plugins):
    if not os.path.isfile(file):
        _fail(f"no such file {file!r}")
    try:
        net = cni_config.load_file(file)
    except CNIError as err:
        _fail(str(err))
    caps: list[str] = []
    if not no_plugins:
        caps = _run(lambda: obj.executor().validate(net))
    plugins = ", ".join(p["type"] for p in net.plugins)
    extra = f"; capabilities: {', '.join(caps)}" if caps else ""
    click.echo(f"{file}: network {net.name!r}, cniVersion {net.cni_version}, plugins {plugins}: valid{extra}")


def main(argv=None) -> None:
    cni.main(args=argv, prog_name="minidocker cni")
