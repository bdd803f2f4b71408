"""Where minidocker keeps things: the one place for every on-disk path.

Each root can be moved by an environment variable so that tests (and users
running several instances) get private state.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def state_root() -> Path:
    """Persistent state: images, containers, networks."""
    return Path(os.environ.get("MINIDOCKER_ROOT", "/var/lib/minidocker"))


def run_root() -> Path:
    """Runtime state that dies with the machine: pinned netns, shim sockets."""
    return Path(os.environ.get("MINIDOCKER_RUN", "/run/minidocker"))


def cni_cache_dir() -> Path:
    """libcni's result cache (results/<net>-<cid>-<ifname>), shared with cnitool."""
    return Path(os.environ.get("MINIDOCKER_CNI_CACHE", "/var/lib/cni"))


def cni_conf_dir() -> Path:
    """The CNI configuration directory whose networks minidocker can run."""
    return Path(os.environ.get("MINIDOCKER_CNI_CONF", "/etc/cni/net.d"))


def cni_path() -> list[str]:
    """Where CNI plugins are looked up (CNI_PATH), in order."""
    value = os.environ.get("CNI_PATH")
    if value:
        return [p for p in value.split(":") if p]
    return ["/usr/lib/cni", "/opt/cni/bin"]


def own_plugin_dirs() -> list[str]:
    """Where the plugins that ship with minidocker (cni-bridge) are: beside
    the running `minidocker` and beside its interpreter (a venv's bin/,
    /usr/bin). Searched before CNI_PATH, so they are found without it."""
    dirs = []
    prog = sys.argv[0] if sys.argv else ""
    if os.path.basename(prog) == "minidocker" and os.path.dirname(prog):
        dirs.append(os.path.dirname(os.path.abspath(prog)))
    if sys.executable:
        dirs.append(os.path.dirname(sys.executable))   # unresolved: the venv's bin/, not /usr/bin
    return list(dict.fromkeys(dirs))


def images_dir() -> Path:
    return state_root() / "images"


def containers_dir() -> Path:
    return state_root() / "containers"


def networks_dir() -> Path:
    return state_root() / "networks"


def services_dir() -> Path:
    """Service records (services/<name>.json); the directory exists only
    while a service does, so attach/detach know with one stat whether any
    endpoint list can change."""
    return state_root() / "services"


def host_resolv_conf() -> Path:
    """The host's resolvers: what containers copy and the DNS server forwards to."""
    return Path(os.environ.get("MINIDOCKER_RESOLV_CONF", "/etc/resolv.conf"))


def dns_dir() -> Path:
    """The per-network DNS servers' runtime files (pid, zone) and their lock."""
    return run_root() / "dns"


def netns_dir() -> Path:
    """Pinned container network namespaces (bind-mounted nsfs files)."""
    return run_root() / "netns"


def container_dir(cid: str) -> Path:
    """One container's persistent files: record, upper layer, log, bundle."""
    return containers_dir() / cid


def image_dir(image_hex: str) -> Path:
    return images_dir() / image_hex


def repositories_file() -> Path:
    """NAME:TAG -> image id."""
    return images_dir() / "repositories.json"


def locks_dir() -> Path:
    """flock(2) files serialising writers of shared indexes."""
    return state_root() / "locks"


def shim_dir() -> Path:
    """Per-container runtime files of the shim (pid files)."""
    return run_root() / "shims"


def runc_root() -> Path:
    """runc's --root: its state for the containers it runs for us."""
    return run_root() / "runc"


def netns_path(cid: str) -> Path:
    return netns_dir() / cid


OCI_SCHEMA = Path("/usr/share/gocode/src/github.com/opencontainers/runtime-spec/schema")


def oci_schema_dir() -> Path:
    """The runtime-spec's own JSON schemas, as Debian's
    golang-github-opencontainers-specs-dev ships them."""
    return Path(os.environ.get("MINIDOCKER_OCI_SCHEMA", OCI_SCHEMA))

