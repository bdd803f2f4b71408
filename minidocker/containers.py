"""Container lifecycle: create, start, stop, rm, exec, and finding containers.

There is no daemon: each command reads and writes the container's record
(containers/<id>/container.json, Docker's inspect shape) under the
container's lock, and a per-container shim (shim.py) owns the running
process. start() prepares everything the process needs (overlay rootfs,
pinned network namespace, network setup, config.json) and then hands over to
the shim, which reports back on a pipe. The record store (reading, writing,
finding, locking) is records.py's; the files in the container's /etc are
etcfiles.py's. (long: create, start, stop, rm and exec share one record and
lock discipline; the runtime work reshapes `run`'s options here, and the
next split (stop/rm/exec) is best made after it lands.)
"""
from __future__ import annotations

import _signal
import os
import select
import sys
import time

from minidocker import clock, etcfiles, events, fsutil, images, paths, records, shimwait, state, teardown
from minidocker.errors import Conflict, MinidockerError, NotFound
from minidocker.faults import fault
from minidocker.network import modes, netns
from minidocker.runtime import cgroups, oci

RUNTIMES = ("builtin", "runc")
# Patterns as strings: `re` (with enum, functools, collections: ~5 ms) is imported,
# and they are compiled, only when an option uses them (_re()).
NAME_RE = r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+\Z"  # \Z: `$` allows a trailing newline
_ENV_KEY_RE = r"^[^=\s\x00]+\Z"
SHIM_TIMEOUT = 30
#: HostConfig's resource fields when run sets none (resources.py parses them).
NO_LIMITS = {"Memory": 0, "MemorySwap": 0, "NanoCpus": 0, "CpuShares": 0, "PidsLimit": None}
#: HostConfig's security fields when run sets none (security.py parses them).
NO_SECURITY = {"CapAdd": None, "CapDrop": None, "Privileged": False, "SecurityOpt": None,
               "Sysctls": None, "Ulimits": None, "Init": None}
RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")


class CreateOptions:
    """What `run` asked for: image, then keyword options. A plain class, not a
    dataclass (importing dataclasses pulls in inspect: ms on every `run`).
    Add an option as one line of DEFAULTS; a callable default is a factory."""

    DEFAULTS = {
        "cmd": list,
        "name": None,
        "env": list,
        "env_files": list,
        "workdir": None,
        "hostname": None,
        "entrypoint": None,
        "interactive": False,
        "tty": False,
        "network": "bridge",
        "runtime": "builtin",
        "auto_remove": False,
        "labels": list,          # -l/--label KEY=VALUE
        # networking (network/modes.py reads them back from the record)
        "publish": list,         # -p values, parsed here
        "publish_all": False,    # -P
        "ip": None,
        "ip6": None,
        "dns": list,
        "add_hosts": list,
        "aliases": list,         # --network-alias
        "mac": None,
        "user": None,            # -u
        "group_add": list,
        "labels": list,          # -l KEY=VALUE
        "label_files": list,
        # security and process (security.py)
        "cap_add": list,
        "cap_drop": list,
        "privileged": False,
        "security_opt": list,
        "sysctls": list,
        "ulimits": list,
        "init": False,
        "stop_signal": None,
        "stop_timeout": None,
        "restart": None,
        # mounts (volumes.py)
        "volumes": list,         # -v
        "mounts": list,          # --mount
        "tmpfs": list,
        "read_only": False,
        # resources (resources.py): the values as given
        "memory": None,
        "memory_swap": None,
        "cpus": None,
        "cpu_shares": None,
        "pids_limit": None,
    }

    def __init__(self, image: str, **options):
        unknown = set(options) - set(self.DEFAULTS)
        if unknown:
            raise TypeError(f"CreateOptions: unknown options {', '.join(sorted(unknown))}")
        self.image = image
        for key, default in self.DEFAULTS.items():
            if key in options:
                setattr(self, key, options[key])
            else:
                setattr(self, key, default() if callable(default) else default)


