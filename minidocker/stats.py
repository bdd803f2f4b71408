"""`top` and `stats`: what the container's cgroup and processes say."""
from __future__ import annotations

import subprocess
import time

from minidocker import containers
from minidocker.errors import MinidockerError
from minidocker.runtime import cgroups


def _running(ref: str) -> dict:
    record = containers.find(ref)
    if not record["State"].get("Running"):
        raise MinidockerError(f"container {record['Id'][:12]} is not running")
    return record


def top(ref: str, ps_args: list[str]) -> list[str]:
    """`ps` (default -ef's columns: UID PID PPID C STIME TTY TIME CMD) of the
    container's processes, as the host sees them."""
    record = _running(ref)
    pids = set(cgroups.pids(record.get("Cgroups") or {}))
    argv = ["ps", *(ps_args or ["-ef"])]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise MinidockerError(f"ps {' '.join(ps_args)}: {proc.stderr.strip() or 'failed'}")
    lines = proc.stdout.splitlines()
    header = lines[0].split()
    if "PID" not in header:
        raise MinidockerError(f"ps {' '.join(ps_args)}: its output has no PID column")
    col = header.index("PID")
    return [lines[0]] + [l for l in lines[1:] if len(l.split()) > col
                         and l.split()[col].isdigit() and int(l.split()[col]) in pids]


def _net_io(pid: int) -> tuple[int, int]:
    rx = tx = 0
    try:
        with open(f"/proc/{pid}/net/dev") as fh:
            for line in fh.readlines()[2:]:
                name, _, rest = line.partition(":")
                if name.strip() != "lo":
                    fields = rest.split()
                    rx, tx = rx + int(fields[0]), tx + int(fields[8])
    except (OSError, IndexError, ValueError):
        pass
    return rx, tx


def _block_io(record: dict) -> tuple[int, int]:
    rd = wr = 0
    for pid in cgroups.pids(record.get("Cgroups") or {}):
        try:
            with open(f"/proc/{pid}/io") as fh:
                io = dict(l.split(":", 1) for l in fh.read().splitlines())
            rd, wr = rd + int(io["read_bytes"]), wr + int(io["write_bytes"])
        except (OSError, KeyError, ValueError):
            continue
    return rd, wr


def _host_memory() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def sample(refs: list[str], interval: float = 0.5) -> list[dict]:
    """One row per running container (all when refs is empty): Docker's
    stats fields, CPU % over interval."""
    records = [_running(r) for r in refs] if refs else \
        [r for r in containers.all_records() if r["State"].get("Running")]
    first = {r["Id"]: (cgroups.stats(r.get("Cgroups") or {})["cpu_ns"], time.monotonic_ns())
             for r in records}
    time.sleep(interval)
    rows = []
    for r in records:
        s = cgroups.stats(r.get("Cgroups") or {})
        cpu0, t0 = first[r["Id"]]
        cpu = 100.0 * (s["cpu_ns"] - cpu0) / max(time.monotonic_ns() - t0, 1)
        used = max(s["mem_usage"] - s["mem_cache"], 0)  # Docker 20.10 leaves out the cache
        limit = s["mem_limit"] or _host_memory()
        rows.append({"ID": r["Id"][:12], "Name": r["Name"].lstrip("/"), "CPUPerc": f"{cpu:.2f}%",
                     "MemUsage": f"{_iec(used)} / {_iec(limit)}",
                     "MemPerc": f"{100.0 * used / limit if limit else 0:.2f}%",
                     "NetIO": "{} / {}".format(*map(_si, _net_io(r["State"]["Pid"]))),
                     "BlockIO": "{} / {}".format(*map(_si, _block_io(r))),
                     "PIDs": str(s["pids"])})
    return rows


HEADER = ("CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O",
          "BLOCK I/O", "PIDS")
FIELDS = ("ID", "Name", "CPUPerc", "MemUsage", "MemPerc", "NetIO", "BlockIO", "PIDs")


def table(rows: list[dict]) -> list[str]:
    from minidocker.psview import align
    return align(["\t".join(HEADER)] + ["\t".join(r[f] for f in FIELDS) for r in rows])


def _size(n: float, step: int, units: tuple[str, ...], digits: str) -> str:
    for unit in units:
        if n < step or unit == units[-1]:
            return f"{int(n)}B" if unit == "B" else f"{n:{digits}}{unit}"
        n /= step
    return str(n)


def _iec(n: float) -> str:
    """Docker's binary sizes: 1.5MiB."""
    return _size(n, 1024, ("B", "KiB", "MiB", "GiB", "TiB"), ".4g")


def _si(n: float) -> str:
    """Docker's decimal sizes: 1.2kB."""
    return _size(n, 1000, ("B", "kB", "MB", "GB", "TB"), ".3g")
