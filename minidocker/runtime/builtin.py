"""The built-in runner: starts a bundle's process the way runc would.

Runs inside the shim, so it stays small: ctypes, no third-party imports.
The pid namespace is made with unshare(CLONE_NEWPID) in the shim just before
forking (the child becomes pid 1) and the shim then setns()es back, so it
remains the container's parent and can still start host processes for its
teardown. Everything else happens in the child before exec: new mount, uts and
ipc namespaces, the pinned network namespace joined by path, the mounts, the
device nodes, pivot_root, masked and read-only paths, user, capabilities,
no_new_privs. An error before exec travels back on a close-on-exec pipe.
"""
from __future__ import annotations

import errno
import os

from cni import fastjson
from minidocker import fsutil, syscalls as sc
from minidocker.runtime import cgroups
from minidocker.runtime.caps import cap_mask

OPTION_FLAGS = {
    "ro": (sc.MS_RDONLY, False), "rw": (sc.MS_RDONLY, True),
    "nosuid": (sc.MS_NOSUID, False), "suid": (sc.MS_NOSUID, True),
    "nodev": (sc.MS_NODEV, False), "dev": (sc.MS_NODEV, True),
    "noexec": (sc.MS_NOEXEC, False), "exec": (sc.MS_NOEXEC, True),
    "noatime": (sc.MS_NOATIME, False), "relatime": (sc.MS_RELATIME, False),
    "strictatime": (sc.MS_STRICTATIME, False), "sync": (sc.MS_SYNCHRONOUS, False),
    "bind": (sc.MS_BIND, False), "rbind": (sc.MS_BIND | sc.MS_REC, False),
}
PROPAGATION = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}


class StartError(Exception):
    """The process could not be started; code is Docker's (126, 127, 125)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def rootfs_path(bundle: str, spec: dict) -> str:
    path = spec["root"]["path"]
    return path if os.path.isabs(path) else os.path.join(bundle, path)


def load_spec(bundle: str) -> dict:
    with open(os.path.join(bundle, "config.json"), "rb") as fh:
        return fastjson.loads(fh.read())


def start(bundle: str, stdio: tuple[int, int, int], console: int | None = None) -> int:
    """Start the bundle's process in new namespaces; returns its host pid.
    console: with process.terminal, a unix socket the pty's master is sent
    on (made inside the container, as runc's --console-socket)."""
    spec = load_spec(bundle)
    if console is not None:
        from minidocker import terminal  # noqa: F401 - imported here: after pivot_root it is out of reach
    _preload(spec)
    new_pid = any(ns["type"] == "pid" and not ns.get("path") for ns in spec["linux"]["namespaces"])
    cgdirs = {}
    if spec["linux"].get("cgroupsPath"):
        cgdirs = cgroups.dirs(spec["linux"]["cgroupsPath"])
        try:
            cgroups.setup(cgdirs, spec["linux"].get("resources") or {})
        except OSError as exc:
            raise StartError(125, f"cannot set up the container's cgroup: {exc.strerror}") from None
    try:
        r, w = os.pipe2(os.O_CLOEXEC)
        own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if new_pid:
                sc.unshare(sc.CLONE_NEWPID)
            pid = os.fork()
            if pid == 0:
                os.close(r)
                _child(_init_container, w, bundle, spec, stdio, cgdirs, console)
            sc.setns(own_pid_ns, sc.CLONE_NEWPID)
        finally:
            os.close(own_pid_ns)
        os.close(w)
        _wait_exec(r, pid)
    except BaseException:
        cgroups.remove(cgdirs)
        raise
    return pid


def exec_in(spec: dict, pid: int, args: list[str], env: list[str], cwd: str,
            stdio: tuple[int, int, int], console: int | None = None) -> int:
    """`exec`: a new process in the namespaces and root of container pid,
    with the container's user, capabilities and no_new_privs; console as
    for start()."""
    fds = {}
    if console is not None:
        from minidocker import terminal  # noqa: F401 - imported here: after chroot it is out of reach
    _preload(spec)
    cgroup_dirs = cgroups.own_dirs(pid)  # exec'd processes count against its limits too
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        for kind in ("ipc", "uts", "net", "pid", "mnt"):
            fds[kind] = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
        root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fds["root"] = root
        own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        try:
            sc.setns(fds["pid"], sc.CLONE_NEWPID)
            child = os.fork()
            if child == 0:
                os.close(r)
                _child(_join_container, w, fds, spec, args, env, cwd, stdio, cgroup_dirs, console)
            sc.setns(own_pid_ns, sc.CLONE_NEWPID)
        finally:
            os.close(own_pid_ns)
    finally:
        for fd in fds.values():
            os.close(fd)
    os.close(w)
    _wait_exec(r, child)
    return child


def _preload(spec: dict) -> None:
    """Import now what the child needs after pivot_root or chroot, when
    the interpreter's files are out of its reach: `resource` (~1.5 ms,
    so only for --ulimit)."""
    if spec["process"].get("rlimits"):
        import resource  # noqa: F401


def _wait_exec(r: int, pid: int) -> None:
    with os.fdopen(r, "rb") as fh:
        report = fh.read()
    if report:
        os.waitpid(pid, 0)
        code, _, message = report.decode(errors="replace").partition(" ")
        raise StartError(int(code), message)


def _child(fn, w: int, *args) -> None:
    """Run fn in the forked child; it ends in exec or reports and exits."""
    code, message = 125, "unknown error"
    try:
        fn(*args, w)
    except StartError as exc:
        code, message = exc.code, exc.message
    except OSError as exc:
        code, message = 125, f"{exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}"
    except BaseException as exc:  # noqa: BLE001 - must never return into the parent's code
        code, message = 125, f"{type(exc).__name__}: {exc}"
    try:
        os.write(w, f"{code} {message}".encode())
    finally:
        os._exit(code)


def _setup_stdio(stdio, *keep: int) -> None:
    for target, fd in enumerate(stdio):
        if fd != target:
            os.dup2(fd, target)
    low = 3
    for fd in sorted(k for k in keep if k is not None):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 65536)


