"""The network modes: how a container's network namespace gets its links.

A closed table, chosen by the string of `--network`:
  none            a namespace of its own with only loopback
  host            the host's namespace: nothing to attach, nothing to undo
  container:<id>  that running container's namespace, joined
  anything else   a network (`bridge`, a user network, a CNI-file
                  network): one endpoint, eth0, through attach.py
`resolve(spec)` validates at create (bad input fails before any state is
written); `parse(spec)` rebuilds the mode from a record (start, teardown).
The engine then calls check(record) at create, sandbox(record) for the
namespace the process runs in, attach(record) once it exists (before the
process starts) and detach(record) once the process is gone (again from
`rm -f`: it must be idempotent). The attaching modules load only for a
network mode: `run --network none|host` never pays for them.
"""
from __future__ import annotations

from minidocker import paths
from minidocker.errors import MinidockerError, NotFound

CONTAINER_PREFIX = "container:"


class NetworkModeError(MinidockerError):
    pass


class Mode:
    """One network mode; `record` is the container's record (a dict with
    Id, Name, Config, HostConfig, NetworkingConfig, NetworkSettings)."""

    name = ""
    #: False: the container shares the namespace of the host.
    own_namespace = True
    #: True: the container gets a new namespace, pinned under MINIDOCKER_RUN.
    pins = True
    #: True: an endpoint of its own (-p, --ip, --ip6, --network-alias, --mac-address).
    accepts_ports = False
    #: True: -p is dropped with a warning, as Docker does (else refused).
    ignores_ports = False
    #: True: attach() makes kernel objects (an endpoint), so the record names
    #: the pinned namespace before it starts; False: it only returns settings.
    attaches = False

    def __init__(self, spec: str):
        self.spec = spec

    def validate(self) -> None:
        """Reject impossible settings before anything exists."""

    def check(self, record: dict) -> None:
        """Create time, before the record is written: the container's own
        network settings (host ports free, addresses usable)."""

    def sandbox(self, record: dict) -> str | None:
        """The network namespace the process runs in (None: the host's)."""
        return paths.netns_path(record["Id"])

    def attach(self, record: dict) -> dict:
        """Attach networking; returns what goes into NetworkSettings."""
        return {"Networks": {self.name: {"NetworkID": self.name, "IPAddress": "", "Gateway": "",
                                         "MacAddress": ""}}}

    def detach(self, record: dict) -> None:
        """Undo attach; safe to call twice and after a failed attach."""


class NoneMode(Mode):
    """Only loopback (brought up when the namespace is pinned)."""

    name = "none"
    ignores_ports = True


class HostMode(Mode):
    """The host's own namespace."""

    name = "host"
    own_namespace = False
    ignores_ports = True
    pins = False

    def sandbox(self, record: dict) -> str | None:
        return None


class ContainerMode(Mode):
    """`container:<id>`: the process joins that container's pinned namespace;
    nothing is attached, so there is nothing to undo."""

    name = "container"
    pins = False

    @property
    def ref(self) -> str:
        return self.spec[len(CONTAINER_PREFIX):]

    def validate(self) -> None:
        if not self.ref:
            raise NetworkModeError("--network container: needs a container name or id, "
                                   "e.g. container:web", 125)

    def _target(self) -> dict:
        from minidocker import records
        try:
            target = records.find(self.ref)
        except NotFound:
            raise MinidockerError(f"--network {self.spec}: no such container {self.ref!r}", 125) from None
        sandbox = (target.get("NetworkSettings") or {}).get("SandboxKey") or ""
        if not target["State"].get("Running") or not sandbox:
            raise MinidockerError(f"--network {self.spec}: container {target['Name'].lstrip('/')} "
                                  "is not running (start it first)", 125)
        return target

    def check(self, record: dict) -> None:
        if self._target()["Id"] == record["Id"]:
            raise MinidockerError("a container cannot join its own network namespace", 125)

    def sandbox(self, record: dict) -> str | None:
        return self._target()["NetworkSettings"]["SandboxKey"]

    def attach(self, record: dict) -> dict:
        return {"Networks": {}}


