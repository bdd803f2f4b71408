"""Running one plugin: lookup along CNI_PATH, environment, exec, timeout, errors.

This is libcni's pkg/invoke: the plugin is executed with the request config on
stdin and the CNI_* variables on top of our own environment; a non-zero exit
is answered with the JSON error on stdout, or with the stderr text when stdout
is empty (R11). Plugins are started in their own session so that a timeout can
kill the whole process group, children included (R15).
"""
from __future__ import annotations

import errno
import os
import select
import time

from cni import fastjson as json   # json's C core without `re` (a bridge `run` decodes here)
from cni import version as _v
from cni.env import format_cni_args
from cni.errors import CNIError, DECODE_FAILURE, INVALID_NETWORK_CONFIG, TRY_AGAIN_LATER
from cni.record import Record
from cni.skel import INTERNAL


# "text file busy": the binary is being written; libcni retries (R13).
BUSY_RETRIES = 5
BUSY_DELAY = 0.2
# After SIGKILL of the group, how long to wait for the pipes to close.
REAP_TIMEOUT = 2.0
UNKNOWN_VERSION_COMMAND = "unknown CNI_COMMAND: VERSION"


class PluginError(CNIError):
    """A plugin's failure: its CNI error (code, msg, details), the plugin type
    and command, so that a message to a user names the plugin."""

    def __init__(self, code: int, msg: str, details: str = "", *, plugin: str = "",
                 command: str = "", exit_code: int | None = None, timed_out: bool = False,
                 stderr: str = ""):
        super().__init__(code, msg, details)
        self.plugin = plugin
        self.command = command
        self.exit_code = exit_code
        self.timed_out = timed_out
        self.stderr = stderr

    @property
    def try_again(self) -> bool:
        """Code 11: the plugin asks to be called again later (R11)."""
        return self.code == TRY_AGAIN_LATER

    def __str__(self) -> str:
        text = super().__str__()
        if self.plugin:
            return f"plugin type={self.plugin!r} failed ({self.command.lower()}): {text}"
        return text


class PluginNotFound(CNIError):
    def __init__(self, ptype: str, path: list[str]):
        super().__init__(INVALID_NETWORK_CONFIG, f"failed to find plugin {ptype!r} in path {path}")
        self.plugin = ptype


def find_plugin(ptype: str, path: list[str]) -> str:
    """The first regular file named `ptype` along `path` (libcni's FindInPath).
    A type with a path separator is refused here too, whoever built the
    config: os.path.join would otherwise run `/bin/sh` or `../x` as a plugin."""
    from cni.conf import validate_type
    validate_type(ptype)
    if not path:
        raise CNIError(INVALID_NETWORK_CONFIG, f"no paths provided to find plugin {ptype!r}",
                       "set CNI_PATH")
    for d in path:
        candidate = os.path.join(d, ptype)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if (st.st_mode & 0o170000) == 0o100000:
            return candidate
    raise PluginNotFound(ptype, list(path))


class Call(Record):
    """One plugin invocation, reported to observers (e.g. `--log-level debug`)."""
    command: str
    plugin: str
    path: str
    duration: float = 0.0
    exit_code: int | None = None
    timed_out: bool = False


# What a plugin gets of the caller's environment besides its CNI_* variables:
# PATH (to find its tools) and where minidocker's own plugin keeps its locks.
# Nothing else: a secret in the caller's environment stays there. An operator
# whose plugin needs more (a proxy, say) names it in MINIDOCKER_CNI_PASSENV
# (comma-separated).
PASS_ENV = ("PATH", "MINIDOCKER_RUN")
PASS_ENV_VAR = "MINIDOCKER_CNI_PASSENV"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def passed_env(base=None) -> dict[str, str]:
    """The part of base (our environment) that plugins see."""
    base = os.environ if base is None else base
    names = set(PASS_ENV) | {n.strip() for n in base.get(PASS_ENV_VAR, "").split(",") if n.strip()}
    env = {k: base[k] for k in names if k in base and not k.startswith("CNI_")}
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def plugin_env(command: str, *, container_id: str = "", netns: str = "", ifname: str = "",
               args=(), path: list[str] = (), base=None) -> dict[str, str]:
    """PATH and the call's CNI_* variables, not the caller's whole environment
    (passed_env); R3: only the variables a command needs are set."""
    env = passed_env(base)
    env["CNI_COMMAND"] = command
    env["CNI_PATH"] = ":".join(path)
    if command in ("ADD", "CHECK", "DEL"):
        env["CNI_CONTAINERID"] = container_id
        env["CNI_IFNAME"] = ifname
        if netns:
            env["CNI_NETNS"] = netns
        if args:
            env["CNI_ARGS"] = format_cni_args(args)
    return env


