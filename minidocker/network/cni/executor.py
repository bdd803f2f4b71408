"""The lifecycle of a network list: ADD, CHECK, DEL, GC, STATUS (libcni's api.go).

    ex = CNIExecutor(cache_dir=..., path=[...])
    result = ex.add(net, RuntimeConf("c1", "/run/netns/c1", "eth0"))
    ex.delete(net, RuntimeConf("c1", "/run/netns/c1", "eth0"))

Every operation on one container holds that container's lock and a shared
global lock; GC holds the global lock exclusively, so it never races an ADD
(R6). Each operation has one deadline; a plugin still running at the deadline
is killed with its process group, and an ADD that failed or timed out is
followed by a DEL (R15, R6).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from cni import version as _v
from cni.conf import NetworkConfigList
from cni.env import validate_container_id, validate_ifname, validate_network_name
from cni.errors import (CNIError, INCOMPATIBLE_VERSION, INVALID_ENVIRONMENT, IO_FAILURE,
                        UNKNOWN_CONTAINER)
from cni.record import Record
from cni.types import Result
from minidocker import paths
from minidocker.network.cni import config as _config
from minidocker.network.cni.cache import CacheEntry, CacheError, ResultCache
from minidocker.network.cni.invoke import (Call, Runner, VersionProber,
                                           parse_result, plugin_env)



def _log():
    """The executor's logger; `logging` is imported when there is something
    to log (it costs ~3 ms of `run`, which has nothing to log)."""
    import logging
    return logging.getLogger("minidocker.cni")

DEFAULT_TIMEOUT = 60.0
VALID_ATTACHMENTS_KEYS = ("cni.dev/valid-attachments", "cni.dev/attachments")
LOCK_BUCKETS = 256   # per-container lock files are hashed into this many


class RuntimeConf(Record):
    """The per-attachment arguments (libcni's RuntimeConf)."""
    FACTORIES = {"args": list, "capability_args": dict}
    container_id: str
    netns: str = ""
    ifname: str = "eth0"
    args: list[tuple[str, str]]
    capability_args: dict


class MultiError(CNIError):
    """Several errors (GC keeps going past failures and returns them all)."""

    def __init__(self, errors: list[CNIError]):
        super().__init__(errors[0].code, "; ".join(str(e) for e in errors))
        self.errors = errors

    def __str__(self) -> str:
        return self.msg


def log_call(call: Call) -> None:
    # debug lines exist only where someone configured logging (--log-level), so imported it
    if "logging" in sys.modules and _log().isEnabledFor(sys.modules["logging"].DEBUG):
        status = "timed out" if call.timed_out else f"exit {call.exit_code}"
        _log().debug("cni: %s type=%s %.1f ms %s (%s)", call.command, call.plugin,
                  call.duration * 1000.0, status, call.path)


class CNIExecutor:
    """Runs network lists through their plugins, with libcni's cache and rules."""

    def __init__(self, conf_dir=None, cache_dir=None, path=None, *, timeout: float = DEFAULT_TIMEOUT,
                 lock_dir=None, runner: Runner | None = None, preferred=None):
        self.conf_dir = Path(conf_dir) if conf_dir else Path(paths.cni_conf_dir())
        self.cache_dir = Path(cache_dir) if cache_dir else Path(paths.cni_cache_dir())
        self.path = list(path) if path else paths.cni_path()
        #: plugin type -> directories searched before `path`: a runtime's own
        #: plugins are always found (as podman's helper_binaries_dir).
        self.preferred = {k: list(v) for k, v in (preferred or {}).items()}
        self.timeout = timeout
        self.lock_dir = Path(lock_dir) if lock_dir else self.cache_dir / "locks"
        self.cache = ResultCache(self.cache_dir)
        self.runner = runner or Runner([log_call])
        self.prober = VersionProber(self.runner)
        self._lock_dir_made = False
        self._conf_key = None
        self._conf_loaded = None

    def network(self, name: str) -> NetworkConfigList:
        """A network of `conf_dir`; the directory is re-read only when a file
        in it changed (so callers may ask per container without a cost)."""
        files = _config.config_files(self.conf_dir)
        key = [str(self.conf_dir)]
        for f in files:
            try:
                st = f.stat()
            except OSError:
                continue
            key.append((f.name, st.st_mtime_ns, st.st_size, st.st_ino))
        key = tuple(key)
        if key != self._conf_key:
            self._conf_loaded = _config.load_dir(self.conf_dir, warn=False)
            self._conf_key = key
        return self._conf_loaded.get(name)

    # --- public API ---------------------------------------------------------
    def add(self, net: NetworkConfigList, rt: RuntimeConf) -> Result:
        """R5: plugins in order, stop at the first error, cache the result. A
        failed ADD is undone with a DEL before the error is raised."""
        self._validate(net, rt, need_netns=True)
        with self._locked(rt.container_id):
            deadline = self._deadline()
            try:
                result = self._add(net, rt, deadline)
            except CNIError as err:
                self._undo_add(net, rt, err)
                raise
            return result

    def check(self, net: NetworkConfigList, rt: RuntimeConf) -> None:
        """R8: only for configs >= 0.4.0, only between ADD and DEL, never with
        disableCheck; the cached result is prevResult."""
        if not _v.at_least(net.cni_version, "0.4.0"):
            raise CNIError(INCOMPATIBLE_VERSION, f"configuration version {net.cni_version!r} "
                           "does not support the CHECK command", "CHECK needs cniVersion 0.4.0 or later")
        if net.disable_check:
            return
        self._validate(net, rt, need_netns=True)
        with self._locked(rt.container_id):
            deadline = self._deadline()
            try:
                entry = self.cache.read(net.name, rt.container_id, rt.ifname)
            except CacheError as exc:
                raise CNIError(UNKNOWN_CONTAINER, f"cached result of network {net.name!r} for "
                               f"{rt.container_id}/{rt.ifname} is unreadable", str(exc)) from None
            if entry is None or entry.result is None:
                raise CNIError(UNKNOWN_CONTAINER, f"network {net.name!r} has no attachment "
                               f"{rt.container_id}/{rt.ifname}", "CHECK runs only between ADD and DEL")
            prev = Result.from_dict(entry.result, net.cni_version).to_dict(net.cni_version)
            caps = rt.capability_args or entry.capability_args
            args = rt.args or entry.cni_args
            for i, plugin in enumerate(net.plugins):
                req = net.plugin_request(i, runtime_config=self.runtime_config(plugin, caps),
                                         prev_result=prev)
                self._call("CHECK", plugin["type"], req, deadline, container_id=rt.container_id,
                           netns=rt.netns, ifname=rt.ifname, args=args)

    def delete(self, net: NetworkConfigList, rt: RuntimeConf) -> None:
        """R7: plugins in reverse, the cached result as prevResult and the
        cached capability args; the cache entry goes on success."""
        validate_container_id(rt.container_id)
        validate_ifname(rt.ifname)
        with self._locked(rt.container_id):
            self._delete(net, rt, self._deadline())

    def gc(self, net: NetworkConfigList, valid=None) -> None:
        """R9: DEL every cached attachment of `net` not in `valid` (pairs of
        (container id, ifname)), then GC on each plugin (>= 1.1.0). Errors are
        gathered and raised together as a MultiError. `valid` may be a
        function, called once the GC lock is held: attachments ADDed while GC
        waited for it are then counted (a runtime's `prune` racing `run`)."""
        if net.disable_gc:
            return
        errors: list[CNIError] = []
        with self._global_lock(fcntl.LOCK_EX):
            pairs = [_pair(v) for v in ((valid() if callable(valid) else valid) or [])]
            keep = set(pairs)
            for entry in self.cache.attachments(network=net.name):
                if (entry.container_id, entry.ifname) in keep:
                    continue
                rt = RuntimeConf(entry.container_id, entry.netns, entry.ifname,
                                 list(entry.cni_args), dict(entry.capability_args))
                try:
                    self._delete(net, rt, self._deadline())
                except CNIError as err:
                    errors.append(CNIError(err.code, f"failed to delete stale attachment "
                                           f"{rt.container_id} {rt.ifname}: {err}"))
            if _v.at_least(net.cni_version, "1.1.0"):
                listed = [{"containerID": c, "ifname": i} for c, i in pairs]
                extra = {key: listed for key in VALID_ATTACHMENTS_KEYS}
                deadline = self._deadline()
                for i, plugin in enumerate(net.plugins):
                    req = net.plugin_request(i, extra=extra)
                    try:
                        self._call("GC", plugin["type"], req, deadline)
                    except CNIError as err:
                        errors.append(err)
        if errors:
            raise MultiError(errors)

    def status(self, net: NetworkConfigList) -> bool:
        """R10: STATUS on each plugin (configs >= 1.1.0), stop at the first
        error. False when the config's version has no STATUS to ask."""
        if not _v.at_least(net.cni_version, "1.1.0"):
            return False
        deadline = self._deadline()
        for i, plugin in enumerate(net.plugins):
            self._call("STATUS", plugin["type"], net.plugin_request(i), deadline)
        return True

    def version_info(self, ptype: str) -> list[str]:
        """The spec versions a plugin says it supports (cached VERSION probe)."""
        return self.prober.supported(self._locate(ptype), self.timeout)

    def validate(self, net: NetworkConfigList) -> list[str]:
        """libcni's ValidateNetworkList: every plugin is found and supports the
        config's version. Returns the capabilities the list declares."""
        errors: list[CNIError] = []
        caps: list[str] = []
        for plugin in net.plugins:
            try:
                supported = self.version_info(plugin["type"])
                if net.cni_version not in supported:
                    errors.append(CNIError(INCOMPATIBLE_VERSION, f"plugin {plugin['type']!r} does not "
                                           f"support config version {net.cni_version!r}",
                                           f"it supports {supported}"))
            except CNIError as err:
                errors.append(err)
            for cap, on in (plugin.get("capabilities") or {}).items():
                if on is True and cap not in caps:
                    caps.append(cap)
        if errors:
            raise MultiError(errors)
        return caps

    def cached_config(self, name: str, rt: RuntimeConf) -> NetworkConfigList | None:
        """The network list an attachment was ADDed with, from its cache entry
        (libcni's GetNetworkListCachedConfig): what a DEL runs when the
        directory's config is gone or no longer parses. None if not cached
        or unreadable."""
        try:
            entry = self.cache.read(name, rt.container_id, rt.ifname)
            if entry is not None and entry.config:
                return NetworkConfigList.from_bytes(entry.config)
        except CNIError:
            pass
        return None

    def cached(self, net: NetworkConfigList, rt: RuntimeConf) -> CacheEntry | None:
        """The cache entry of an attachment (libcni's GetNetworkListCachedConfig)."""
        return self.cache.read(net.name, rt.container_id, rt.ifname)

    # --- lifecycle internals --------------------------------------------------
    def _add(self, net: NetworkConfigList, rt: RuntimeConf, deadline: float) -> Result:
        prev: Result | None = None
        for i, plugin in enumerate(net.plugins):
            req = net.plugin_request(
                i, runtime_config=self.runtime_config(plugin, rt.capability_args),
                prev_result=prev.to_dict(net.cni_version) if prev is not None else None)
            out = self._call("ADD", plugin["type"], req, deadline, container_id=rt.container_id,
                             netns=rt.netns, ifname=rt.ifname, args=rt.args)
            prev = parse_result(out, net.cni_version, plugin["type"])
        assert prev is not None  # a list has at least one plugin
        try:
            self.cache.write(CacheEntry(container_id=rt.container_id, network=net.name, ifname=rt.ifname,
                                        config=net.bytes, netns=rt.netns, cni_args=list(rt.args),
                                        capability_args=dict(rt.capability_args),
                                        result=prev.to_dict(prev.cni_version)))
        except OSError as exc:   # without a cache entry the DEL would lack its args: undo now
            raise CNIError(IO_FAILURE, f"failed to set network {net.name!r} cached result",
                           f"{exc.filename or self.cache_dir}: {exc.strerror}") from None
        return prev

    def _undo_add(self, net: NetworkConfigList, rt: RuntimeConf, err: CNIError) -> None:
        """Every ADD is followed by a DEL, even one that failed (R6). This DEL
        goes past errors (a missing binary must not keep the plugins before it
        from cleaning up) and reports the first."""
        try:
            self._delete(net, rt, self._deadline(), keep_going=True)
        except CNIError as del_err:
            err.cleanup_error = del_err  # type: ignore[attr-defined]

    def _delete(self, net: NetworkConfigList, rt: RuntimeConf, deadline: float,
                keep_going: bool = False) -> None:
        try:
            entry = self.cache.read(net.name, rt.container_id, rt.ifname)
        except CacheError as exc:
            _log().warning("deleting the unreadable cache entry of %s/%s on %r: %s",
                        rt.container_id, rt.ifname, net.name, exc)
            self.cache.delete(net.name, rt.container_id, rt.ifname)
            entry = None
        caps, args, netns, prev = rt.capability_args, rt.args, rt.netns, None
        if entry is not None:
            caps = entry.capability_args or caps
            args = entry.cni_args or args
            netns = netns or entry.netns
            if entry.result is not None and _v.at_least(net.cni_version, "0.4.0"):
                try:
                    prev = Result.from_dict(entry.result, net.cni_version).to_dict(net.cni_version)
                except CNIError as exc:
                    _log().warning("cached result of %s/%s on %r is unusable (%s); deleting it",
                                rt.container_id, rt.ifname, net.name, exc)
                    self.cache.delete(net.name, rt.container_id, rt.ifname)
        first_error: CNIError | None = None
        for i in range(len(net.plugins) - 1, -1, -1):
            plugin = net.plugins[i]
            req = net.plugin_request(i, runtime_config=self.runtime_config(plugin, caps),
                                     prev_result=prev)
            try:
                self._call("DEL", plugin["type"], req, deadline, container_id=rt.container_id,
                           netns=netns, ifname=rt.ifname, args=args)
            except CNIError as err:
                if not keep_going:
                    raise
                first_error = first_error or err
        if first_error is not None:
            raise first_error
        self.cache.delete(net.name, rt.container_id, rt.ifname)

    def _locate(self, ptype: str) -> str:
        return self.runner.locate(ptype, self.preferred.get(ptype, []) + self.path)

    def _call(self, command: str, ptype: str, request: dict, deadline: float, **env_kw) -> bytes:
        plugin_path = self._locate(ptype)
        env = plugin_env(command, path=self.path, **env_kw)
        stdin = json.dumps(request).encode()
        return self.runner.exec(plugin_path, command, stdin, env, deadline - time.monotonic(), ptype,
                               self.timeout)

    @staticmethod
    def runtime_config(plugin: dict, capability_args: dict) -> dict:
        """R4: only capabilities the plugin declares true."""
        caps = plugin.get("capabilities")
        if not caps or not capability_args:
            return {}
        return {k: v for k, v in capability_args.items() if caps.get(k) is True}

    def _deadline(self) -> float:
        return time.monotonic() + self.timeout

    @staticmethod
    def _validate(net: NetworkConfigList, rt: RuntimeConf, need_netns: bool) -> None:
        """R17 before anything runs; R6: the netns must exist."""
        validate_container_id(rt.container_id)
        validate_network_name(net.name)
        validate_ifname(rt.ifname)
        if need_netns:
            if not rt.netns:
                raise CNIError(INVALID_ENVIRONMENT, "a network namespace path is required")
            if not os.path.exists(rt.netns):
                raise CNIError(INVALID_ENVIRONMENT, f"network namespace {rt.netns!r} does not exist")
        if not isinstance(rt.capability_args, dict):
            raise CNIError(INVALID_ENVIRONMENT, "capability args must be a JSON object")

    # --- locks ------------------------------------------------------------------
    def _lock_file(self, name: str) -> int:
        if not self._lock_dir_made:
            self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock_dir_made = True
        return os.open(self.lock_dir / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    @contextlib.contextmanager
    def _global_lock(self, mode: int):
        fd = self._lock_file("gc")
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _locked(self, container_id: str):
        """Shared global lock, then the container's (hashed) exclusive lock."""
        bucket = hashlib.sha256(container_id.encode()).digest()[0] % LOCK_BUCKETS
        with self._global_lock(fcntl.LOCK_SH):
            fd = self._lock_file(f"container-{bucket:02x}")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)


def failure_text(err: CNIError) -> str:
    """An ADD's error as a user reads it: the cause first, then what the
    cleanup DEL could not undo, unless that failed for the same reason."""
    cleanup = getattr(err, "cleanup_error", None)
    if cleanup is None or str(cleanup) == str(err):
        return str(err)
    return f"{err}\n(the cleanup DEL after it also failed: {cleanup})"


def _pair(v) -> tuple[str, str]:
    if isinstance(v, dict):
        return str(v.get("containerID") or v.get("container_id")), str(v.get("ifname") or v.get("ifName"))
    if isinstance(v, RuntimeConf):
        return v.container_id, v.ifname
    cid, ifname = v
    return str(cid), str(ifname)
