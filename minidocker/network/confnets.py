"""Networks of the CNI configuration directory, as `network ls / inspect` see them.

They are files the administrator owns: minidocker lists and inspects them
(driver `cni`) but never creates or removes them. Their id is attach.py's (a
hash of the network's name, which picks the file in the directory), so `ls`,
`run --network ID` and containers' NetworkID agree, and endpoints recorded
under it survive an edit of the file; `ConfigDigest` (a hash of the file's
bytes) tells an edited file apart.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from minidocker import paths


@dataclass
class ConfNetwork:
    name: str
    id: str
    digest: str
    path: str
    cni_version: str
    plugins: list[str]
    ipam: list[dict]

    driver = "cni"

    @property
    def short_id(self) -> str:
        return self.id[:12]


def load() -> list[ConfNetwork]:
    """The valid networks of the conf dir, in libcni's order (invalid files
    are skipped silently here: `minidocker cni ls` reports them)."""
    from minidocker.network.cni import config  # the CNI protocol modules only when needed
    out = []
    for conf in config.load_dir(paths.cni_conf_dir(), warn=False).networks:
        plugins = [str(p.get("type", "?")) for p in conf.plugins]
        out.append(ConfNetwork(name=conf.name, id=network_id(conf.name),
                               digest="sha256:" + hashlib.sha256(conf.bytes).hexdigest(),
                               path=conf.source, cni_version=conf.cni_version, plugins=plugins,
                               ipam=_ipam_config(conf.plugins)))
    return out


def network_id(name: str) -> str:
    from minidocker.network.attach import _cni_id  # one definition of the id
    return _cni_id(name)


def _ipam_config(plugins: list[dict]) -> list[dict]:
    """Subnets of host-local style `ipam` sections (`subnet` or `ranges`)."""
    out = []
    for plugin in plugins:
        ipam = plugin.get("ipam") if isinstance(plugin, dict) else None
        if not isinstance(ipam, dict):
            continue
        ranges = [r for rs in ipam.get("ranges") or [] if isinstance(rs, list) for r in rs]
        if ipam.get("subnet"):
            ranges.insert(0, ipam)
        for r in ranges:
            if isinstance(r, dict) and r.get("subnet"):
                entry = {"Subnet": str(r["subnet"])}
                if r.get("gateway"):
                    entry["Gateway"] = str(r["gateway"])
                out.append(entry)
    return out


def docker(net: ConfNetwork) -> dict:
    """`network inspect`'s shape for a CNI file network."""
    return {
        "Name": net.name, "Id": net.id, "Created": "", "Scope": "local", "Driver": "cni",
        "EnableIPv6": False, "Internal": False,
        "IPAM": {"Driver": "cni", "Config": net.ipam},
        "Options": {"cni.config_file": net.path, "cni.version": net.cni_version,
                    "cni.plugins": ",".join(net.plugins)},
        "ConfigFile": net.path, "ConfigDigest": net.digest, "Plugins": net.plugins,
        "Containers": {},
    }