def _re():
    import re
    return re


def now() -> str:
    return clock.now()


NEVER = clock.NEVER


def never_started_status(record: dict) -> str:
    """Status after a failed start: Docker keeps `created` for a container
    that never ran, `exited` for one that did."""
    return "created" if record["State"].get("StartedAt", NEVER) == NEVER else "exited"


def cdir(cid: str):
    return paths.container_dir(cid)


def _lock(cid: str):
    return records.locked(cid)


# --- finding: the record store's (records.py), under the names commands use ---
shim_alive, refresh, all_records, find = (records.shim_alive, records.refresh,
                                          records.all_records, records.find)


# --- create --------------------------------------------------------------------

def parse_env(items: list[str], source: str = "-e") -> list[str]:
    out = []
    for item in items:
        key, eq, value = item.partition("=")
        if not _re().match(_ENV_KEY_RE, key):
            raise MinidockerError(f"invalid environment variable {item!r} in {source}: "
                                  "expected KEY=VALUE (or KEY to copy it from this shell)", 125)
        if eq:
            out.append(f"{key}={value}")
        elif key in os.environ:
            out.append(f"{key}={os.environ[key]}")
    return out


def _labels(items: list[str], source: str) -> dict[str, str]:
    """KEY=VALUE (or KEY: an empty value) items as a dict."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key or any(c.isspace() for c in key):
            raise MinidockerError(f"invalid label {item!r} in {source}: expected KEY=VALUE", 125)
        out[key] = value
    return out


def read_env_file(path: str, raw: bool = False) -> list[str]:
    try:
        with open(path) as fh:
            lines = [l.strip() for l in fh]
    except OSError as exc:
        raise MinidockerError(f"cannot read env file {path!r}: {exc.strerror}", 125) from None
    except UnicodeDecodeError as exc:
        raise MinidockerError(f"cannot read env file {path!r}: not UTF-8 text "
                              f"(byte {exc.start})", 125) from None
    lines = [l for l in lines if l and not l.startswith("#")]
    return lines if raw else parse_env(lines, source=path)


def merge_env(base: list[str], extra: list[str]) -> list[str]:
    env: dict[str, str] = {}
    for item in list(base) + list(extra):
        key, _, value = item.partition("=")
        env[key] = value
    if "PATH" not in env:
        env = {"PATH": images.DEFAULT_PATH.split("=", 1)[1], **env}
    return [f"{k}={v}" for k, v in env.items()]


def parse_signal(text: str, what: str, code: int = 1) -> int:
    """SIGTERM, TERM, term or 15 -> 15; anything else is an error naming it."""
    value = str(text).strip().upper()
    if value.isdigit() and 0 < int(value) <= 64:
        return int(value)
    name = value if value.startswith("SIG") else "SIG" + value
    import signal
    if name in signal.Signals.__members__ and not name.startswith("SIG_"):
        return int(signal.Signals[name])
    raise MinidockerError(f"invalid signal {text!r} for {what}: a name such as SIGTERM, TERM "
                          "or KILL, or a number from 1 to 64", code)


def parse_restart(text: str) -> dict:
    """Docker's --restart: no | on-failure[:N] | always | unless-stopped."""
    name, colon, count = text.partition(":")
    if name not in RESTART_POLICIES:
        raise MinidockerError(f"invalid restart policy {text!r}: accepted are no, "
                              "on-failure[:MAX-RETRIES], always, unless-stopped", 125)
    if colon and name != "on-failure":
        raise MinidockerError(f"invalid restart policy {text!r}: a maximum retry count is only "
                              "for on-failure", 125)
    if colon and not count.isdigit():
        raise MinidockerError(f"invalid restart policy {text!r}: the maximum retry count must "
                              "be a number", 125)
    return {"Name": name, "MaximumRetryCount": int(count or 0)}