def _terminal(console: int | None) -> None:
    """With a console socket: a pty of the container's own devpts becomes
    stdio and controlling terminal; its master goes to the shim."""
    if console is None:
        return
    from minidocker import terminal
    master, slave = terminal.open_pty()
    terminal.become_controlled(slave)
    terminal.send_fd(console, master)
    os.close(master)
    os.close(console)


def _init_container(bundle: str, spec: dict, stdio, cgdirs: dict, console, w: int) -> None:
    cgroups.join(cgdirs)  # first: the device allow-list holds before any node is made
    _setup_stdio(stdio, w, console)
    os.setsid()
    linux = spec["linux"]
    flags = 0
    for ns in linux["namespaces"]:
        if ns["type"] == "pid":
            continue
        if ns.get("path"):
            fd = os.open(ns["path"], os.O_RDONLY | os.O_CLOEXEC)
            try:
                sc.setns(fd, sc.NS_FLAGS[ns["type"]])
            finally:
                os.close(fd)
        else:
            flags |= sc.NS_FLAGS[ns["type"]]
    sc.unshare(flags)
    for key, value in (linux.get("sysctl") or {}).items():
        # /proc/sys/net and the ipc keys follow the namespaces just joined
        with open("/proc/sys/" + key.replace(".", "/"), "w") as fh:
            fh.write(value)
    if spec.get("hostname") and flags & sc.CLONE_NEWUTS:
        sc.sethostname(spec["hostname"])
    rootfs = rootfs_path(bundle, spec)
    sc.mount(None, "/", None, PROPAGATION.get(linux.get("rootfsPropagation") or "rslave"))
    sc.mount(rootfs, rootfs, None, sc.MS_BIND | sc.MS_REC)
    for m in spec.get("mounts", []):
        _mount(rootfs, m)
    _make_devices(rootfs, linux.get("devices", []))
    _pivot(rootfs)
    for path in linux.get("maskedPaths", []):
        _mask(path)
    for path in linux.get("readonlyPaths", []):
        _readonly(path)
    _terminal(console)
    if spec["root"].get("readonly"):
        sc.mount(None, "/", None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY)
    proc = spec["process"]
    _become(proc)
    _exec(proc["args"], proc["env"], proc.get("cwd") or "/")


def _join_container(fds: dict, spec: dict, args, env, cwd, stdio, cgroup_dirs, console,
                    w: int) -> None:
    cgroups.join(cgroup_dirs)
    for kind, flag in (("ipc", sc.CLONE_NEWIPC), ("uts", sc.CLONE_NEWUTS),
                       ("net", sc.CLONE_NEWNET), ("mnt", sc.CLONE_NEWNS)):
        sc.setns(fds[kind], flag)
    os.fchdir(fds["root"])
    os.chroot(".")
    _setup_stdio(stdio, w, console)
    if console is not None:
        os.setsid()
        _terminal(console)
    _become(spec["process"])
    _exec(args, env, cwd)


def _parse_options(options: list[str]) -> tuple[int, int, str]:
    flags, propagation, data = 0, 0, []
    for opt in options:
        if opt in OPTION_FLAGS:
            bit, clear = OPTION_FLAGS[opt]
            flags = flags & ~bit if clear else flags | bit
        elif opt in PROPAGATION:
            propagation |= PROPAGATION[opt]
        else:
            data.append(opt)
    return flags, propagation, ",".join(data)


