"""The OCI runtime-spec model (config.json) and the builder of Docker's defaults.

Both runners take the same bundle: runc reads config.json itself, the
built-in runner (runtime/builtin.py) implements the subset written here. The
defaults are Docker's: its 14 capabilities, runc's masked and read-only
paths, a tmpfs /dev with the usual nodes, and no no_new_privs (Docker sets it
only with --security-opt no-new-privileges): a setuid binary of the image
works as in Docker, within the 14-capability bounding set.
"""
from __future__ import annotations

from minidocker import fsutil
from minidocker.errors import MinidockerError

OCI_VERSION = "1.0.2"

from minidocker.runtime.caps import CAP_NUMBERS, DEFAULT_CAPS, cap_mask  # noqa: F401 - re-exported

MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

# (path, major, minor): created in /dev by both runners.
DEFAULT_DEVICES = [("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7),
                   ("/dev/random", 1, 8), ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0)]
# The devices cgroup rules Docker gives every container.
ALLOWED_DEVICES = [("c", None, None, "m"), ("b", None, None, "m"),
                   ("c", 1, 3, "rwm"), ("c", 1, 5, "rwm"), ("c", 1, 7, "rwm"),
                   ("c", 1, 8, "rwm"), ("c", 1, 9, "rwm"), ("c", 5, 0, "rwm"),
                   ("c", 5, 1, "rwm"), ("c", 5, 2, "rwm"), ("c", 136, None, "rwm"),
                   ("c", 10, 200, "rwm")]


REQUIRED = object()


class _Type:
    """A spec type: FIELDS lists (name, default) in config.json's order; a
    callable default is a factory, REQUIRED marks a field without one.
    Plain classes, not dataclasses: importing dataclasses pulls in inspect,
    several milliseconds of every `run`."""

    FIELDS: tuple = ()

    def __init__(self, *args, **kwargs):
        if len(args) > len(self.FIELDS):
            raise TypeError(f"{type(self).__name__}: too many arguments")
        for i, (name, default) in enumerate(self.FIELDS):
            if i < len(args):
                value = args[i]
            elif name in kwargs:
                value = kwargs.pop(name)
            elif default is REQUIRED:
                raise TypeError(f"{type(self).__name__}: {name} is required")
            else:
                value = default() if callable(default) else default
            setattr(self, name, value)
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected {', '.join(sorted(kwargs))}")

    def to_dict(self) -> dict:
        """As dataclasses.asdict would, without fields that are None."""
        return _prune(self)



class User(_Type):
    FIELDS = (("uid", 0), ("gid", 0), ("additionalGids", None))

    def __eq__(self, other):
        return type(other) is User and self.__dict__ == other.__dict__

    def __repr__(self):
        return f"User(uid={self.uid}, gid={self.gid}, additionalGids={self.additionalGids})"


class Capabilities(_Type):
    FIELDS = (("bounding", lambda: list(DEFAULT_CAPS)), ("effective", lambda: list(DEFAULT_CAPS)),
              ("permitted", lambda: list(DEFAULT_CAPS)))


class Process(_Type):
    FIELDS = (("args", REQUIRED), ("env", REQUIRED), ("cwd", "/"), ("user", User),
              ("capabilities", Capabilities), ("noNewPrivileges", False), ("terminal", False))


class Root(_Type):
    FIELDS = (("path", REQUIRED), ("readonly", False))


class Mount(_Type):
    FIELDS = (("destination", REQUIRED), ("type", REQUIRED), ("source", REQUIRED), ("options", list))


class Namespace(_Type):
    FIELDS = (("type", REQUIRED), ("path", None))


class Device(_Type):
    FIELDS = (("path", REQUIRED), ("type", REQUIRED), ("major", REQUIRED), ("minor", REQUIRED),
              ("fileMode", 0o666), ("uid", 0), ("gid", 0))


class DeviceRule(_Type):
    FIELDS = (("allow", REQUIRED), ("access", REQUIRED), ("type", None), ("major", None),
              ("minor", None))


class Resources(_Type):
    """devices: the allow-list; memory, cpu, pids: dicts in the spec's shape
    (resources.oci() makes them from run's flags)."""
    FIELDS = (("devices", list), ("memory", None), ("cpu", None), ("pids", None))


class Linux(_Type):
    FIELDS = (("namespaces", REQUIRED), ("devices", list), ("resources", Resources),
              ("maskedPaths", lambda: list(MASKED_PATHS)),
              ("readonlyPaths", lambda: list(READONLY_PATHS)), ("rootfsPropagation", None),
              ("cgroupsPath", None))