def _random_name(holder) -> str:
    """A free adjective_person name; holder(name) says who has one."""
    adjectives = ["brave", "calm", "eager", "fond", "keen", "lucid", "merry", "quiet",
                  "sharp", "tender", "vivid", "witty", "bold", "clever", "jolly", "nifty"]
    people = ["hopper", "lovelace", "turing", "ritchie", "thompson", "torvalds", "knuth",
              "liskov", "dijkstra", "hamilton", "noether", "curie", "shannon", "wirth"]
    while True:
        a, b, c = os.urandom(3)
        name = f"/{adjectives[a % len(adjectives)]}_{people[b % len(people)]}"
        if holder(name):
            name += f"{c % 100}"
        if not holder(name):
            return name


def create(opts: CreateOptions) -> dict:
    """Validate everything, then write the record (status `created`).
    (long: every check of `run`'s options comes before anything is written,
    then the record in Docker's inspect shape, read top to bottom as
    `inspect` prints it.)"""
    if opts.runtime not in RUNTIMES:
        raise MinidockerError(f"unknown runtime {opts.runtime!r}: accepted are "
                              f"{', '.join(RUNTIMES)}", 125)
    if opts.name is not None and not _re().match(NAME_RE, opts.name):
        raise MinidockerError(f"invalid container name {opts.name!r}: use [a-zA-Z0-9] then "
                              "[a-zA-Z0-9_.-], at least 2 characters", 125)
    env = []
    for f in opts.env_files:
        env += read_env_file(f)
    env += parse_env(opts.env)
    mode = modes.resolve(opts.network)
    netcfg = _network_options(opts, mode)
    if opts.workdir is not None and not opts.workdir.startswith("/"):
        raise MinidockerError(f"invalid working directory {opts.workdir!r}: it must be an "
                              "absolute path", 125)
    if opts.hostname is not None and not _re().fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,62})", opts.hostname):
        raise MinidockerError(f"invalid hostname {opts.hostname!r}: letters, digits, '.' "
                              "and '-', at most 63 characters", 125)
    limits = NO_LIMITS
    if (opts.memory, opts.memory_swap, opts.cpus, opts.cpu_shares, opts.pids_limit) != (None,) * 5:
        from minidocker import resources
        limits = resources.host_config(opts)
    mounts = []
    if opts.volumes or opts.mounts or opts.tmpfs:
        from minidocker import volumes
        mounts = volumes.mounts_of(opts)
    if opts.user is not None and not _re().fullmatch(r"[^:\s]+(:[^:\s]+)?", opts.user):
        raise MinidockerError(f"invalid --user {opts.user!r}: expected USER[:GROUP], names or "
                              "numbers", 125)
    for part in (opts.user or "").split(":") + list(opts.group_add):
        if part.isdigit() and int(part) > 2147483647:
            raise MinidockerError(f"invalid user or group {part!r}: uids and gids must be in "
                                  "range 0-2147483647", 125)
    for group in opts.group_add:
        if not _re().fullmatch(r"[^:\s]+", group):
            raise MinidockerError(f"invalid --group-add {group!r}: a group name or number", 125)
    labels = {}
    for f in opts.label_files:
        labels.update(_labels(read_env_file(f, raw=True), f))
    labels.update(_labels(opts.labels, "--label"))
    security = NO_SECURITY
    if (opts.cap_add or opts.cap_drop or opts.privileged or opts.security_opt or opts.sysctls
            or opts.ulimits or opts.init):
        from minidocker import security as sec
        sec.capabilities(opts.cap_add, opts.cap_drop, opts.privileged)  # names checked now
        sec.no_new_privileges(opts.security_opt)
        security = {"CapAdd": list(opts.cap_add) or None, "CapDrop": list(opts.cap_drop) or None,
                    "Privileged": opts.privileged, "SecurityOpt": list(opts.security_opt) or None,
                    "Sysctls": sec.sysctls(opts.sysctls, opts.network) or None,
                    "Ulimits": sec.ulimits(opts.ulimits) or None, "Init": opts.init or None}
        if opts.init:
            sec.init_binary()
    stop_signal = None
    if opts.stop_signal is not None:
        parse_signal(opts.stop_signal, "--stop-signal", 125)
        stop_signal = opts.stop_signal
    stop_timeout = None
    if opts.stop_timeout is not None:
        if not _re().fullmatch(r"-?\d+", opts.stop_timeout):
            raise MinidockerError(f"invalid --stop-timeout {opts.stop_timeout!r}: a number of "
                                  "seconds", 125)
        stop_timeout = int(opts.stop_timeout)
    restart = {"Name": "no", "MaximumRetryCount": 0}
    if opts.restart is not None:
        restart = parse_restart(opts.restart)
        if restart["Name"] != "no" and opts.auto_remove:
            raise MinidockerError(f"conflicting options: --restart {opts.restart} and --rm "
                                  "(a removed container cannot restart)", 125)
    image = images.resolve(opts.image)
    icfg = image.get("Config") or {}
    if opts.entrypoint is not None:
        entrypoint = [opts.entrypoint] if opts.entrypoint else []
        cmd = list(opts.cmd)
    else:
        entrypoint = list(icfg.get("Entrypoint") or [])
        cmd = list(opts.cmd) or list(icfg.get("Cmd") or [])
    argv = entrypoint + cmd
    if not argv:
        raise MinidockerError(f"no command specified: image {opts.image!r} has no Cmd or "
                              "Entrypoint; give a command after the image", 125)
    cid = os.urandom(32).hex()
    record = {
        "Id": cid,
        "Created": now(),
        "Path": argv[0],
        "Args": argv[1:],
        "State": {"Status": "created", "Running": False, "Paused": False, "Restarting": False,
                  "OOMKilled": False, "Dead": False, "Pid": 0, "ExitCode": 0, "Error": "",
                  "StartedAt": NEVER, "FinishedAt": NEVER},
        "Image": image["Id"],
        "Name": "",
        "Driver": "overlay",
        "LogPath": os.path.join(cdir(cid), "container.log"),
        "ResolvConfPath": os.path.join(cdir(cid), "resolv.conf"),
        "HostnamePath": os.path.join(cdir(cid), "hostname"),
        "HostsPath": os.path.join(cdir(cid), "hosts"),
        "Config": {
            "Hostname": opts.hostname or cid[:12],
            "User": opts.user if opts.user is not None else icfg.get("User", ""),
            "Env": merge_env(icfg.get("Env") or [], (["TERM=xterm"] if opts.tty else []) + env),
            "Cmd": cmd or None,
            "Entrypoint": entrypoint or None,
            "WorkingDir": opts.workdir if opts.workdir is not None else icfg.get("WorkingDir", ""),
            "Image": opts.image,
            "ExposedPorts": icfg.get("ExposedPorts") or {},
            "OpenStdin": opts.interactive,
            "Tty": opts.tty,
            "Labels": {**(icfg.get("Labels") or {}), **labels},
            **({"StopSignal": stop_signal or icfg["StopSignal"]}
               if stop_signal or icfg.get("StopSignal") else {}),
            **({"StopTimeout": stop_timeout} if stop_timeout is not None else {}),
        },
        "HostConfig": {"NetworkMode": opts.network, "PortBindings": netcfg["PortBindings"],
                       "PublishAllPorts": opts.publish_all, "Dns": netcfg["Dns"],
                       "ExtraHosts": netcfg["ExtraHosts"],
                       "AutoRemove": opts.auto_remove, "Runtime": opts.runtime, **limits,
                       "GroupAdd": list(opts.group_add) or None, **security,
                       "RestartPolicy": restart,
                       "Binds": list(opts.volumes) or None, "ReadonlyRootfs": opts.read_only,
                       "Tmpfs": {m["Destination"]: m["Mode"] for m in mounts
                                 if m["Type"] == "tmpfs"} or None},
        "Mounts": mounts,
        "NetworkingConfig": {"EndpointsConfig": netcfg["EndpointsConfig"]},
        "NetworkSettings": {"SandboxKey": "", "Ports": {}, "Networks": {}},
        "ShimPid": 0,
        "RestartCount": 0,
    }
    mode.check(record)  # host ports free, addresses usable: before anything is written
    with records.names_lock():
        if opts.name:
            name = "/" + opts.name.lstrip("/")
            holder = records.name_holder(name)
            if holder:
                raise Conflict(f"the container name {name!r} is already in use by container "
                               f"{holder[:12]}: remove it or pick another --name", 125)
        else:
            name = _random_name(records.name_holder)
        record["Name"] = name
        records.claim_name(name, cid)
        state.ensure_dir(os.path.join(cdir(cid), "work"))
        for sub in ("upper", "rootfs"):  # the overlay's root takes the upper dir's mode
            state.ensure_dir(os.path.join(cdir(cid), sub), mode=0o755)
        records.save(record)
    events.append("create", record)
    return record


