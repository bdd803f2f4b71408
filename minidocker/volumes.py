"""Volumes and mounts: `-v`, `--mount`, `--tmpfs`, and the named-volume store.

A named volume is a directory under the state root (volumes/<name>/_data,
its record volume.json), made on first use, filled from the image's files
at its mount point while it is empty (Docker's copy-up), kept after the
container is removed; an anonymous one (`-v /path`) has a random name and
goes with `rm -v` or `--rm`. run's flags become the record's `Mounts`
(Docker's inspect shape) at create; start turns them into config.json
mounts, resolving a bind source once, on the host (a symlink in what the
user named is followed there, never inside the container).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from minidocker import clock, fsutil, paths, state
from minidocker.errors import Conflict, MinidockerError, NotFound

_NAME_RE = r"[a-zA-Z0-9][a-zA-Z0-9_.-]+\Z"
_BIND_MODES = {"ro", "rw", "nocopy", "rprivate", "private", "rslave", "slave", "rshared",
               "shared", "z", "Z"}


def _lock():
    return state.locked(Path(paths.locks_dir()) / "volumes.lock")


def _dir(name: str):
    return Path(paths.volumes_dir()) / name


def _check_name(name: str) -> None:
    if not re.match(_NAME_RE, name):
        raise MinidockerError(f"invalid volume name {name!r}: use [a-zA-Z0-9] then "
                              "[a-zA-Z0-9_.-], at least 2 characters", 125)


# --- the store -------------------------------------------------------------------------

def create(name: str | None = None, labels: dict | None = None, anonymous: bool = False) -> dict:
    """Create (or return the existing) volume."""
    name = name or os.urandom(32).hex()
    _check_name(name)
    with _lock():
        existing = state.read_json(_dir(name) / "volume.json")
        if existing:
            return existing
        state.ensure_dir(_dir(name))
        state.ensure_dir(_dir(name) / "_data", mode=0o755)
        record = {"CreatedAt": clock.now(), "Driver": "local", "Labels": labels or {},
                  "Mountpoint": str(_dir(name) / "_data"), "Name": name, "Options": {},
                  "Scope": "local"}
        if anonymous:
            record["Labels"] = {**record["Labels"], "com.docker.volume.anonymous": ""}
        state.write_json(_dir(name) / "volume.json", record)
        return record


def get(name: str) -> dict:
    record = state.read_json(_dir(name) / "volume.json") if re.match(_NAME_RE, name) else None
    if not record:
        raise NotFound(f"no such volume: {name!r} (see `minidocker volume ls`)")
    return record


def all_volumes() -> list[dict]:
    base = Path(paths.volumes_dir())
    if not base.is_dir():
        return []
    out = [state.read_json(d / "volume.json") for d in sorted(base.iterdir())]
    return [v for v in out if v]


def users(name: str, records: list[dict]) -> list[str]:
    """Ids of the containers (any state) that mount volume name."""
    return [r["Id"] for r in records
            if any(m.get("Type") == "volume" and m.get("Name") == name for m in r.get("Mounts") or [])]


def remove(name: str, records: list[dict], force: bool = False) -> None:
    get(name)
    with _lock():
        using = users(name, records)
        if using:
            raise Conflict(f"volume {name!r} is in use by container(s) "
                           f"{', '.join(c[:12] for c in using)}: remove them first")
        _rmtree(str(_dir(name)))


def prune(records: list[dict]) -> list[tuple[str, int]]:
    """Remove every volume no container uses; (name, bytes) of each."""
    out = []
    for vol in all_volumes():
        if not users(vol["Name"], records):
            size = _size(vol["Mountpoint"])
            remove(vol["Name"], records)
            out.append((vol["Name"], size))
    return out


def remove_anonymous(record: dict) -> None:
    """`rm -v` / `--rm`: the container's anonymous volumes."""
    for m in record.get("Mounts") or []:
        if m.get("Type") == "volume" and m.get("Anonymous"):
            try:
                with _lock():
                    _rmtree(str(_dir(m["Name"])))
            except OSError:
                pass


def _size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def _rmtree(path: str) -> None:
    import shutil
    shutil.rmtree(path, ignore_errors=False) if os.path.lexists(path) else None


# --- run's flags -> the record's Mounts -----------------------------------------------

def _destination(dest: str, what: str) -> str:
    if not dest.startswith("/"):
        raise MinidockerError(f"invalid mount {what!r}: the container path {dest!r} must be "
                              "absolute", 125)
    dest = os.path.normpath(dest)
    if dest == "/":
        raise MinidockerError(f"invalid mount {what!r}: the destination cannot be '/'", 125)
    return dest


