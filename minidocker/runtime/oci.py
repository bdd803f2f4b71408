"""The OCI runtime-spec model (config.json) and the builder of Docker's defaults.

Both runners take the same bundle: runc reads config.json itself, the
built-in runner (runtime/builtin.py) implements the subset written here. The
defaults are Docker's: its 14 capabilities, no_new_privs, runc's masked and
read-only paths, a tmpfs /dev with the usual nodes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

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


# The spec types are built on every `run`; their generated __repr__/__eq__ are
# never used (specs are compared and shown as dicts, see Spec.to_dict) and
# cost import time, so they are not generated. User keeps __eq__.
spec_type = dataclass(repr=False, eq=False)


@dataclass(repr=False)
class User:
    uid: int = 0
    gid: int = 0
    additionalGids: list[int] | None = None


@spec_type
class Capabilities:
    bounding: list[str] = field(default_factory=lambda: list(DEFAULT_CAPS))
    effective: list[str] = field(default_factory=lambda: list(DEFAULT_CAPS))
    permitted: list[str] = field(default_factory=lambda: list(DEFAULT_CAPS))


@spec_type
class Process:
    args: list[str]
    env: list[str]
    cwd: str = "/"
    user: User = field(default_factory=User)
    capabilities: Capabilities = field(default_factory=Capabilities)
    noNewPrivileges: bool = True
    terminal: bool = False


@spec_type
class Root:
    path: str
    readonly: bool = False


@spec_type
class Mount:
    destination: str
    type: str
    source: str
    options: list[str] = field(default_factory=list)


@spec_type
class Namespace:
    type: str
    path: str | None = None


@spec_type
class Device:
    path: str
    type: str
    major: int
    minor: int
    fileMode: int = 0o666
    uid: int = 0
    gid: int = 0


@spec_type
class DeviceRule:
    allow: bool
    access: str
    type: str | None = None
    major: int | None = None
    minor: int | None = None


@spec_type
class Resources:
    devices: list[DeviceRule] = field(default_factory=list)


@spec_type
class Linux:
    namespaces: list[Namespace]
    devices: list[Device] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)
    maskedPaths: list[str] = field(default_factory=lambda: list(MASKED_PATHS))
    readonlyPaths: list[str] = field(default_factory=lambda: list(READONLY_PATHS))
    rootfsPropagation: str | None = None


@spec_type
class Spec:
    process: Process
    root: Root
    hostname: str
    mounts: list[Mount]
    linux: Linux
    annotations: dict[str, str] = field(default_factory=dict)
    ociVersion: str = OCI_VERSION

    def to_dict(self) -> dict:
        return _prune(dataclasses.asdict(self))


def _prune(value):
    if isinstance(value, dict):
        return {k: _prune(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
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
          annotations: dict[str, str] | None = None) -> Spec:
    """The config.json of one container. netns_path None = share the host's
    network namespace (`--network host`)."""
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
                    resources=Resources(devices=rules)),
        annotations=dict(annotations or {}),
    )


def resolve_user(rootfs: str, spec: str) -> User:
    """Docker's USER: name or uid, optionally :group or :gid, looked up in the
    image's /etc/passwd and /etc/group."""
    if not spec:
        return User()
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
    extra = sorted({int(r[2]) for r in groups
                    if len(r) > 3 and not name.isdigit() and name in r[3].split(",")} - {gid})
    return User(uid=uid, gid=gid, additionalGids=extra or None)


def _table(rootfs: str, path: str) -> list[list[str]]:
    try:
        with open(fsutil.secure_join(rootfs, path)) as fh:
            return [line.rstrip("\n").split(":") for line in fh if line.strip()
                    and not line.startswith("#")]
    except OSError:
        return []
