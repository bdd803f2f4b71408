"""run's security and process flags: --cap-add/--cap-drop, --privileged,
--security-opt, --sysctl, --ulimit. Checked as Docker checks them, kept in
HostConfig under Docker's names, applied to config.json (both runtimes read
the same spec)."""
from __future__ import annotations

import os
import re
import stat

from minidocker.errors import MinidockerError
from minidocker.runtime.caps import CAP_NUMBERS, DEFAULT_CAPS

ULIMITS = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
           "nproc", "rss", "rtprio", "rttime", "sigpending", "stack", "as")
# sysctls with a namespace of the container's own (Docker's list)
_IPC_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")


def _cap(name: str, flag: str) -> str:
    full = name.upper() if name.upper().startswith("CAP_") else "CAP_" + name.upper()
    if name.upper() != "ALL" and full not in CAP_NUMBERS:
        raise MinidockerError(f"invalid {flag} {name!r}: unknown capability; see "
                              "capabilities(7), e.g. NET_ADMIN or CAP_SYS_TIME, or ALL", 125)
    return "ALL" if name.upper() == "ALL" else full


def capabilities(cap_add, cap_drop, privileged: bool) -> list[str]:
    """Docker's capability arithmetic: --privileged or ALL in --cap-add give
    every capability (less the dropped ones, for ALL); otherwise the default
    set less --cap-drop (nothing for ALL), plus --cap-add."""
    every = grantable()
    add = [_cap(c, "--cap-add") for c in cap_add]
    drop = [_cap(c, "--cap-drop") for c in cap_drop]
    if privileged:
        return every
    if "ALL" in add:
        return [c for c in every if c not in drop]
    base = [] if "ALL" in drop else [c for c in DEFAULT_CAPS if c not in drop]
    return list(dict.fromkeys(base + [a for a in add]))


def grantable() -> list[str]:
    """"Every capability": those in our own bounding set (a container cannot
    get what minidocker itself does not hold, on a host that withholds some)."""
    with open("/proc/self/status") as fh:
        bounding = int(next(l for l in fh if l.startswith("CapBnd:")).split()[1], 16)
    return [name for name, bit in sorted(CAP_NUMBERS.items(), key=lambda kv: kv[1])
            if bounding >> bit & 1]


def no_new_privileges(opts) -> bool:
    """--security-opt no-new-privileges[=true|false] (or `:`); off without
    it, as Docker."""
    value = False
    for opt in opts:
        m = re.fullmatch(r"no-new-privileges(?:[=:](true|false))?", opt, re.IGNORECASE)
        if not m:
            raise MinidockerError(f"invalid --security-opt {opt!r}: accepted is "
                                  "no-new-privileges[=true|false] (no seccomp, AppArmor or "
                                  "SELinux profiles here)", 125)
        value = (m.group(1) or "true").lower() == "true"
    return value