class NetworkMode(Mode):
    """`bridge`, a user network or a CNI-file network: one endpoint (eth0),
    and again every network joined later with `network connect` (as Docker
    brings them back on `start`). The network is resolved once at create;
    its id rides in NetworkingConfig.EndpointsConfig[spec].NetworkID."""

    name = "bridge"
    accepts_ports = True
    attaches = True

    def __init__(self, spec: str):
        super().__init__(spec)
        self._network = None

    def network(self, record: dict | None = None):
        """The network, resolved once (by the id the record carries, if any)."""
        if self._network is None:
            from minidocker.network import networks, settings
            carried = settings.endpoints_config(record or {}).get(self.spec) or {}
            self._network = networks.attachable(self.spec, carried.get("NetworkID", ""))
        return self._network

    def validate(self) -> None:
        try:
            self.network()
        except NotFound as exc:
            raise NetworkModeError(f"unknown network mode or network {self.spec!r}: accepted are "
                                   f"{', '.join(accepted())} or a network of `minidocker network ls`",
                                   exc.code) from None

    def check(self, record: dict) -> None:
        """Create time: fixed host ports free, requested addresses usable; the
        network's id goes into the record, so `start` need not search again."""
        from minidocker.network import addresses, publish, settings
        net = self.network(record)
        configs = record.setdefault("NetworkingConfig", {}).setdefault("EndpointsConfig", {})
        epc = configs.setdefault(self.spec, settings.endpoint_config({}, [], None))
        epc["NetworkID"] = net.id
        ipam = epc.get("IPAMConfig") or {}
        addresses.check(net, ip=ipam.get("IPv4Address"), ip6=ipam.get("IPv6Address"),
                        exclude_cid=record["Id"])
        publish.check_fixed(settings.mappings(record))

    def attach(self, record: dict) -> dict:
        from minidocker.network import attach, hostsfile, networks, publish, settings
        configs = settings.endpoints_config(record)
        net = self.network(record)
        out = None
        # the mode's network is eth0; networks joined with `network connect` follow
        for n, (ref, cfg) in enumerate([(self.spec, configs.get(self.spec) or {})] +
                                       [(k, v or {}) for k, v in configs.items() if k != self.spec]):
            other = net if n == 0 else networks.attachable(ref, cfg.get("NetworkID", ""))
            ipam = cfg.get("IPAMConfig") or {}
            ep = attach.attach(record, other, ifname=f"eth{n}",
                               ports=settings.mappings(record) if n == 0 else None,
                               ip=ipam.get("IPv4Address") or None, ip6=ipam.get("IPv6Address") or None,
                               aliases=list(cfg.get("Aliases") or []), mac=cfg.get("MacAddress") or None)
            if out is None:
                out = settings.network_settings(ep, net.name, publish.docker_ports(publish.recorded(ep)))
            else:
                out["Networks"][other.name] = settings.endpoint_settings(ep)
        hostsfile.refresh({record["Id"]})
        return out

    def detach(self, record: dict) -> None:
        from minidocker.network import attach
        attach.detach_all(record)


#: The closed table: exact names, then the one prefix, then any network.
MODES = {"none": NoneMode, "host": HostMode}


def accepted() -> list[str]:
    return ["bridge", *sorted(MODES), CONTAINER_PREFIX + "<id>"]


def parse(spec: str) -> Mode:
    """The mode of a `--network` value, unchecked (a record's, known good)."""
    if spec in MODES:
        return MODES[spec](spec)
    if spec.startswith(CONTAINER_PREFIX):
        return ContainerMode(spec)
    return NetworkMode(spec)


def resolve(spec: str) -> Mode:
    """The mode of a `--network` value, validated (create time)."""
    mode = parse(spec)
    mode.validate()
    return mode
