"""A container's cgroups: limits, the device allow-list, stats, freezing, removal.

The one owner of the cgroup directories of containers. The version is read
at run time: cgroup v2 when /sys/fs/cgroup is a cgroup2 mount, else v1 (a
hybrid host's empty `unified` mount is not used). A container's cgroup is
`<own cgroup>/<MINIDOCKER_CGROUP_PARENT>/<id>` in every hierarchy, relative
to the cgroup of the process that starts it, which is also how runc reads a
relative `linux.cgroupsPath`: both runtimes make the same directories, and
the record keeps their absolute paths for the teardown, `stats` and `top`.

Runs in the shim and in the built-in runner's child: stdlib only.
"""
from __future__ import annotations

import _signal
import errno
import os
import time

from minidocker import paths

#: v1 hierarchies a container gets (the limits, the device allow-list,
#: accounting for stats, the freezer for pause).
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "devices", "freezer")
#: the key of the single cgroup v2 directory in a container's dict of dirs.
UNIFIED = "unified"
#: cgroup v2 controllers the limits need, enabled down the parent's path.
V2_CONTROLLERS = ("cpu", "memory", "pids")
CFS_PERIOD = 100000  # microseconds, Docker's --cpus period


def version() -> int:
    """2 on a cgroup v2 (unified) host, 1 on v1 and hybrid hosts."""
    return 2 if os.path.exists(os.path.join(paths.cgroup_fs(), "cgroup.controllers")) else 1


_MOUNTS: dict[str, str] = {}
#: statfs(2) f_type of a cgroup v1 and a cgroup v2 file system.
CGROUP_SUPER_MAGIC = 0x27E0EB
CGROUP2_SUPER_MAGIC = 0x63677270


def _mounts() -> dict[str, str]:
    """controller -> mount point of its hierarchy (UNIFIED -> the v2 mount).
    Once per process (the shim, forked from `run`, inherits it): where the
    hierarchies are mounted does not change meanwhile."""
    if not _MOUNTS:
        _MOUNTS.update(_standard_mounts() or _mountinfo_mounts())
    return dict(_MOUNTS)


def _standard_mounts() -> dict[str, str] | None:
    """runc's shortcut: the hierarchies this process is in, found where
    systemd and Docker mount them (<cgroup fs>/<controllers>, a co-mounted
    pair also under either name), each checked by statfs to be a cgroup
    file system; None when one is not there (then mountinfo is read). Reading
    /proc/self/mountinfo costs ~10 us a mount in the kernel, and a host with
    many containers has thousands (two each)."""
    from minidocker import syscalls as sc
    root = paths.cgroup_fs()
    try:
        if sc.statfs_type(root) == CGROUP2_SUPER_MAGIC:
            return {UNIFIED: root}
        with open("/proc/self/cgroup") as fh:
            hierarchies = [line.split(":", 2)[1] for line in fh]  # "cpu,cpuacct"; "" for v2
        out: dict[str, str] = {}
        for controllers in hierarchies:
            if not controllers:
                point = os.path.join(root, "unified")  # a hybrid host's, unused by v1 cgroups
                if os.path.isdir(point) and sc.statfs_type(point) == CGROUP2_SUPER_MAGIC:
                    out[UNIFIED] = point
                continue
            names = controllers.split(",")
            for name in [controllers] + names:
                point = os.path.join(root, name.replace("name=", ""))
                if os.path.isdir(point) and sc.statfs_type(point) == CGROUP_SUPER_MAGIC:
                    break
            else:
                return None
            for name in names:
                out[name] = point
        return out
    except OSError:
        return None


def _mountinfo_mounts() -> dict[str, str]:
    """The cgroup mounts as /proc/self/mountinfo lists them (any layout)."""
    out: dict[str, str] = {}
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            if " - cgroup" not in line:
                continue  # (a busy host has hundreds of other mounts: skipped unparsed)
            left, _, right = line.partition(" - ")
            fstype, _, opts = right.split(" ", 2)
            point = left.split(" ")[4]
            if fstype == "cgroup2":
                out.setdefault(UNIFIED, point)
            elif fstype == "cgroup":
                for opt in opts.strip().split(","):
                    out.setdefault(opt, point)
    return out


def _own(pid: str = "self") -> dict[str, str]:
    """controller -> cgroup of pid (UNIFIED -> its v2 cgroup)."""
    out: dict[str, str] = {}
    with open(f"/proc/{pid}/cgroup") as fh:
        for line in fh:
            _, names, path = line.rstrip("\n").split(":", 2)
            if not names:
                out[UNIFIED] = path
            for name in names.split(","):
                if name:
                    out[name] = path
    return out


def relative_path(cid: str) -> str:
    """config.json's linux.cgroupsPath: relative, so runc resolves it
    against its own cgroup as dirs() does."""
    return f"{paths.cgroup_parent()}/{cid}"