def _network_options(opts: CreateOptions, mode: modes.Mode) -> dict:
    """-p/-P, --ip, --dns, --add-host... checked, in the record's shape."""
    if not (opts.publish or opts.publish_all or opts.ip or opts.ip6 or opts.dns or opts.add_hosts
            or opts.aliases or opts.mac):
        return {"PortBindings": {}, "Dns": [], "ExtraHosts": [], "EndpointsConfig": {}}
    from minidocker.network import runopts
    return runopts.parse(opts, mode)


# --- start ---------------------------------------------------------------------

def _prepare(record: dict, mode: modes.Mode) -> None:
    """Everything before the process: rootfs, files, namespace, network, spec.
    (long: the spec takes the run options' cgroup, terminal, security and
    mount parts in one place, in the order runc applies them.)"""
    cid = record["Id"]
    d = cdir(cid)
    sandbox = mode.sandbox(record)  # container:<id> enters that one's namespace
    # the namespace is made while the rootfs is mounted (the kernel work overlaps)
    pinned = netns.start_pin(sandbox) if mode.pins else None
    try:
        image = images.lookup(record["Image"])
        rootfs = os.path.join(d, "rootfs")
        # --rm: the upper layer is deleted at exit, so it need not survive a
        # crash either; `volatile` spares the sync at unmount (~2 ms a run).
        images.mount_rootfs(image, rootfs, os.path.join(d, "upper"), os.path.join(d, "work"),
                            volatile=bool(record["HostConfig"].get("AutoRemove")))
        cfg = record["Config"]
        user = oci.resolve_user(rootfs, cfg.get("User", ""),
                                record["HostConfig"].get("GroupAdd") or ())
        cwd = cfg.get("WorkingDir") or "/"
        fsutil.mkdir_in_root(rootfs, cwd)
        if mode.own_namespace:
            hostname = cfg["Hostname"]
        else:
            hostname = cfg["Hostname"] if cfg["Hostname"] != cid[:12] else os.uname().nodename
        files = etcfiles.write(record, host_mode=not mode.own_namespace)
        user_mounts = []
        if record.get("Mounts"):  # volumes made, bind sources resolved: their paths recorded
            from minidocker import volumes
            user_mounts = volumes.spec_mounts(record, rootfs)
    finally:
        if pinned:
            pinned()  # the thread is done before anyone may unpin
    rel = cgroups.relative_path(cid)
    record["Cgroups"] = cgroups.dirs(rel)  # what the runtime makes: teardown, stats, top
    record["NetworkSettings"]["SandboxKey"] = sandbox or ""
    if mode.attaches:
        records.save(record)  # the pin is on record before anything attaches to it
    fault("run:netns-pinned")
    settings = mode.attach(record) or {}
    fault("run:cni-added")
    record["NetworkSettings"].update(settings)
    records.save(record)  # what setup attached, for inspect and the teardown
    hc = record["HostConfig"]
    limits = None
    if any(hc.get(k) for k in NO_LIMITS):
        from minidocker import resources
        limits = resources.oci(hc, swap_accounting=cgroups.swap_accounting())
    spec = oci.build(args=[record["Path"], *record["Args"]], env=cfg["Env"], cwd=cwd, user=user,
                     hostname=hostname, rootfs=rootfs, netns_path=sandbox, files=files,
                     annotations={"org.minidocker.id": cid, "org.minidocker.name": record["Name"]},
                     limits=limits, cgroups_path=rel).to_dict()
    spec["process"]["terminal"] = bool(cfg.get("Tty"))
    if any(hc.get(k) for k in NO_SECURITY):
        from minidocker import security
        security.apply(spec, hc)
    spec["mounts"] += user_mounts
    if hc.get("ReadonlyRootfs"):
        spec["root"]["readonly"] = True
    if cgroups.UNIFIED in record["Cgroups"] and hc.get("Runtime") != "runc" \
            and not hc.get("Privileged"):
        # No BPF device program here: without CAP_MKNOD no device node can be made.
        for key, names in spec["process"]["capabilities"].items():
            spec["process"]["capabilities"][key] = [n for n in names if n != "CAP_MKNOD"]
    state.write_json(os.path.join(d, "config.json"), spec)


