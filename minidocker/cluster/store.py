"""The cluster's state in etcd (v3, through its JSON gateway with etcd3gw):
the configuration, one leased key per live node, and the subnet index that
makes two nodes never hold the same subnet. Like flannel's etcd backend,
a node's keys carry its lease: when its agent stops renewing, etcd deletes
them and every other agent's watch sees the node go.

Keys (all under PREFIX):
  config                 the ClusterConfig JSON, written once
  nodes/<name>           NodeLease JSON, on the node's lease
  subnets/<a.b.c.d-N>    the holder's name, on the same lease (uniqueness)
  reservations/<name>    the node's last subnet, no lease: a restarted node
                         gets it back while nobody else took it
  services/<name>        a service record (minidocker/services/clustered.py)
  service-ips/<ip>       the service holding a VIP (uniqueness)
  endpoints/<node>       the node's pods on `pods` with their labels, on the
                         node's lease (gone with the node)
"""
from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from minidocker.cluster.config import ClusterConfig, validate
from minidocker.errors import MinidockerError

PREFIX = "/minidocker/cluster/"
CONFIG_KEY = PREFIX + "config"
NODES = PREFIX + "nodes/"
SUBNETS = PREFIX + "subnets/"
RESERVATIONS = PREFIX + "reservations/"
SERVICES = PREFIX + "services/"
SERVICE_IPS = PREFIX + "service-ips/"
ENDPOINTS = PREFIX + "endpoints/"
REQUEST_TIMEOUT = 3.0   # seconds per etcd request: an unreachable etcd is an error, not a hang


class Unreachable(MinidockerError):
    """etcd did not answer: callers keep their last state and retry."""


@dataclass(frozen=True)
class NodeLease:
    """What a node publishes about itself: enough for a peer to route to it."""
    name: str
    subnet: str
    public_ip: str
    backend: str
    vtep_mac: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes | str) -> "NodeLease | None":
        try:
            return cls(**json.loads(raw))
        except (ValueError, TypeError):
            return None     # a stranger's or a damaged key: not a peer


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def subnet_key(subnet: str) -> str:
    return SUBNETS + subnet.replace("/", "-")