class Spec(_Type):
    FIELDS = (("process", REQUIRED), ("root", REQUIRED), ("hostname", REQUIRED),
              ("mounts", REQUIRED), ("linux", REQUIRED), ("annotations", dict),
              ("ociVersion", OCI_VERSION))


def _prune(value):
    if isinstance(value, _Type):
        return {name: _prune(v) for name, _ in value.FIELDS
                if (v := getattr(value, name)) is not None}
    if isinstance(value, dict):
        return {k: _prune(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_prune(v) for v in value]
    return value


def default_mounts(files: dict[str, str]) -> list[Mount]:
    """Docker's mounts; files maps /etc/hosts etc. to the generated files."""
    mounts = [
        Mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        Mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        Mount("/dev/pts", "devpts", "devpts",
              ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        Mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
        Mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        Mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]),
    ]
    for dest in ("/etc/resolv.conf", "/etc/hostname", "/etc/hosts"):
        if dest in files:
            mounts.append(Mount(dest, "bind", files[dest], ["rbind", "rprivate"]))
    return mounts


def build(*, args: list[str], env: list[str], cwd: str, user: User, hostname: str,
          rootfs: str, netns_path: str | None, files: dict[str, str],
          annotations: dict[str, str] | None = None, limits: dict | None = None,
          cgroups_path: str | None = None) -> Spec:
    """The config.json of one container. netns_path None = share the host's
    network namespace (`--network host`); limits: linux.resources' memory,
    cpu and pids; cgroups_path: relative (runtime/cgroups.relative_path)."""
    namespaces = [Namespace("pid"), Namespace("ipc"), Namespace("uts"), Namespace("mount")]
    if netns_path is not None:
        namespaces.append(Namespace("network", netns_path))
    rules = [DeviceRule(False, "rwm")] + [
        DeviceRule(True, access, kind, major, minor) for kind, major, minor, access in ALLOWED_DEVICES]
    return Spec(
        process=Process(args=list(args), env=list(env), cwd=cwd or "/", user=user),
        root=Root(path=rootfs),
        hostname=hostname,
        mounts=default_mounts(files),
        linux=Linux(namespaces=namespaces,
                    devices=[Device(p, "c", ma, mi) for p, ma, mi in DEFAULT_DEVICES],
                    resources=Resources(devices=rules, **(limits or {})),
                    cgroupsPath=cgroups_path),
        annotations=dict(annotations or {}),
    )


def resolve_user(rootfs: str, spec: str, group_add=()) -> User:
    """Docker's USER: name or uid, optionally :group or :gid, looked up in the
    image's /etc/passwd and /etc/group; group_add: --group-add names or gids."""
    extra_groups = _group_ids(rootfs, group_add)
    if not spec:
        return User(additionalGids=extra_groups or None)
    name, _, group = spec.partition(":")
    passwd = _table(rootfs, "/etc/passwd")
    groups = _table(rootfs, "/etc/group")
    uid = gid = None
    if name.isdigit():
        uid = int(name)
        for row in passwd:
            if len(row) > 3 and row[2] == name:
                gid = int(row[3])
                break
    else:
        for row in passwd:
            if len(row) > 3 and row[0] == name:
                uid, gid = int(row[2]), int(row[3])
                break
        if uid is None:
            raise MinidockerError(f"unable to find user {name!r}: no matching entries in "
                                  "the image's /etc/passwd", 125)
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            hits = [int(r[2]) for r in groups if len(r) > 2 and r[0] == group]
            if not hits:
                raise MinidockerError(f"unable to find group {group!r}: no matching entries "
                                      "in the image's /etc/group", 125)
            gid = hits[0]
    gid = 0 if gid is None else gid
    extra = sorted(({int(r[2]) for r in groups
                     if len(r) > 3 and not name.isdigit() and name in r[3].split(",")}
                    | set(extra_groups)) - {gid})
    return User(uid=uid, gid=gid, additionalGids=extra or None)


def _group_ids(rootfs: str, names) -> list[int]:
    if not names:
        return []
    groups = _table(rootfs, "/etc/group")
    out = []
    for name in names:
        if name.isdigit():
            out.append(int(name))
            continue
        hits = [int(r[2]) for r in groups if len(r) > 2 and r[0] == name]
        if not hits:
            raise MinidockerError(f"unable to find group {name!r} (--group-add): no matching "
                                  "entries in the image's /etc/group", 125)
        out.append(hits[0])
    return out


def _table(rootfs: str, path: str) -> list[list[str]]:
    try:
        with open(fsutil.secure_join(rootfs, path)) as fh:
            return [line.rstrip("\n").split(":") for line in fh if line.strip()
                    and not line.startswith("#")]
    except OSError:
        return []