class Started:
    """A started container: its record and pid; status is the shim's status
    pipe (file object) and shim_pid the shim to reap, for attached runs."""

    def __init__(self, record: dict, pid: int, status, shim_pid: int = 0):
        self.record = record
        self.pid = pid
        self.status = status
        self.shim_pid = shim_pid


def _fork_shim(cid: str, w: int) -> int:
    """The attached shim: a child of `run` in its own session, holding only
    stdio and the status pipe."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.setsid()
        os.chdir("/")
        for s in SignalRelay.SIGNALS:
            _signal.signal(s, _signal.SIG_DFL)
        os.closerange(3, w)
        os.closerange(w + 1, 65536)
        from minidocker import shim
        code = shim.supervise(cid, w, attach=True)
    except BaseException as exc:  # noqa: BLE001 - a forked child must never return
        try:
            os.write(2, f"minidocker shim: {type(exc).__name__}: {exc}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(code)


def _spawn_shim(cid: str, w: int) -> int:
    """The detached shim: `python -m minidocker.shim`, which forks the shim
    and exits (0: no child of ours to reap)."""
    import subprocess
    # -I: never import from the caller's directory (we are root)
    argv = [sys.executable, "-I", "-m", "minidocker.shim", cid, str(w)]
    # the shim's own complaints (never the container's output)
    errors = os.open(os.path.join(cdir(cid), "shim.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND
                     | os.O_CLOEXEC, 0o600)
    try:
        first = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=errors, pass_fds=(w,), cwd="/",
                                 start_new_session=True, close_fds=True)
    finally:
        os.close(errors)
    first.wait(timeout=SHIM_TIMEOUT)  # it forks the shim and exits
    return 0


def start(ref: str, attach: bool = False) -> Started:
    """Start a created or exited container under a new shim."""
    record = find(ref)
    cid = record["Id"]
    with _lock(cid):
        record = records.load(cid)
        if record is None:
            raise NotFound(f"no such container: {ref!r}")
        refresh(record)
        if record["State"].get("Running"):
            return Started(record, record["State"]["Pid"], None)
        teardown.release(record)  # whatever a crashed shim left
        record["HasBeenManuallyStopped"] = False
        mode = modes.parse(record["HostConfig"]["NetworkMode"])
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            _prepare(record, mode)
            shim_pid = _fork_shim(cid, w) if attach else _spawn_shim(cid, w)
        except BaseException as exc:
            os.close(r)
            os.close(w)
            teardown.release(record)
            if record["HostConfig"].get("AutoRemove"):
                teardown.remove_files(cid)
            else:
                record["State"].update(Status=never_started_status(record), Error=str(exc))
                records.save(record)
            if isinstance(exc, OSError):
                raise MinidockerError(f"cannot start container {cid[:12]}: {exc}", 125) from None
            raise
        os.close(w)
    status = os.fdopen(r, "r")
    line = status.readline().split(" ", 2)
    if line[0] == "started":
        record = records.load(cid) or record
        if not attach:
            status.close()
        return Started(record, int(line[1]), status, shim_pid if attach else 0)
    rest = status.read()
    status.close()
    if attach:
        os.waitpid(shim_pid, 0)
    if line[0] == "error":
        code, message = int(line[1]), line[2].strip() if len(line) > 2 else ""
    else:
        code, message = 125, "the shim failed before starting the container" + (f": {rest}" if rest else "")
    _wait_gone(cid)
    raise MinidockerError(message, code)


def _wait_gone(cid: str, timeout: float = SHIM_TIMEOUT) -> None:
    """Until the shim's teardown finished (its lock is free)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = records.load(cid)
        if record is None or not shim_alive(record):
            return
        time.sleep(0.01)