def parse_volume(spec: str) -> dict:
    """-v HOST:CTR[:MODES] | NAME:CTR[:MODES] | CTR (an anonymous volume)."""
    parts = spec.split(":")
    if len(parts) == 1:
        return {"Type": "volume", "Name": "", "Destination": _destination(parts[0], spec),
                "RW": True, "Anonymous": True}
    if len(parts) > 3 or not parts[0] or not parts[1]:
        raise MinidockerError(f"invalid volume specification {spec!r}: expected "
                              "HOST-PATH:CONTAINER-PATH[:ro], NAME:CONTAINER-PATH[:ro] or "
                              "CONTAINER-PATH", 125)
    modes = parts[2].split(",") if len(parts) == 3 else []
    bad = [m for m in modes if m not in _BIND_MODES]
    if bad or ("ro" in modes and "rw" in modes):
        raise MinidockerError(f"invalid mode {parts[2]!r} in volume {spec!r}: accepted are "
                              "ro, rw, nocopy and a propagation (rprivate, rslave, rshared...)",
                              125)
    source, dest = parts[0], _destination(parts[1], spec)
    mount = {"Destination": dest, "RW": "ro" not in modes, "Mode": parts[2] if len(parts) == 3 else ""}
    if source.startswith("/"):
        return {"Type": "bind", "Source": source, "Propagation": _propagation(modes),
                "Create": True, **mount}
    _check_name(source)
    return {"Type": "volume", "Name": source, "NoCopy": "nocopy" in modes, **mount}


def _propagation(modes: list[str]) -> str:
    return next((m for m in modes if "private" in m or "slave" in m or "shared" in m), "rprivate")


def parse_mount(spec: str) -> dict:
    """--mount type=bind|volume|tmpfs,source=,target=,readonly,..."""
    fields: dict[str, str] = {}
    for item in spec.split(","):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if key in ("readonly", "ro") and not eq:
            value = "true"
        elif not eq:
            raise MinidockerError(f"invalid --mount {spec!r}: field {item!r} is not KEY=VALUE", 125)
        fields[{"src": "source", "dst": "target", "destination": "target", "ro": "readonly"}
               .get(key, key)] = value
    kind = fields.pop("type", "volume")
    target = fields.pop("target", None)
    if target is None:
        raise MinidockerError(f"invalid --mount {spec!r}: target= is required", 125)
    dest = _destination(target, spec)
    readonly = fields.pop("readonly", "false").lower() in ("1", "true")
    source = fields.pop("source", "")
    if kind == "bind":
        propagation = fields.pop("bind-propagation", "rprivate")
        if not source.startswith("/"):
            raise MinidockerError(f"invalid --mount {spec!r}: a bind needs an absolute "
                                  "source=", 125)
        mount = {"Type": "bind", "Source": source, "Destination": dest, "RW": not readonly,
                 "Mode": "", "Propagation": propagation, "Create": False}
    elif kind == "volume":
        nocopy = fields.pop("volume-nocopy", "false").lower() in ("1", "true")
        if source:
            _check_name(source)
        mount = {"Type": "volume", "Name": source, "Destination": dest, "RW": not readonly,
                 "Mode": "", "NoCopy": nocopy, "Anonymous": not source}
    elif kind == "tmpfs":
        if source:
            raise MinidockerError(f"invalid --mount {spec!r}: a tmpfs takes no source", 125)
        opts = []
        if "tmpfs-size" in fields:
            opts.append(f"size={_size_value(fields.pop('tmpfs-size'), spec)}")
        if "tmpfs-mode" in fields:
            mode = fields.pop("tmpfs-mode")
            if not re.fullmatch(r"[0-7]{1,4}", mode):
                raise MinidockerError(f"invalid --mount {spec!r}: tmpfs-mode {mode!r} is not "
                                      "octal", 125)
            opts.append(f"mode={mode}")
        mount = {"Type": "tmpfs", "Source": "", "Destination": dest, "RW": not readonly,
                 "Mode": ",".join(opts), "Propagation": ""}
    else:
        raise MinidockerError(f"invalid --mount {spec!r}: type {kind!r}; accepted are bind, "
                              "volume, tmpfs", 125)
    if fields:
        raise MinidockerError(f"invalid --mount {spec!r}: unknown field(s) "
                              f"{', '.join(sorted(fields))}", 125)
    return mount


def _size_value(text: str, spec: str) -> int:
    from minidocker import resources
    return resources.parse_size(f"--mount {spec}", text)


