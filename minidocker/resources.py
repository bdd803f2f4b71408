"""run's resource flags (--memory, --memory-swap, --cpus, --cpu-shares,
--pids-limit): checked as Docker checks them, kept in HostConfig under
Docker's names, and turned into config.json's linux.resources (which both
runtimes apply through the container's cgroup, runtime/cgroups.py)."""
from __future__ import annotations

import os

from minidocker.errors import MinidockerError

MIN_MEMORY = 6 * 1024 * 1024  # Docker's "Minimum memory limit allowed is 6MB"
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(flag: str, text: str) -> int:
    """Docker's RAMInBytes: 32m, 1g, 512k, 1.5g, 100b or bytes (units of 1024)."""
    raw = text.strip().lower()
    number = raw.rstrip("bkmgtp")
    unit = raw[len(number):]
    if unit.endswith("b") and len(unit) == 2:
        unit = unit[0]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or value < 0 or number.strip() != number or not number:
        raise MinidockerError(f"invalid {flag} value {text!r}: a size such as 32m, 1g, 512k "
                              "or a number of bytes", 125)
    return int(value * _UNITS[unit])


def _integer(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise MinidockerError(f"invalid {flag} value {text!r}: an integer", 125) from None


def host_config(opts) -> dict:
    """HostConfig's resource fields (Docker's names and zero values)."""
    memory = parse_size("--memory", opts.memory) if opts.memory is not None else 0
    if opts.memory is not None and memory < MIN_MEMORY:
        raise MinidockerError(f"invalid --memory value {opts.memory!r}: the minimum memory "
                              "limit allowed is 6MB", 125)
    swap = 0
    if opts.memory_swap is not None:
        swap = -1 if opts.memory_swap.strip() == "-1" else parse_size("--memory-swap", opts.memory_swap)
        if not memory:
            raise MinidockerError(f"--memory-swap {opts.memory_swap!r} needs --memory: the swap "
                                  "limit counts memory plus swap", 125)
        if swap != -1 and swap < memory:
            raise MinidockerError(f"invalid --memory-swap value {opts.memory_swap!r}: it counts "
                                  "memory plus swap, so it must be at least --memory, or -1 "
                                  "for unlimited swap", 125)
    elif memory:
        swap = 2 * memory  # Docker: as much swap as memory
    nano = 0
    if opts.cpus is not None:
        try:
            cpus = float(opts.cpus)
        except ValueError:
            cpus = -1.0
        ncpu = os.cpu_count() or 1
        if not 0.01 <= cpus <= ncpu:
            raise MinidockerError(f"invalid --cpus value {opts.cpus!r}: the range of CPUs is "
                                  f"from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs "
                                  "available", 125)
        nano = int(round(cpus * 1e9))
    shares = _integer("--cpu-shares", opts.cpu_shares) if opts.cpu_shares is not None else 0
    if shares < 0 or 0 < shares < 2 or shares > 262144:
        raise MinidockerError(f"invalid --cpu-shares value {opts.cpu_shares!r}: from 2 to "
                              "262144 (0 for the default, 1024)", 125)
    pids = _integer("--pids-limit", opts.pids_limit) if opts.pids_limit is not None else None
    if pids is not None and pids < -1:
        raise MinidockerError(f"invalid --pids-limit value {opts.pids_limit!r}: a positive "
                              "number of processes, or 0 or -1 for unlimited", 125)
    return {"Memory": memory, "MemorySwap": swap, "NanoCpus": nano, "CpuShares": shares,
            "PidsLimit": pids if pids and pids > 0 else None}


def oci(hc: dict, swap_accounting: bool) -> dict:
    """config.json's linux.resources limits from HostConfig (devices apart)."""
    out: dict = {}
    if hc.get("Memory"):
        out["memory"] = {"limit": hc["Memory"]}
        if swap_accounting and hc.get("MemorySwap"):
            out["memory"]["swap"] = hc["MemorySwap"]
    cpu = {}
    if hc.get("CpuShares"):
        cpu["shares"] = hc["CpuShares"]
    if hc.get("NanoCpus"):
        from minidocker.runtime.cgroups import CFS_PERIOD
        cpu.update(quota=hc["NanoCpus"] * CFS_PERIOD // 10**9, period=CFS_PERIOD)
    if cpu:
        out["cpu"] = cpu
    if hc.get("PidsLimit"):
        out["pids"] = {"limit": hc["PidsLimit"]}
    return out