class SignalRelay:
    """Foreground `run`: SIGINT/SIGTERM/SIGHUP go to the container. Installed
    before the container starts; a signal that comes before its pid is known
    is delivered as soon as it is."""

    SIGNALS = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)

    def __init__(self):
        self.pid = 0
        self.pending: list[int] = []
        self.old = {s: _signal.signal(s, self._handle) for s in self.SIGNALS}

    def _handle(self, signum, _frame):
        if not self.pid:
            self.pending.append(signum)
            return
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def attach(self, pid: int) -> None:
        self.pid = pid
        while self.pending:
            self._handle(self.pending.pop(0), None)

    def restore(self) -> None:
        for s, h in self.old.items():
            _signal.signal(s, h)


def wait_attached(started: Started, relay: SignalRelay) -> int:
    """Foreground `run`: wait until the shim reports the exit code and
    finishes its teardown (the status pipe closes)."""
    relay.attach(started.pid)
    code = None
    restarting = False
    try:
        with started.status as fh:
            for line in fh:
                parts = line.split()
                if parts and parts[0] == "exit":
                    code = int(parts[1])
                    restarting = parts[2:] == ["restarting"]
    finally:
        relay.restore()
    if started.shim_pid and not restarting:  # a restarting shim lives on without us
        os.waitpid(started.shim_pid, 0)
    if code is None:
        record = records.load(started.record["Id"])
        code = record["State"]["ExitCode"] if record else 125
    return code