class Runner(Record):
    """Executes plugins; `observers` get a `Call` after each one."""
    FACTORIES = {"observers": list}
    observers: list

    def locate(self, ptype: str, path: list[str]) -> str:
        """Where the plugin `ptype` is: the first along `path`. A runner that
        serves some types itself (in process) answers for them without it."""
        return find_plugin(ptype, path)

    def exec(self, plugin_path: str, command: str, stdin: bytes, env: dict[str, str],
             timeout: float | None, plugin: str = "", limit: float | None = None) -> bytes:
        """Run the plugin; its stdout on success, else a PluginError. `timeout`
        is what is left of the operation's `limit` (for the message)."""
        plugin = plugin or os.path.basename(plugin_path)
        if timeout is not None and timeout <= 0:
            raise PluginError(INTERNAL, "operation timed out before the plugin could run",
                              plugin=plugin, command=command, timed_out=True)
        call = Call(command, plugin, plugin_path)
        start = time.perf_counter()
        try:
            proc = self._spawn(plugin_path, env, plugin, command)
            out, err, timed_out = exchange(proc, stdin, timeout)
            call.exit_code = proc.returncode
            call.timed_out = timed_out
        finally:
            call.duration = time.perf_counter() - start
            for observer in self.observers:
                observer(call)
        if timed_out:
            raise PluginError(INTERNAL, f"timed out after {limit or timeout:g}s; plugin process group killed",
                              plugin=plugin, command=command, exit_code=proc.returncode,
                              timed_out=True, stderr=_text(err))
        if proc.returncode != 0:
            raise plugin_failure(out, err, proc.returncode, plugin, command)
        return out

    @staticmethod
    def _spawn(plugin_path, env, plugin, command) -> "subprocess.Popen":
        import subprocess   # not at import: cni-bridge runs in-process on `run`'s path
        for attempt in range(BUSY_RETRIES + 1):
            try:
                return subprocess.Popen([plugin_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=env, close_fds=True,
                                        start_new_session=True)
            except OSError as exc:
                if exc.errno == errno.ETXTBSY and attempt < BUSY_RETRIES:
                    time.sleep(BUSY_DELAY * (attempt + 1))
                    continue
                raise PluginError(INTERNAL, f"cannot execute {plugin_path}: {exc.strerror}",
                                  plugin=plugin, command=command) from None
        raise AssertionError("unreachable")


def exchange(proc: "subprocess.Popen", data: bytes, timeout: float | None) -> tuple[bytes, bytes, bool]:
    """Write stdin, read stdout and stderr until EOF and the process has exited.

    Popen.communicate(timeout=...) ends with a wait() that polls with sleeps
    (up to ~1 ms lost per call); a pidfd in the same poll set tells us the
    moment the plugin exits. At the deadline the plugin's process group is
    killed and what it printed so far is returned with timed_out=True.
    (long: one poll loop over stdin, stdout, stderr and the pidfd with the
    deadline's kill; split, its state would travel between the parts.)
    """
    import signal       # (with subprocess: the exec path only)
    import subprocess
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):    # kernel < 5.3: communicate's way
        try:
            out, err = proc.communicate(data, timeout=timeout)
            return out, err, False
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = proc.communicate()
            return out, err, True
    deadline = None if timeout is None else time.monotonic() + timeout
    poller = select.poll()
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    fds: dict[int, list] = {out_fd: [], err_fd: []}
    stdin_fd = proc.stdin.fileno()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    view, off = memoryview(data), 0
    if data:
        poller.register(stdin_fd, select.POLLOUT)
    else:
        proc.stdin.close()
    open_fds = set(fds) | {pidfd} | ({stdin_fd} if data else set())
    timed_out = killed = False
    try:
        while open_fds:
            wait_ms = None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    if killed:          # a child left the group and holds our pipes
                        break
                    timed_out = killed = True
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    deadline = time.monotonic() + REAP_TIMEOUT
                    continue
                wait_ms = max(1, int(left * 1000) + 1)
            for fd, event in poller.poll(wait_ms):
                if fd == stdin_fd:
                    try:
                        off += os.write(fd, view[off:off + 4096])
                    except BrokenPipeError:
                        off = len(view)     # the plugin does not read stdin: fine
                    if off >= len(view):
                        poller.unregister(fd)
                        open_fds.discard(fd)
                        proc.stdin.close()
                elif fd == pidfd:
                    poller.unregister(fd)
                    open_fds.discard(fd)
                else:
                    chunk = os.read(fd, 65536)
                    if chunk:
                        fds[fd].append(chunk)
                    else:
                        poller.unregister(fd)
                        open_fds.discard(fd)
    finally:
        os.close(pidfd)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if not f.closed:
                f.close()
    proc.wait()
    return b"".join(fds[out_fd]), b"".join(fds[err_fd]), timed_out


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").strip()


