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

import os
import re
import select
import signal
import sys
import time

from minidocker import clock, etcfiles, fsutil, images, paths, records, state, syscalls as sc, teardown
from minidocker.errors import Conflict, MinidockerError, NotFound
from minidocker.faults import fault
from minidocker.network import modes, netns
from minidocker.runtime import oci

RUNTIMES = ("builtin", "runc")
# Patterns as strings: re compiles (and caches) them only when an option uses them.
_NAME_RE = r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+\Z"  # \Z: `$` allows a trailing newline
_ENV_KEY_RE = r"^[^=\s\x00]+\Z"
SHIM_TIMEOUT = 30


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
        if not re.match(_ENV_KEY_RE, key):
            raise MinidockerError(f"invalid environment variable {item!r} in {source}: "
                                  "expected KEY=VALUE (or KEY to copy it from this shell)", 125)
        if eq:
            out.append(f"{key}={value}")
        elif key in os.environ:
            out.append(f"{key}={os.environ[key]}")
    return out


def parse_labels(items: list[str]) -> dict[str, str]:
    """--label KEY=VALUE (a bare KEY: an empty value), as Docker."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key or key != key.strip():
            raise MinidockerError(f"invalid label {item!r}: expected KEY=VALUE (or KEY) with a "
                                  "non-empty key", 125)
        out[key] = value
    return out


def read_env_file(path: str) -> list[str]:
    try:
        with open(path) as fh:
            lines = [l.strip() for l in fh]
    except OSError as exc:
        raise MinidockerError(f"cannot read env file {path!r}: {exc.strerror}", 125) from None
    except UnicodeDecodeError as exc:
        raise MinidockerError(f"cannot read env file {path!r}: not UTF-8 text "
                              f"(byte {exc.start})", 125) from None
    return parse_env([l for l in lines if l and not l.startswith("#")], source=path)


def merge_env(base: list[str], extra: list[str]) -> list[str]:
    env: dict[str, str] = {}
    for item in list(base) + list(extra):
        key, _, value = item.partition("=")
        env[key] = value
    if "PATH" not in env:
        env = {"PATH": images.DEFAULT_PATH.split("=", 1)[1], **env}
    return [f"{k}={v}" for k, v in env.items()]


def _random_name(taken: set[str]) -> str:
    adjectives = ["brave", "calm", "eager", "fond", "keen", "lucid", "merry", "quiet",
                  "sharp", "tender", "vivid", "witty", "bold", "clever", "jolly", "nifty"]
    people = ["hopper", "lovelace", "turing", "ritchie", "thompson", "torvalds", "knuth",
              "liskov", "dijkstra", "hamilton", "noether", "curie", "shannon", "wirth"]
    while True:
        a, b, c = os.urandom(3)
        name = f"/{adjectives[a % len(adjectives)]}_{people[b % len(people)]}"
        if name in taken:
            name += f"{c % 100}"
        if name not in taken:
            return name


def create(opts: CreateOptions) -> dict:
    """Validate everything, then write the record (status `created`).
    (long: every check of `run`'s options comes before anything is written,
    then the record in Docker's inspect shape, read top to bottom as
    `inspect` prints it.)"""
    if opts.runtime not in RUNTIMES:
        raise MinidockerError(f"unknown runtime {opts.runtime!r}: accepted are "
                              f"{', '.join(RUNTIMES)}", 125)
    if opts.name is not None and not re.match(_NAME_RE, opts.name):
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
    if opts.hostname is not None and not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,62})", opts.hostname):
        raise MinidockerError(f"invalid hostname {opts.hostname!r}: letters, digits, '.' "
                              "and '-', at most 63 characters", 125)
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
        "LogPath": str(cdir(cid) / "container.log"),
        "ResolvConfPath": str(cdir(cid) / "resolv.conf"),
        "HostnamePath": str(cdir(cid) / "hostname"),
        "HostsPath": str(cdir(cid) / "hosts"),
        "Config": {
            "Hostname": opts.hostname or cid[:12],
            "User": icfg.get("User", ""),
            "Env": merge_env(icfg.get("Env") or [], env),
            "Cmd": cmd or None,
            "Entrypoint": entrypoint or None,
            "WorkingDir": opts.workdir if opts.workdir is not None else icfg.get("WorkingDir", ""),
            "Image": opts.image,
            "ExposedPorts": icfg.get("ExposedPorts") or {},
            "OpenStdin": opts.interactive,
            "Labels": {**(icfg.get("Labels") or {}), **parse_labels(opts.labels)},
        },
        "HostConfig": {"NetworkMode": opts.network, "PortBindings": netcfg["PortBindings"],
                       "PublishAllPorts": opts.publish_all, "Dns": netcfg["Dns"],
                       "ExtraHosts": netcfg["ExtraHosts"],
                       "AutoRemove": opts.auto_remove, "Runtime": opts.runtime},
        "NetworkingConfig": {"EndpointsConfig": netcfg["EndpointsConfig"]},
        "NetworkSettings": {"SandboxKey": "", "Ports": {}, "Networks": {}},
        "ShimPid": 0,
    }
    mode.check(record)  # host ports free, addresses usable: before anything is written
    with records.names_lock():
        taken = {r["Name"]: r["Id"] for r in all_records()}
        if opts.name:
            name = "/" + opts.name.lstrip("/")
            if name in taken:
                raise Conflict(f"the container name {name!r} is already in use by container "
                               f"{taken[name][:12]}: remove it or pick another --name", 125)
        else:
            name = _random_name(set(taken))
        record["Name"] = name
        state.ensure_dir(cdir(cid) / "work")
        for sub in ("upper", "rootfs"):  # the overlay's root takes the upper dir's mode
            state.ensure_dir(cdir(cid) / sub, mode=0o755)
        records.save(record)
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
    """Everything before the process: rootfs, files, namespace, network, spec."""
    cid = record["Id"]
    d = cdir(cid)
    sandbox = mode.sandbox(record)  # container:<id> enters that one's namespace
    # the namespace is made while the rootfs is mounted (the kernel work overlaps)
    pinned = netns.start_pin(sandbox) if mode.pins else None
    try:
        image = images.lookup(record["Image"])
        rootfs = str(d / "rootfs")
        options = f"lowerdir={images.rootfs(image)},upperdir={d / 'upper'},workdir={d / 'work'}"
        if record["HostConfig"].get("AutoRemove"):
            # --rm: the upper layer is deleted at exit, so it need not survive a
            # crash either; `volatile` spares the sync at unmount (~2 ms a run).
            options += ",volatile"
        sc.mount("overlay", rootfs, "overlay", 0, options)
        cfg = record["Config"]
        user = oci.resolve_user(rootfs, cfg.get("User", ""))
        cwd = cfg.get("WorkingDir") or "/"
        fsutil.mkdir_in_root(rootfs, cwd)
        if mode.own_namespace:
            hostname = cfg["Hostname"]
        else:
            hostname = cfg["Hostname"] if cfg["Hostname"] != cid[:12] else os.uname().nodename
        files = etcfiles.write(record, host_mode=not mode.own_namespace)
    finally:
        if pinned:
            pinned()  # the thread is done before anyone may unpin
    record["NetworkSettings"]["SandboxKey"] = sandbox or ""
    records.save(record)  # the pin is on record before anything attaches to it
    fault("run:netns-pinned")
    settings = mode.attach(record) or {}
    fault("run:cni-added")
    record["NetworkSettings"].update(settings)
    records.save(record)  # what setup attached, for inspect and the teardown
    spec = oci.build(args=[record["Path"], *record["Args"]], env=cfg["Env"], cwd=cwd, user=user,
                     hostname=hostname, rootfs=rootfs, netns_path=sandbox, files=files,
                     annotations={"org.minidocker.id": cid, "org.minidocker.name": record["Name"]})
    state.write_json(d / "config.json", spec.to_dict())


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
            signal.signal(s, signal.SIG_DFL)
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
    errors = os.open(cdir(cid) / "shim.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND
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

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.pid = 0
        self.pending: list[int] = []
        self.old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

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
            signal.signal(s, h)


def wait_attached(started: Started, relay: SignalRelay) -> int:
    """Foreground `run`: wait until the shim reports the exit code and
    finishes its teardown (the status pipe closes)."""
    relay.attach(started.pid)
    code = None
    try:
        with started.status as fh:
            for line in fh:
                parts = line.split()
                if parts and parts[0] == "exit":
                    code = int(parts[1])
    finally:
        relay.restore()
    if started.shim_pid:
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


def _signal(record: dict, sig: int) -> None:
    pid = record["State"].get("Pid") or 0
    if pid > 0 and shim_alive(record):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _stop_signal(value) -> int:
    """The image's StopSignal: "SIGQUIT", "QUIT" or "3"; SIGTERM by default."""
    text = str(value or "SIGTERM").upper()
    if text.isdigit():
        return int(text)
    name = text if text.startswith("SIG") else "SIG" + text
    return int(signal.Signals.__members__.get(name, signal.SIGTERM))