def parse_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of --etcd; http or https, a host and a port."""
    parts = urlsplit(url or "")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None \
            or parts.path not in ("", "/"):
        raise MinidockerError(f"invalid --etcd {url!r}: an etcd client URL such as http://10.0.0.1:2379")
    return parts.scheme, parts.hostname, port


class Store:
    """One etcd endpoint. Every call raises Unreachable when etcd does not
    answer within REQUEST_TIMEOUT, so nothing hangs on a dead cluster."""

    def __init__(self, url: str, timeout: float = REQUEST_TIMEOUT):
        import etcd3gw   # ~100 ms: only cluster commands pay it
        from etcd3gw import exceptions
        self.url = url
        scheme, host, port = parse_url(url)
        self._errors = (exceptions.Etcd3Exception, OSError)
        self.client = etcd3gw.client(host=host, port=port, protocol=scheme, timeout=timeout,
                                     api_path="/v3/")

    def _call(self, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except self._errors as exc:
            raise Unreachable(f"etcd at {self.url} is unreachable: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")) \
                from None

    def ping(self) -> None:
        self._call(self.client.status)

    # --- configuration -------------------------------------------------------
    def config(self) -> ClusterConfig | None:
        found = self._call(self.client.get, CONFIG_KEY)
        return ClusterConfig.from_json(found[0]) if found else None

    def init(self, cfg: ClusterConfig) -> bool:
        """Write the configuration once. True when written now, False when the
        same one was there; a different one is refused."""
        validate(cfg)
        txn = {"compare": [{"key": _b64(CONFIG_KEY), "result": "EQUAL", "target": "CREATE",
                            "create_revision": "0"}],
               "success": [{"request_put": {"key": _b64(CONFIG_KEY), "value": _b64(cfg.to_json())}}],
               "failure": []}
        if self._call(self.client.transaction, txn).get("succeeded"):
            return True
        have = self.config()
        if have != cfg:
            raise MinidockerError(f"etcd at {self.url} already holds a different cluster configuration "
                                  f"({have.to_json() if have else 'unreadable'}); refusing {cfg.to_json()}")
        return False

    # --- nodes -----------------------------------------------------------------
    def nodes(self) -> tuple[dict[str, NodeLease], int]:
        """Live nodes by name, and the revision they were read at (a watch
        started after it misses nothing)."""
        raw = self._call(self.client.post, self.client.get_url("/kv/range"),
                         json={"key": _b64(NODES), "range_end": _b64(NODES[:-1] + "0")})
        out = {}
        for kv in raw.get("kvs", []):
            lease = NodeLease.from_json(base64.b64decode(kv.get("value", "")))
            if lease is not None:
                out[lease.name] = lease
        return out, int(raw.get("header", {}).get("revision", 0))

    def taken_subnets(self) -> dict[str, str]:
        """subnet -> holder, for every leased subnet."""
        found = self._call(self.client.get_prefix, SUBNETS)
        return {meta["key"].decode()[len(SUBNETS):].replace("-", "/"): value.decode()
                for value, meta in found}

    def reservation(self, name: str) -> str | None:
        found = self._call(self.client.get, RESERVATIONS + name)
        return found[0].decode() if found else None

    def reservations(self) -> dict[str, str]:
        """name -> last subnet, for every node that ever joined and did not leave."""
        found = self._call(self.client.get_prefix, RESERVATIONS)
        return {meta["key"].decode()[len(RESERVATIONS):]: value.decode() for value, meta in found}

    def revoke(self, lease) -> None:
        self._call(lease.revoke)

    def grant(self, ttl: int):
        return self._call(self.client.lease, ttl=ttl)

    def refresh(self, lease) -> int:
        """The lease's remaining TTL after the renewal; <= 0 means it expired."""
        return int(self._call(lease.refresh) or 0)

    def claim(self, me: NodeLease, lease, holder: str | None) -> bool:
        """Put the node's keys on `lease` if its subnet is still free (or still
        ours, after a restart). False when another node won the race."""
        key = subnet_key(me.subnet)
        if holder is None:
            cmp = {"key": _b64(key), "result": "EQUAL", "target": "CREATE", "create_revision": "0"}
        else:
            cmp = {"key": _b64(key), "result": "EQUAL", "target": "VALUE", "value": _b64(holder)}
        puts = [{"request_put": {"key": _b64(key), "value": _b64(me.name), "lease": lease.id}},
                {"request_put": {"key": _b64(NODES + me.name), "value": _b64(me.to_json()),
                                 "lease": lease.id}},
                {"request_put": {"key": _b64(RESERVATIONS + me.name), "value": _b64(me.subnet)}}]
        txn = {"compare": [cmp], "success": puts, "failure": []}
        return bool(self._call(self.client.transaction, txn).get("succeeded"))

    def release(self, name: str, subnet: str, lease=None) -> None:
        """Leave: revoke the lease (etcd deletes its keys at once) and forget
        the reservation, so the subnet is free for the next node."""
        if lease is not None:
            self.revoke(lease)
        held = self.taken_subnets().get(subnet)
        if held == name:
            self._call(self.client.delete, subnet_key(subnet))
        mine = self.nodes()[0].get(name)
        if mine is not None and mine.subnet == subnet:
            self._call(self.client.delete, NODES + name)
        self._call(self.client.delete, RESERVATIONS + name)
        self._call(self.client.delete, ENDPOINTS + name)

    # --- plain keys (services) ------------------------------------------------
    def values(self, prefix: str) -> dict[str, bytes]:
        """key (after prefix) -> value of every key under prefix."""
        found = self._call(self.client.get_prefix, prefix)
        return {meta["key"].decode()[len(prefix):]: value for value, meta in found}

    def put(self, key: str, value: str, lease_id=None) -> None:
        if lease_id:
            self._call(self.client.post, self.client.get_url("/kv/put"),
                       json={"key": _b64(key), "value": _b64(value), "lease": lease_id})
        else:
            self._call(self.client.put, key, value)

    def delete(self, *keys: str) -> None:
        for key in keys:
            self._call(self.client.delete, key)

    def create_all(self, items: dict[str, str]) -> bool:
        """Put every key only if none of them exists (one transaction)."""
        txn = {"compare": [{"key": _b64(k), "result": "EQUAL", "target": "CREATE",
                            "create_revision": "0"} for k in items],
               "success": [{"request_put": {"key": _b64(k), "value": _b64(v)}} for k, v in items.items()],
               "failure": []}
        return bool(self._call(self.client.transaction, txn).get("succeeded"))

    def watch_nodes(self, start_revision: int):
        """(events, cancel) from etcd3gw: node keys put or deleted after start_revision."""
        return self._call(self.client.watch_prefix, NODES, start_revision=start_revision)
