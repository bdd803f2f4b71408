"""Running CNI plugins inside a test node exactly as a runtime does: exec the
binary with CNI_* in the environment and the config on stdin, in the node's
network namespace. Shared by the plugin's tests (and usable by the executor's).
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from harness import CNI_BRIDGE, REFERENCE_CNI, Node, run

SPEC_VERSIONS = ("0.3.1", "0.4.0", "1.0.0", "1.1.0")
REFERENCE_VERSIONS = ("0.3.1", "0.4.0", "1.0.0")  # the reference plugins stop at 1.0.0
BACKENDS = ("iptables", "nftables")
STACKS = ("v4", "dual")

SUBNET4 = "10.66.0.0/24"
SUBNET6 = "fd00:66::/64"


@dataclass
class Reply:
    rc: int
    stdout: str
    stderr: str

    @property
    def json(self):
        return json.loads(self.stdout) if self.stdout.strip() else None

    @property
    def code(self):
        return (self.json or {}).get("code")

    @property
    def msg(self):
        return (self.json or {}).get("msg", "")

    def ok(self) -> "Reply":
        assert self.rc == 0, f"plugin failed rc={self.rc}\nstdout: {self.stdout}\nstderr: {self.stderr}"
        return self


@dataclass
class Container:
    """A pinned network namespace standing for a container's sandbox."""
    name: str
    cid: str

    @property
    def netns(self) -> str:
        return f"/run/netns/{self.name}"

    def sh(self, *argv, check=True, timeout=30):
        return run(["nsenter", f"--net={self.netns}", "--", *argv], check=check, timeout=timeout)


@dataclass
class Cni:
    """A node plus its containers; everything made here is undone by close()."""
    node: Node
    containers: list[Container] = field(default_factory=list)
    bridges: set[str] = field(default_factory=set)

    @property
    def data_dir(self) -> Path:
        return self.node.root / "ipam"

    def container(self, cid: str | None = None) -> Container:
        c = Container(name=f"{self.node.name}-c{len(self.containers)}", cid=cid or uuid.uuid4().hex)
        run(["ip", "netns", "add", c.name])
        c.sh("ip", "link", "set", "lo", "up")
        self.containers.append(c)
        return c

    def conf(self, *, version="1.1.0", backend="iptables", stack="v4", bridge="mdtbr0", name="mdtnet",
             ipam_type="cni-bridge", ipmasq=True, portmaps=None, **extra) -> dict:
        ranges = [[{"subnet": SUBNET4}]]
        if stack == "dual":
            ranges.append([{"subnet": SUBNET6}])
        self.bridges.add(bridge)
        conf = {"cniVersion": version, "name": name, "type": "cni-bridge", "bridge": bridge,
                "isGateway": True, "isDefaultGateway": True, "ipMasq": ipmasq, "hairpinMode": True,
                "firewallBackend": backend,
                "ipam": {"type": ipam_type, "dataDir": str(self.data_dir), "ranges": ranges}}
        if portmaps is not None:
            conf["runtimeConfig"] = {"portMappings": portmaps}
        conf.update(extra)
        return conf

    def call(self, command: str, conf: dict | str | bytes, c: Container | None = None, *, ifname="eth0",
             exe: str = CNI_BRIDGE, args: str = "", netns: str | None = None, env: dict | None = None,
             drop: tuple = ()) -> Reply:
        e = {"PATH": self.node.env()["PATH"], "CNI_COMMAND": command,
             "CNI_PATH": self.node.cni_path, "MINIDOCKER_RUN": str(self.node.run_root)}
        if c is not None:
            e["CNI_CONTAINERID"] = c.cid
            e["CNI_NETNS"] = netns if netns is not None else c.netns
            e["CNI_IFNAME"] = ifname
        if args:
            e["CNI_ARGS"] = args
        e.update(env or {})
        for k in drop:
            e.pop(k, None)
        data = conf if isinstance(conf, (str, bytes)) else json.dumps(conf)
        if isinstance(data, bytes):
            data = data.decode()
        proc = self.node.run([exe], env=e, input=data, check=False)
        return Reply(proc.returncode, proc.stdout, proc.stderr)

    def ref(self, name: str) -> str:
        return f"{REFERENCE_CNI}/{name}"

    def leases(self, net="mdtnet") -> dict[str, str]:
        d = self.data_dir / net
        if not d.is_dir():
            return {}
        return {p.name: p.read_bytes().decode() for p in d.iterdir()
                if p.name != "lock" and not p.name.startswith(("last_reserved_ip", "."))}

    def close(self) -> None:
        for c in self.containers:
            run(["ip", "netns", "del", c.name], check=False)
        for br in self.bridges:
            self.node.sh("ip", "link", "del", br, check=False)


def with_prev(conf: dict, result: dict) -> dict:
    out = dict(conf)
    out["prevResult"] = result
    return out


def chain(conf_list: dict, index: int, prev: dict | None = None, runtime: dict | None = None) -> dict:
    """libcni's per-plugin request (R4) for plugin `index` of a list."""
    p = {k: v for k, v in conf_list["plugins"][index].items() if k != "capabilities"}
    p["cniVersion"] = conf_list["cniVersion"]
    p["name"] = conf_list["name"]
    if runtime:
        p["runtimeConfig"] = runtime
    if prev is not None:
        p["prevResult"] = prev
    return p