_TMPFS_OPTS = re.compile(r"(ro|rw|noexec|exec|nosuid|suid|nodev|dev|size=\d+[kmgKMG%]?|"
                         r"mode=[0-7]{1,4}|uid=\d+|gid=\d+|nr_inodes=\d+[kmgKMG]?|noatime|"
                         r"strictatime|relatime)\Z")


def parse_tmpfs(spec: str) -> dict:
    """--tmpfs PATH[:OPTIONS] (mount(8)'s tmpfs options)."""
    path, _, options = spec.partition(":")
    dest = _destination(path, spec)
    opts = [o for o in options.split(",") if o] if options else []
    bad = [o for o in opts if not _TMPFS_OPTS.match(o)]
    if bad:
        raise MinidockerError(f"invalid --tmpfs {spec!r}: option {bad[0]!r}; accepted are "
                              "ro, rw, [no]exec, [no]suid, [no]dev, size=, mode=, uid=, gid=, "
                              "nr_inodes=", 125)
    return {"Type": "tmpfs", "Source": "", "Destination": dest, "RW": "ro" not in opts,
            "Mode": ",".join(o for o in opts if o not in ("ro", "rw")), "Propagation": ""}


def mounts_of(opts) -> list[dict]:
    """The record's Mounts from run's -v, --mount and --tmpfs (checked)."""
    out = [parse_volume(v) for v in opts.volumes]
    out += [parse_mount(m) for m in opts.mounts]
    out += [parse_tmpfs(t) for t in opts.tmpfs]
    seen = set()
    for m in out:
        if m["Destination"] in seen:
            raise MinidockerError(f"duplicate mount point {m['Destination']!r}", 125)
        seen.add(m["Destination"])
        if m["Type"] == "volume" and not m["Name"]:
            m["Name"] = os.urandom(32).hex()
    return out


# --- start: the record's Mounts -> config.json mounts ----------------------------------

def spec_mounts(record: dict, image_rootfs: str) -> list[dict]:
    """config.json mounts of the record's Mounts; creates volumes on first
    use (with copy-up), bind sources with -v, and resolves bind sources."""
    out = []
    for m in record.get("Mounts") or []:
        rw = "rw" if m["RW"] else "ro"
        if m["Type"] == "tmpfs":
            options = ["nosuid", "nodev", "noexec", rw] + [o for o in m["Mode"].split(",") if o]
            if not any(o.startswith("mode=") for o in options):
                options.append("mode=1777")
            if "exec" in options:
                options = [o for o in options if o not in ("noexec", "exec")]
            out.append({"destination": m["Destination"], "type": "tmpfs", "source": "tmpfs",
                        "options": options})
            continue
        if m["Type"] == "volume":
            vol = create(m["Name"], anonymous=bool(m.get("Anonymous")))
            m["Source"] = vol["Mountpoint"]
            m.setdefault("Driver", "local")
            if not m.get("NoCopy"):
                _copy_up(image_rootfs, m["Destination"], vol["Mountpoint"])
            source = vol["Mountpoint"]
            propagation = "rprivate"
        else:
            source = _resolve_bind(m)
            propagation = m.get("Propagation") or "rprivate"
        out.append({"destination": m["Destination"], "type": "bind", "source": source,
                    "options": ["rbind", rw, propagation]})
    return out


def _resolve_bind(m: dict) -> str:
    """The bind source's real path on the host, once, now (runc and the
    built-in runner then mount exactly that)."""
    source = m["Source"]
    if not os.path.lexists(source):
        if not m.get("Create"):
            raise MinidockerError(f"invalid mount config: bind source path {source!r} does "
                                  "not exist", 125)
        os.makedirs(source, mode=0o755, exist_ok=True)  # -v makes it, as Docker does
    real = os.path.realpath(source)
    if not os.path.exists(real):
        raise MinidockerError(f"bind source {source!r} is a symlink to {real!r}, which does "
                              "not exist", 125)
    return real


def _copy_up(image_rootfs: str, dest: str, mountpoint: str) -> None:
    """An empty volume takes the image's files at its mount point."""
    if os.listdir(mountpoint):
        return
    src = fsutil.secure_join(image_rootfs, dest)
    if os.path.isdir(src) and not os.path.islink(src):
        import shutil
        shutil.copytree(src, mountpoint, symlinks=True, dirs_exist_ok=True)
        st = os.stat(src)
        os.chmod(mountpoint, st.st_mode & 0o7777)
        os.chown(mountpoint, st.st_uid, st.st_gid)
