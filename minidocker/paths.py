"""Where minidocker keeps things: the one place for every on-disk path.

Each root can be moved by an environment variable so that tests (and users
running several instances) get private state. Paths are strings (os.path):
pathlib costs `run` ~5 ms of imports (re, urllib.parse, ipaddress); a
caller that wants a Path makes one.
"""
from __future__ import annotations

import os
import sys

_join = os.path.join


def _clean(value: str) -> str:
    """value as str(pathlib.Path(value)) spells it: no empty or `.` parts,
    no trailing slash (a root given as /tmp/x/ is /tmp/x)."""
    head = "//" if value[:2] == "//" and value[2:3] != "/" else "/" if value[:1] == "/" else ""
    return head + "/".join(p for p in value.split("/") if p not in ("", ".")) or "."

DEFAULT_STATE_ROOT = "/var/lib/minidocker"


def state_root() -> str:
    """Persistent state: images, containers, networks."""
    return _clean(os.environ.get("MINIDOCKER_ROOT", DEFAULT_STATE_ROOT))


def run_root() -> str:
    """Runtime state that dies with the machine: pinned netns, shim sockets."""
    return _clean(os.environ.get("MINIDOCKER_RUN", "/run/minidocker"))


def cni_cache_dir() -> str:
    """libcni's result cache (results/<net>-<cid>-<ifname>), shared with cnitool."""
    return _clean(os.environ.get("MINIDOCKER_CNI_CACHE", "/var/lib/cni"))


def cni_conf_dir() -> str:
    """The CNI configuration directory whose networks minidocker can run."""
    return _clean(os.environ.get("MINIDOCKER_CNI_CONF", "/etc/cni/net.d"))


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


def images_dir() -> str:
    return _join(state_root(), "images")


def containers_dir() -> str:
    return _join(state_root(), "containers")


def names_dir() -> str:
    """The name index: `names/<name>` holds the id of the container so named."""
    return _join(state_root(), "names")


def ports_dir() -> str:
    """The host-port index: `ports/<proto>-<port>/<network id>.<container id>`."""
    return _join(state_root(), "ports")


def events_file() -> str:
    """The events journal (`minidocker events`)."""
    return _join(state_root(), "events.log")


def volumes_dir() -> str:
    """Named volumes: <name>/volume.json and <name>/_data."""
    return _join(state_root(), "volumes")


def networks_dir() -> str:
    return _join(state_root(), "networks")


def services_dir() -> str:
    """Service records (services/<name>.json); the directory exists only
    while a service does, so attach/detach know with one stat whether any
    endpoint list can change."""
    return _join(state_root(), "services")


def host_resolv_conf() -> str:
    """The host's resolvers: what containers copy and the DNS server forwards to."""
    return _clean(os.environ.get("MINIDOCKER_RESOLV_CONF", "/etc/resolv.conf"))


def dns_dir() -> str:
    """The per-network DNS servers' runtime files (pid, zone) and their lock."""
    return _join(run_root(), "dns")


def netns_dir() -> str:
    """Pinned container network namespaces (bind-mounted nsfs files)."""
    return _join(run_root(), "netns")


def container_dir(cid: str) -> str:
    """One container's persistent files: record, upper layer, log, bundle."""
    return _join(containers_dir(), cid)


def container_upper(cid: str) -> str:
    """The container's overlay upper dir: its changes (diff, commit)."""
    return _join(container_dir(cid), "upper")


def image_dir(image_hex: str) -> str:
    return _join(images_dir(), image_hex)


def layers_dir() -> str:
    """Layers by diffID: layers/<hex>/{diff/, layer.json}, shared by images."""
    return _join(images_dir(), "layers")


def layer_dir(diff_hex: str) -> str:
    return _join(layers_dir(), diff_hex)


def layer_links_dir() -> str:
    """Short names of the layers' diff dirs (l/<16 hex> -> ../layers/<hex>/diff):
    an overlay's lowerdir list must fit in one page."""
    return _join(images_dir(), "l")


def registry_auth_file() -> str:
    """`login` credentials (0600)."""
    return _join(state_root(), "auth.json")


def repositories_file() -> str:
    """NAME:TAG -> image id."""
    return _join(images_dir(), "repositories.json")


def locks_dir() -> str:
    """flock(2) files serialising writers of shared indexes."""
    return _join(state_root(), "locks")


def shim_dir() -> str:
    """Per-container runtime files of the shim (pid files)."""
    return _join(run_root(), "shims")


def shim_socket(cid: str) -> str:
    """The shim's socket of a container with a terminal (`attach`)."""
    return _join(shim_dir(), f"{cid}.sock")


def runc_root() -> str:
    """runc's --root: its state for the containers it runs for us."""
    return _join(run_root(), "runc")


def cgroup_fs() -> str:
    """Where the cgroup file systems are mounted (v2: the unified one)."""
    return _clean(os.environ.get("MINIDOCKER_CGROUP_FS", "/sys/fs/cgroup"))


def cgroup_parent() -> str:
    """Containers' cgroups are <own cgroup>/<this>/<id> (Docker: /docker/<id>);
    a relative path, so that runc reads it as the built-in runner does."""
    parts = [p for p in os.environ.get("MINIDOCKER_CGROUP_PARENT", "").split("/") if p not in ("", ".")]
    if ".." in parts:
        from minidocker.errors import MinidockerError
        raise MinidockerError(f"invalid MINIDOCKER_CGROUP_PARENT "
                              f"{os.environ['MINIDOCKER_CGROUP_PARENT']!r}: a relative cgroup "
                              "path without '..'", 125)
    return "/".join(parts) or default_cgroup_parent(state_root())


def default_cgroup_parent(root) -> str:
    """`minidocker` for the default state root; another root (a second
    instance, a test's node) gets `minidocker-<crc32 of the root>`, so
    instances never see or count each other's containers' cgroups."""
    if str(root) == DEFAULT_STATE_ROOT:
        return "minidocker"
    import zlib
    return f"minidocker-{zlib.crc32(str(root).encode()):08x}"


def netns_path(cid: str) -> str:
    return _join(netns_dir(), cid)


OCI_SCHEMA = "/usr/share/gocode/src/github.com/opencontainers/runtime-spec/schema"


def oci_schema_dir() -> str:
    """The runtime-spec's own JSON schemas, as Debian's
    golang-github-opencontainers-specs-dev ships them."""
    return _clean(os.environ.get("MINIDOCKER_OCI_SCHEMA", OCI_SCHEMA))

