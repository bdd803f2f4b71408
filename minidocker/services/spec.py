"""`service create`'s values checked, each bad one a one-line error naming it
and what is accepted, before anything is allocated or written."""
from __future__ import annotations

import re

from minidocker.errors import MinidockerError

TYPES = ("ClusterIP", "NodePort")
AFFINITIES = ("None", "ClientIP")
PROTOCOLS = ("tcp", "udp")
NODE_PORTS = (30000, 32767)   # Kubernetes' default --service-node-port-range
DEFAULT_RANGE = "10.96.0.0/16"
AFFINITY_SECONDS = 10800      # Kubernetes' default sessionAffinityConfig timeout
_NAME_RE = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"   # a DNS label, as Kubernetes' service names
_LABEL_KEY_RE = r"[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?"


def name(value: str) -> str:
    if not re.fullmatch(_NAME_RE, value or ""):
        raise MinidockerError(f"invalid service name {value!r}: a DNS label (lower-case letters, "
                              "digits and '-', at most 63 characters, starting and ending "
                              "with a letter or digit)")
    return value


def selector(items) -> dict[str, str]:
    """--selector KEY=VALUE, at least one."""
    if not items:
        raise MinidockerError("a service needs at least one --selector KEY=VALUE: it selects "
                              "the running containers whose labels (run --label) match")
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not re.fullmatch(_LABEL_KEY_RE, key):
            raise MinidockerError(f"invalid --selector {item!r}: expected KEY=VALUE, the key "
                                  "letters, digits and '._/-'")
        out[key] = value
    return out


def _port_number(text: str, what: str, item: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise MinidockerError(f"invalid --port {item!r}: the {what} {text!r} is not a port "
                              "number (1-65535); expected PORT[:TARGETPORT][/tcp|/udp]")
    return int(text)


def ports(items) -> list[dict]:
    """--port PORT[:TARGETPORT][/tcp|/udp], at least one, no duplicate."""
    if not items:
        raise MinidockerError("a service needs at least one --port PORT[:TARGETPORT][/tcp|/udp]")
    out, seen = [], set()
    for item in items:
        body, slash, proto = item.partition("/")
        proto = proto.lower() if slash else "tcp"
        if proto not in PROTOCOLS:
            raise MinidockerError(f"invalid --port {item!r}: unknown protocol {proto!r}; "
                                  "accepted are tcp and udp")
        port, colon, target = body.partition(":")
        number = _port_number(port, "port", item)
        target_number = _port_number(target, "target port", item) if colon else number
        if (proto, number) in seen:
            raise MinidockerError(f"invalid --port {item!r}: {number}/{proto} is given twice")
        seen.add((proto, number))
        out.append({"Protocol": proto, "Port": number, "TargetPort": target_number, "NodePort": 0})
    return out


def kind(value: str) -> str:
    if value not in TYPES:
        raise MinidockerError(f"invalid --type {value!r}: accepted are {', '.join(TYPES)}")
    return value


def affinity(value: str | None) -> str:
    value = value or "None"
    if value not in AFFINITIES:
        raise MinidockerError(f"invalid --session-affinity {value!r}: accepted are "
                              f"{', '.join(AFFINITIES)}")
    return value


def node_port(value, service_type: str) -> int:
    """--node-port N (0: choose one); only with --type NodePort."""
    if value in (None, "", 0):
        return 0
    text = str(value)
    low, high = NODE_PORTS
    if service_type != "NodePort":
        raise MinidockerError(f"--node-port {text} needs --type NodePort")
    if not text.isdigit() or not low <= int(text) <= high:
        raise MinidockerError(f"invalid --node-port {text!r}: accepted are {low}-{high}")
    return int(text)


def service_range(text: str, source: str):
    """The VIP range: an IPv4 network of at least 4 addresses."""
    from minidocker.network import subnets
    try:
        return subnets.service_range(text, source)
    except subnets.SubnetError as exc:
        raise MinidockerError(str(exc)) from None