def dirs(rel: str) -> dict[str, str]:
    """The absolute directories of cgroup rel (relative_path()), by controller."""
    mounts, own = _mounts(), _own()
    if version() == 2:
        base = mounts.get(UNIFIED, paths.cgroup_fs())
        return {UNIFIED: os.path.join(base + own.get(UNIFIED, "/"), rel)}
    return {c: os.path.join(mounts[c] + own.get(c, "/"), rel)
            for c in V1_CONTROLLERS if c in mounts}


def swap_accounting() -> bool:
    """Whether the kernel accounts swap (v1: memsw files; v2: memory.swap.max)."""
    mounts = _mounts()
    if version() == 2:
        return os.path.exists("/proc/swaps")
    return os.path.exists(os.path.join(mounts.get("memory", "/nonexistent"),
                                       "memory.memsw.limit_in_bytes"))


def own_dirs(pid: int) -> dict[str, str]:
    """The directories of every hierarchy pid is in (by controller, as
    dirs()): where `exec` joins it."""
    mounts, out = _mounts(), {}
    for controller, path in _own(str(pid)).items():
        if controller in mounts and (controller == UNIFIED) == (version() == 2):
            out[controller] = mounts[controller] + path
    return out


# --- set-up (built-in runner; runc does the same from config.json) ----------------

def _write(path: str, value) -> None:
    with open(path, "w") as fh:
        fh.write(str(value))


def setup(cgdirs: dict[str, str], resources: dict) -> None:
    """Make the directories and apply config.json's linux.resources; on any
    failure nothing is left."""
    try:
        for controller, path in cgdirs.items():
            if controller == UNIFIED:
                _enable_v2(path)
            os.makedirs(path, exist_ok=True)
        if UNIFIED in cgdirs:
            _apply_v2(cgdirs[UNIFIED], resources)
        else:
            _apply_v1(cgdirs, resources)
    except OSError as exc:
        remove(cgdirs)
        raise OSError(exc.errno, f"cgroup {exc.filename or ''}: {exc.strerror}") from None


def _device_line(rule: dict) -> str:
    major = "*" if rule.get("major") is None else rule["major"]
    minor = "*" if rule.get("minor") is None else rule["minor"]
    kind = rule.get("type") or "a"
    return "a" if kind == "a" else f"{kind} {major}:{minor} {rule['access']}"


def _apply_v1(cgdirs: dict[str, str], res: dict) -> None:
    if "devices" in cgdirs:
        _device_rules(cgdirs["devices"], res.get("devices", []))
    mem = res.get("memory") or {}
    if mem.get("limit"):
        _write(os.path.join(cgdirs["memory"], "memory.limit_in_bytes"), mem["limit"])
    if mem.get("swap"):
        _write(os.path.join(cgdirs["memory"], "memory.memsw.limit_in_bytes"), mem["swap"])
    cpu = res.get("cpu") or {}
    if cpu.get("shares"):
        _write(os.path.join(cgdirs["cpu"], "cpu.shares"), cpu["shares"])
    if cpu.get("quota"):
        _write(os.path.join(cgdirs["cpu"], "cpu.cfs_period_us"), cpu.get("period") or CFS_PERIOD)
        _write(os.path.join(cgdirs["cpu"], "cpu.cfs_quota_us"), cpu["quota"])
    pids = res.get("pids") or {}
    if pids.get("limit"):
        _write(os.path.join(cgdirs["pids"], "pids.max"), pids["limit"])


def _device_rules(path: str, rules: list[dict]) -> None:
    """The allow-list, in order, one write(2) a rule (the kernel reads one
    rule a write) through one open file of each kind, not one open a rule."""
    fds: dict[str, int] = {}
    try:
        for rule in rules:
            name = "devices.allow" if rule["allow"] else "devices.deny"
            if name not in fds:
                fds[name] = os.open(os.path.join(path, name), os.O_WRONLY | os.O_CLOEXEC)
            os.write(fds[name], _device_line(rule).encode())
    finally:
        for fd in fds.values():
            os.close(fd)


def _enable_v2(path: str) -> None:
    """Enable the controllers the limits need in every ancestor of path
    below the mount (v2 hands controllers down explicitly)."""
    root = paths.cgroup_fs()
    parts = os.path.relpath(os.path.dirname(path), root).split(os.sep)
    current = root
    for part in [""] + [p for p in parts if p not in ("", ".")]:
        current = os.path.join(current, part) if part else current
        os.makedirs(current, exist_ok=True)
        try:
            with open(os.path.join(current, "cgroup.controllers")) as fh:
                available = fh.read().split()
        except FileNotFoundError:
            available = []
        for name in V2_CONTROLLERS:
            if name in available:
                try:
                    _write(os.path.join(current, "cgroup.subtree_control"), "+" + name)
                except OSError:
                    pass  # a cgroup with processes of its own cannot: the limit write says so


def v2_cpu_weight(shares: int) -> int:
    """cgroup v1 cpu.shares [2, 262144] to v2 cpu.weight [1, 10000], as runc."""
    return 1 + ((shares - 2) * 9999) // 262142