def _mount(rootfs: str, m: dict) -> None:
    flags, propagation, data = _parse_options(m.get("options", []))
    source = m.get("source")
    is_bind = m.get("type") == "bind" or flags & sc.MS_BIND
    if is_bind and source and not os.path.isdir(source):
        dest = fsutil.touch_in_root(rootfs, m["destination"])
    else:
        dest = fsutil.mkdir_in_root(rootfs, m["destination"])
    if is_bind:
        sc.mount(source, dest, None, sc.MS_BIND | (flags & sc.MS_REC))
        rest = flags & ~(sc.MS_BIND | sc.MS_REC)
        if rest:
            sc.mount(None, dest, None, sc.MS_REMOUNT | sc.MS_BIND | rest)
    else:
        sc.mount(source, dest, m["type"], flags, data or None)
    if propagation:
        sc.mount(None, dest, None, propagation)


def _make_devices(rootfs: str, devices: list[dict]) -> None:
    import stat
    old = os.umask(0)
    try:
        for dev in devices:
            path = fsutil.secure_join(rootfs, dev["path"])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            kind = stat.S_IFCHR if dev["type"] in ("c", "u") else stat.S_IFBLK
            if os.path.lexists(path):
                os.unlink(path)
            os.mknod(path, kind | (dev.get("fileMode", 0o666) & 0o777), os.makedev(dev["major"], dev["minor"]))
            os.lchown(path, dev.get("uid", 0), dev.get("gid", 0))
    finally:
        os.umask(old)
    dev = fsutil.secure_join(rootfs, "/dev")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("ptmx", "pts/ptmx"), ("core", "/proc/kcore")):
        link = os.path.join(dev, name)
        if not os.path.lexists(link):
            os.symlink(target, link)


def _pivot(rootfs: str) -> None:
    """runc's pivot_root(".", "."): the old root is stacked under the new one
    and detached, so no directory for it is needed in the image."""
    old = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir(rootfs)
        sc.pivot_root(".", ".")
        os.fchdir(old)
        sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
        sc.umount(".", sc.MNT_DETACH)
    finally:
        os.close(old)
    os.chdir("/")


def _mask(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            sc.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY)
        elif os.path.exists(path):
            sc.mount("/dev/null", path, None, sc.MS_BIND)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise


def _readonly(path: str) -> None:
    try:
        sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
        sc.mount(None, path, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC
                 | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise


def _become(proc: dict) -> None:
    """User, capabilities, no_new_privs, in the order runc applies them."""
    caps = proc.get("capabilities") or {}
    bounding = cap_mask(caps.get("bounding", []))
    for cap in range(sc.last_cap() + 1):
        if not bounding & (1 << cap):
            sc.prctl(sc.PR_CAPBSET_DROP, cap)
    if proc.get("rlimits"):
        import resource  # loaded by _preload
        for rl in proc["rlimits"]:
            unlimited = 2**64 - 1
            resource.setrlimit(getattr(resource, rl["type"]),
                               tuple(resource.RLIM_INFINITY if v >= unlimited else v
                                     for v in (rl["soft"], rl["hard"])))
    user = proc.get("user") or {}
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    sc.prctl(sc.PR_SET_KEEPCAPS, 1)
    os.setgroups(user.get("additionalGids") or [])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    sc.prctl(sc.PR_SET_KEEPCAPS, 0)
    sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    sc.capset(cap_mask(caps.get("effective", [])), cap_mask(caps.get("permitted", [])),
              cap_mask(caps.get("inheritable", [])))
    for name in caps.get("ambient", []):
        sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, cap_mask([name]).bit_length() - 1)
    if proc.get("noNewPrivileges"):
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)


def _exec(args: list[str], env: list[str], cwd: str) -> None:
    try:
        os.chdir(cwd)
    except OSError as exc:
        raise StartError(125, f"cannot enter working directory {cwd!r}: {exc.strerror}") from None
    environ = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    environ.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    try:
        _execvpe(args[0], args, environ)
    except FileNotFoundError:
        raise StartError(127, f"exec: {args[0]!r}: executable file not found in $PATH") from None
    except PermissionError:
        raise StartError(126, f"exec: {args[0]!r}: permission denied") from None
    except OSError as exc:
        raise StartError(126, f"exec: {args[0]!r}: {exc.strerror}") from None


def _execvpe(file: str, args: list[str], environ: dict) -> None:
    """os.execvpe's search of PATH, without its lazy `import warnings`
    (os.get_exec_path), which after pivot_root finds no module files: the
    first error that is not a missing file wins, else the last one."""
    if os.path.dirname(file):
        os.execve(file, args, environ)
    saved = last = None
    for folder in environ["PATH"].split(os.pathsep):
        try:
            os.execve(os.path.join(folder, file), args, environ)
        except (FileNotFoundError, NotADirectoryError) as exc:
            last = exc
        except OSError as exc:
            last = exc
            saved = saved or exc
    raise saved or last