def _status(returncode: int) -> str:
    if returncode < 0:
        import signal
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def plugin_failure(stdout: bytes, stderr: bytes, returncode: int, plugin: str, command: str) -> PluginError:
    """R11: the JSON error on stdout; else the stderr text; else the exit status."""
    kw = dict(plugin=plugin, command=command, exit_code=returncode, stderr=_text(stderr))
    if not stdout.strip():
        if stderr.strip():
            return PluginError(INTERNAL, f"netplugin failed: {_text(stderr)!r}: {_status(returncode)}", **kw)
        return PluginError(INTERNAL, f"netplugin failed with no error message: {_status(returncode)}", **kw)
    try:
        obj = json.loads(stdout)
        err = CNIError.from_dict(obj)
    except ValueError:
        return PluginError(DECODE_FAILURE, "netplugin failed but error parsing its diagnostic message "
                           f"{_text(stdout)[:200]!r}", _status(returncode), **kw)
    return PluginError(err.code, err.msg, err.details, **kw)


def parse_result(stdout: bytes, conf_version: str, plugin: str, command: str = "ADD"):
    """A plugin's ADD output as a Result; a missing cniVersion is the config's
    (libcni's fixupResultVersion, R12)."""
    from cni.types import Result
    try:
        obj = json.loads(stdout)
    except ValueError:
        raise PluginError(DECODE_FAILURE, "plugin printed an invalid result",
                          repr(_text(stdout)[:200]) if stdout.strip() else "nothing on stdout",
                          plugin=plugin, command=command, exit_code=0) from None
    if not isinstance(obj, dict):
        raise PluginError(DECODE_FAILURE, "plugin printed an invalid result", repr(obj)[:200],
                          plugin=plugin, command=command, exit_code=0)
    try:
        return Result.from_dict(obj, conf_version)
    except CNIError as err:
        raise PluginError(err.code, err.msg, err.details, plugin=plugin, command=command,
                          exit_code=0) from None


class VersionProber(Record):
    """VERSION answers cached per binary (path, mtime, size): probing is an
    exec, so it happens once per binary, not once per call (R14)."""
    FACTORIES = {"_cache": dict}
    runner: Runner
    _cache: dict

    def supported(self, plugin_path: str, timeout: float | None = 10.0) -> list[str]:
        try:
            st = os.stat(plugin_path)
            key = (plugin_path, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:   # served in process: its code cannot change under us
            key = (plugin_path,)
        if key not in self._cache:
            self._cache[key] = self._probe(plugin_path, timeout)
        return list(self._cache[key])

    def _probe(self, plugin_path: str, timeout: float | None) -> list[str]:
        env = passed_env()
        # Dummy values for plugins built against an old skel that wants them.
        env.update(CNI_COMMAND="VERSION", CNI_NETNS="dummy", CNI_IFNAME="dummy", CNI_PATH="dummy")
        stdin = json.dumps({"cniVersion": _v.CURRENT}).encode()
        plugin = os.path.basename(plugin_path)
        try:
            out = self.runner.exec(plugin_path, "VERSION", stdin, env, timeout, plugin)
        except PluginError as err:
            if str(CNIError.__str__(err)) == UNKNOWN_VERSION_COMMAND or err.stderr == UNKNOWN_VERSION_COMMAND:
                return ["0.1.0"]
            raise
        try:
            obj = json.loads(out)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            versions = obj.get("supportedVersions")
            if isinstance(versions, list) and versions and all(isinstance(v, str) for v in versions):
                return versions
            if versions is None and isinstance(obj.get("cniVersion"), str):
                # A 0.2.0 plugin answers with its own version only.
                return ["0.1.0", "0.2.0"] if obj["cniVersion"] == "0.2.0" else [obj["cniVersion"]]
        raise PluginError(DECODE_FAILURE, "invalid VERSION answer", repr(_text(out)[:200]),
                          plugin=plugin, command="VERSION", exit_code=0)
