"""`version` and `info`: what this minidocker is and what the host gives it."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

from minidocker import containers, images, paths
from minidocker.runtime import cgroups


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("minidocker")
    except PackageNotFoundError:
        return "unknown"


def _tool_version(argv: list[str]) -> str:
    if not shutil.which(argv[0]) and not os.path.exists(argv[0]):
        return "not installed"
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (out.splitlines() or ["unknown"])[0].strip()


def version() -> list[str]:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    from minidocker.security import INIT_BINARY
    return ["Client:",
            f" Version:           {_version()}",
            f" Python version:    {platform.python_version()}",
            f" OS/Arch:           linux/{arch}",
            "",
            "Server: minidocker (no daemon: each command does its own work)",
            " Engine:",
            f"  Version:          {_version()}",
            f"  Kernel:           {platform.release()}",
            " runc:",
            f"  Version:          {_tool_version(['runc', '--version'])}",
            " docker-init:",
            f"  Version:          {_tool_version([INIT_BINARY, '--version'])}"]


def _memory() -> str:
    with open("/proc/meminfo") as fh:
        kb = int(next(l for l in fh if l.startswith("MemTotal:")).split()[1])
    return f"{kb / 1024 / 1024:.4g}GiB"


def _os_name() -> str:
    try:
        with open("/etc/os-release") as fh:
            fields = dict(l.rstrip("\n").split("=", 1) for l in fh if "=" in l)
        return fields.get("PRETTY_NAME", "").strip('"') or "Linux"
    except OSError:
        return "Linux"


def info() -> list[str]:
    records = containers.all_records()
    running = [r for r in records if r["State"].get("Running")]
    paused = [r for r in running if r["State"].get("Paused")]
    firewall = os.environ.get("MINIDOCKER_FIREWALL", "iptables")
    return ["Server:",
            f" Containers: {len(records)}",
            f"  Running: {len(running) - len(paused)}",
            f"  Paused: {len(paused)}",
            f"  Stopped: {len(records) - len(running)}",
            f" Images: {len(images.list_images())}",
            f" Server Version: {_version()}",
            " Storage Driver: overlay",
            " Logging Driver: json-file",
            " Cgroup Driver: cgroupfs",
            f" Cgroup Version: {cgroups.version()}",
            " Plugins:",
            "  Volume: local",
            "  Network: bridge host none null container cni (cni-bridge in process; "
            f"CNI_PATH {':'.join(paths.cni_path())})",
            "  Log: json-file",
            f" Firewall Backend: {firewall}",
            " Runtimes: builtin runc",
            " Default Runtime: builtin",
            " Init Binary: docker-init (tini-static)",
            " Security Options:",
            "  no-new-privileges (on by default)",
            f"  devices cgroup ({'v2: runc BPF; builtin drops CAP_MKNOD' if cgroups.version() == 2 else 'v1 allow-list'})",
            f" Kernel Version: {platform.release()}",
            f" Operating System: {_os_name()}",
            " OSType: linux",
            f" Architecture: {platform.machine()}",
            f" CPUs: {os.cpu_count()}",
            f" Total Memory: {_memory()}",
            f" Docker Root Dir: {paths.state_root()}",
            f" Runtime Dir: {paths.run_root()}",
            f" Python: {sys.version.split()[0]}"]