def _apply_v2(path: str, res: dict) -> None:
    mem = res.get("memory") or {}
    if mem.get("limit"):
        _write(os.path.join(path, "memory.max"), mem["limit"])
        swap = mem.get("swap")
        if swap:  # OCI's swap is memory+swap (v1's memsw); v2 limits swap alone
            _write(os.path.join(path, "memory.swap.max"),
                   "max" if swap < 0 else max(swap - mem["limit"], 0))
    cpu = res.get("cpu") or {}
    if cpu.get("shares"):
        _write(os.path.join(path, "cpu.weight"), v2_cpu_weight(cpu["shares"]))
    if cpu.get("quota"):
        _write(os.path.join(path, "cpu.max"), f"{cpu['quota']} {cpu.get('period') or CFS_PERIOD}")
    pids = res.get("pids") or {}
    if pids.get("limit"):
        _write(os.path.join(path, "pids.max"), pids["limit"])


def join(cgdirs: dict[str, str]) -> None:
    """Move the calling process into the cgroups; it must have one thread
    (a fresh fork). On v1 through `tasks`, which moves the calling thread
    alone, all of a one-thread process: a `cgroup.procs` write takes the
    kernel's global thread-group lock, whose first taking waits for an RCU
    grace period (5-20 ms, most of a `run`), and a thread of its own does
    not. v2 has no `tasks`: cgroup.procs."""
    for controller, path in cgdirs.items():
        _write(os.path.join(path, "cgroup.procs" if controller == UNIFIED else "tasks"), 0)


# --- reading ------------------------------------------------------------------------

def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def _keyed(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def oom_killed(cgdirs: dict[str, str]) -> bool:
    """True if the kernel's OOM killer killed a process of the cgroup."""
    if UNIFIED in cgdirs:
        return _keyed(_read(os.path.join(cgdirs[UNIFIED], "memory.events"))).get("oom_kill", 0) > 0
    if "memory" in cgdirs:
        return _keyed(_read(os.path.join(cgdirs["memory"], "memory.oom_control"))).get("oom_kill", 0) > 0
    return False


def pids(cgdirs: dict[str, str]) -> list[int]:
    """The host pids in the container's cgroup."""
    path = cgdirs.get(UNIFIED) or cgdirs.get("pids") or cgdirs.get("memory") or ""
    return [int(p) for p in _read(os.path.join(path, "cgroup.procs")).split()]


def _number(text: str) -> int:
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else 0


def stats(cgdirs: dict[str, str]) -> dict[str, int]:
    """cpu_ns (usage so far), mem_usage, mem_limit (0 = none), mem_cache, pids."""
    if UNIFIED in cgdirs:
        d = cgdirs[UNIFIED]
        cpu = _keyed(_read(os.path.join(d, "cpu.stat"))).get("usage_usec", 0) * 1000
        limit = _read(os.path.join(d, "memory.max")).strip()
        stat = _keyed(_read(os.path.join(d, "memory.stat")))
        return {"cpu_ns": cpu, "mem_usage": _number(_read(os.path.join(d, "memory.current"))),
                "mem_limit": int(limit) if limit.isdigit() else 0,
                "mem_cache": stat.get("inactive_file", 0),
                "pids": _number(_read(os.path.join(d, "pids.current")))}
    mem = cgdirs.get("memory", "")
    limit = _number(_read(os.path.join(mem, "memory.limit_in_bytes")))
    stat = _keyed(_read(os.path.join(mem, "memory.stat")))
    return {"cpu_ns": _number(_read(os.path.join(cgdirs.get("cpuacct", ""), "cpuacct.usage"))),
            "mem_usage": _number(_read(os.path.join(mem, "memory.usage_in_bytes"))),
            "mem_limit": limit if 0 < limit < 1 << 62 else 0,
            "mem_cache": stat.get("total_inactive_file", 0),
            "pids": _number(_read(os.path.join(cgdirs.get("pids", ""), "pids.current")))}


# --- pause, removal -------------------------------------------------------------------

def freeze(cgdirs: dict[str, str], frozen: bool) -> None:
    """Freeze (pause) or thaw the container's processes; waits until done."""
    if UNIFIED in cgdirs:
        path, value = os.path.join(cgdirs[UNIFIED], "cgroup.freeze"), "1" if frozen else "0"
        _write(path, value)
        return
    path = os.path.join(cgdirs["freezer"], "freezer.state")
    want = "FROZEN" if frozen else "THAWED"
    _write(path, want)
    deadline = time.monotonic() + 5
    while _read(path).strip() != want and time.monotonic() < deadline:
        time.sleep(0.01)
        _write(path, want)


def remove(cgdirs: dict[str, str], timeout: float = 5.0) -> None:
    """Kill what is left in the cgroups and remove them; idempotent. A
    frozen container is thawed first (a frozen process cannot die)."""
    present = {}
    for controller, path in cgdirs.items():  # the common case: empty, removed at once
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            present[controller] = path
    if not present:
        return
    try:
        if "freezer" in present or UNIFIED in present:
            freeze(present, False)
    except OSError:
        pass
    deadline = time.monotonic() + timeout
    for controller, path in present.items():
        while True:
            for pid in pids({controller: path}):
                try:
                    os.kill(pid, _signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