# --- stop, rm ----------------------------------------------------------------------

def _wait_shim(record: dict, timeout: float) -> bool:
    """True once the shim (and so its teardown) is gone."""
    pid = record.get("ShimPid") or 0
    if not shim_alive(record):
        return True
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if not shim_alive(record):
            return True
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def signal_container(record: dict, sig: int) -> None:
    pid = record["State"].get("Pid") or 0
    if pid > 0 and shim_alive(record):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        if record["State"].get("Paused"):  # a frozen process takes its signal once thawed
            thaw(record)


def set_paused(record: dict, paused: bool) -> None:
    with _lock(record["Id"]):
        current = records.load(record["Id"])
        current["State"].update(Paused=paused, Status="paused" if paused else "running")
        records.save(current)


def thaw(record: dict) -> None:
    """Unfreeze the container's processes (the freezer cgroup)."""
    cgroups.freeze(record.get("Cgroups") or {}, False)
    set_paused(record, False)


def _stop_signal(value) -> int:
    """The image's StopSignal: "SIGQUIT", "QUIT" or "3"; SIGTERM by default."""
    text = str(value or "SIGTERM").upper()
    if text.isdigit():
        return int(text)
    import signal
    name = text if text.startswith("SIG") else "SIG" + text
    return int(signal.Signals.__members__.get(name, signal.SIGTERM))