def sysctls(items, network_mode: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not re.fullmatch(r"[a-z0-9_]+(\.[a-zA-Z0-9_-]+)+", key) or "\n" in value:
            raise MinidockerError(f"invalid --sysctl {item!r}: expected KEY=VALUE with a dotted "
                                  "key such as net.ipv4.ip_forward", 125)
        if key.startswith("net."):
            if network_mode == "host":
                raise MinidockerError(f"invalid --sysctl {item!r}: net.* sysctls are not allowed "
                                      "with --network host (the host's own)", 125)
        elif key not in _IPC_SYSCTLS and not key.startswith("fs.mqueue."):
            raise MinidockerError(f"invalid --sysctl {item!r}: only sysctls of the container's "
                                  "own namespaces are allowed: net.*, fs.mqueue.*, kernel.msg*, "
                                  "kernel.sem, kernel.shm*", 125)
        out[key] = value
    return out


def _limit(text: str, item: str) -> int:
    if text == "-1" or text == "unlimited":
        return -1
    if not text.isdigit():
        raise MinidockerError(f"invalid --ulimit {item!r}: limits are numbers (or -1)", 125)
    return int(text)


def ulimits(items) -> list[dict]:
    out = {}
    for item in items:
        name, eq, values = item.partition("=")
        if not eq or name not in ULIMITS:
            raise MinidockerError(f"invalid --ulimit {item!r}: expected TYPE=SOFT[:HARD] with "
                                  f"TYPE one of {', '.join(ULIMITS)}", 125)
        soft_text, _, hard_text = values.partition(":")
        soft = _limit(soft_text, item)
        hard = _limit(hard_text, item) if hard_text else soft
        if hard != -1 and (soft == -1 or soft > hard):
            raise MinidockerError(f"invalid --ulimit {item!r}: the soft limit must be at most "
                                  f"the hard limit ({soft_text} > {hard_text})", 125)
        out[name] = {"Name": name, "Soft": soft, "Hard": hard}
    return list(out.values())


#: Docker's --init is tini (docker-init); Debian's static build runs in any image.
INIT_BINARY = "/usr/bin/tini-static"
INIT_PATH = "/sbin/docker-init"


def init_binary() -> str:
    if not os.path.exists(INIT_BINARY):
        raise MinidockerError(f"--init needs {INIT_BINARY} (apt-get install tini)", 125)
    return INIT_BINARY


def host_devices() -> list[dict]:
    """Every character and block device of the host's /dev (--privileged),
    as config.json devices."""
    out = []
    for root, dirs, files in os.walk("/dev"):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/dev/pts", "/dev/shm",
                                                                     "/dev/mqueue")]
        for name in files:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            kind = "c" if stat.S_ISCHR(st.st_mode) else "b" if stat.S_ISBLK(st.st_mode) else None
            if kind and path not in ("/dev/console", "/dev/ptmx", "/dev/tty"):
                out.append({"path": path, "type": kind, "major": os.major(st.st_rdev),
                            "minor": os.minor(st.st_rdev), "fileMode": st.st_mode & 0o777,
                            "uid": st.st_uid, "gid": st.st_gid})
    return out


def apply(spec: dict, hc: dict) -> None:
    """HostConfig's security and process settings into config.json."""
    proc, linux = spec["process"], spec["linux"]
    if hc.get("CapAdd") or hc.get("CapDrop") or hc.get("Privileged"):
        caps = capabilities(hc.get("CapAdd") or (), hc.get("CapDrop") or (), hc.get("Privileged"))
        proc["capabilities"] = {k: list(caps) for k in ("bounding", "effective", "permitted")}
    proc["noNewPrivileges"] = no_new_privileges(hc.get("SecurityOpt") or ())
    if hc.get("Sysctls"):
        linux["sysctl"] = dict(hc["Sysctls"])
    if hc.get("Ulimits"):
        proc["rlimits"] = [{"type": "RLIMIT_" + u["Name"].upper(),
                            "soft": u["Soft"] if u["Soft"] >= 0 else 2**64 - 1,
                            "hard": u["Hard"] if u["Hard"] >= 0 else 2**64 - 1}
                           for u in hc["Ulimits"]]
    if hc.get("Init"):
        # pid 1 is tini: it reaps orphans and passes signals on to the command
        proc["args"] = [INIT_PATH, "--", *proc["args"]]
        spec["mounts"].append({"destination": INIT_PATH, "type": "bind",
                               "source": init_binary(), "options": ["rbind", "ro", "rprivate"]})
    if hc.get("Privileged"):
        linux["maskedPaths"], linux["readonlyPaths"] = [], []
        linux["resources"]["devices"] = [{"allow": True, "access": "rwm"}]
        known = {d["path"] for d in linux.get("devices", [])}
        linux["devices"] = linux.get("devices", []) + [d for d in host_devices()
                                                       if d["path"] not in known]
        for m in spec["mounts"]:
            if m["destination"] == "/sys":
                m["options"] = [o for o in m["options"] if o != "ro"] + ["rw"]