def stop(ref: str, timeout: float = 10) -> dict:
    """SIGTERM, then SIGKILL after timeout seconds, as `docker stop`."""
    record = find(ref)
    if record["State"].get("Running"):
        sig = _stop_signal(record["Config"].get("StopSignal"))
        _signal(record, sig)
        if not _wait_shim(record, max(timeout, 0)):
            _signal(record, signal.SIGKILL)
            if not _wait_shim(record, SHIM_TIMEOUT):
                raise MinidockerError(f"container {record['Id'][:12]} did not stop")
    return record


def remove(ref: str, force: bool = False) -> dict:
    record = find(ref)
    cid = record["Id"]
    if record["State"].get("Running"):
        if not force:
            raise Conflict(f"cannot remove container {record['Name'].lstrip('/')} "
                           f"({cid[:12]}): it is running; stop it first or use rm -f")
        _signal(record, signal.SIGKILL)
        if not _wait_shim(record, SHIM_TIMEOUT):
            raise MinidockerError(f"container {cid[:12]} did not stop")
    teardown.run(cid, auto_remove=False)
    with _lock(cid):
        teardown.remove_files(cid)
    return record


# --- exec --------------------------------------------------------------------------

def exec_(ref: str, args: list[str], interactive: bool = False) -> int:
    from minidocker.runtime import builtin
    record = find(ref)
    if not record["State"].get("Running"):
        raise MinidockerError(f"container {record['Name'].lstrip('/')} ({record['Id'][:12]}) "
                              "is not running")
    spec = state.read_json(cdir(record["Id"]) / "config.json")
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        stdio = (0 if interactive else devnull, 1, 2)
        proc = spec["process"]
        pid = builtin.exec_in(spec, record["State"]["Pid"], args, proc["env"],
                              proc.get("cwd") or "/", stdio)
    except builtin.StartError as exc:
        raise MinidockerError(exc.message, exc.code) from None
    except OSError as exc:
        raise MinidockerError(f"cannot exec in container {record['Id'][:12]}: {exc}", 126) from None
    finally:
        os.close(devnull)

    sc.forward_signals(pid)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