def mark_stopped(cid: str) -> None:
    """A stop by the user: the restart policy leaves the container be (the
    shim reads this when the process exits); start clears it."""
    with _lock(cid):
        record = records.load(cid)
        if record is not None:
            record["HasBeenManuallyStopped"] = True
            records.save(record)


def stop(ref: str, timeout: float | None = None) -> dict:
    """The stop signal (SIGTERM), then SIGKILL after timeout seconds (the
    container's --stop-timeout, else 10), as `docker stop`."""
    record = find(ref)
    if timeout is None:
        timeout = record["Config"].get("StopTimeout")
        timeout = 10 if timeout is None else timeout
    if record["State"].get("Running"):
        mark_stopped(record["Id"])
        if timeout < 0:  # Docker: -1 waits for ever
            timeout = 10**9
        sig = _stop_signal(record["Config"].get("StopSignal"))
        events.append("kill", record, signal=sig)
        signal_container(record, sig)
        if not _wait_shim(record, max(timeout, 0)):
            events.append("kill", record, signal=_signal.SIGKILL)
            signal_container(record, _signal.SIGKILL)
            if not _wait_shim(record, SHIM_TIMEOUT):
                raise MinidockerError(f"container {record['Id'][:12]} did not stop")
        events.append("stop", record)
    return record


def remove(ref: str, force: bool = False, volumes: bool = False) -> dict:
    record = find(ref)
    cid = record["Id"]
    if record["State"].get("Running"):
        if not force:
            raise Conflict(f"cannot remove container {record['Name'].lstrip('/')} "
                           f"({cid[:12]}): it is running; stop it first or use rm -f")
        mark_stopped(cid)
        signal_container(record, _signal.SIGKILL)
        if not _wait_shim(record, SHIM_TIMEOUT):
            raise MinidockerError(f"container {cid[:12]} did not stop")
    teardown.run(cid, auto_remove=False)
    with _lock(cid):
        teardown.remove_files(cid)
    if volumes and record.get("Mounts"):
        from minidocker import volumes as store
        store.remove_anonymous(record)
    events.append("destroy", record)
    return record


# --- exec --------------------------------------------------------------------------

def exec_(ref: str, args: list[str], interactive: bool = False, tty: bool = False) -> int:
    from minidocker.runtime import builtin
    record = find(ref)
    if not record["State"].get("Running"):
        raise MinidockerError(f"container {record['Name'].lstrip('/')} ({record['Id'][:12]}) "
                              "is not running")
    if tty and interactive and not os.isatty(0):
        raise MinidockerError("the input device is not a TTY: -t with -i needs a terminal "
                              "on stdin (drop -t, or run from a terminal)")
    spec = state.read_json(os.path.join(cdir(record["Id"]), "config.json"))
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    ours = theirs = None
    try:
        stdio = (0 if interactive else devnull, 1, 2)
        proc = spec["process"]
        env = proc["env"]
        if tty:
            import socket
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            stdio = (devnull, devnull, devnull)
            if not any(e.startswith("TERM=") for e in env):
                env = [*env, "TERM=xterm"]
        pid = builtin.exec_in(spec, record["State"]["Pid"], args, env,
                              proc.get("cwd") or "/", stdio,
                              console=theirs.fileno() if theirs else None)
    except builtin.StartError as exc:
        raise MinidockerError(exc.message, exc.code) from None
    except OSError as exc:
        raise MinidockerError(f"cannot exec in container {record['Id'][:12]}: {exc}", 126) from None
    finally:
        os.close(devnull)
        if theirs:
            theirs.close()

    shimwait.forward_signals(pid)
    if ours:
        from minidocker import terminal
        with ours:
            master = terminal.recv_fd(ours)
        try:
            with terminal.RawMode(0 if interactive else -1):
                terminal.relay_pty(master, pid, stdin=interactive)
        finally:
            os.close(master)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
