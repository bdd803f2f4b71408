"""The well-known capability arguments (CNI's CONVENTIONS.md) and their keys.

Runtimes do not all spell them the same: containerd's go-cni marshals
`PortMapping`, `IPRanges`, `BandWidth` and `DNS` without JSON tags, so
`runtimeConfig.portMappings` arrives as `[{"HostPort": 8090, ...}]`. Go
plugins accept that because Go's JSON decoding matches keys
case-insensitively; `canonical` gives a Python plugin the same behaviour, for
the keys of the shapes below and for `args`, once, before any handler reads
the config. An exact key wins over one that only matches without case.
"""
from __future__ import annotations

# A shape: a dict of known keys -> their shape, a one-element list (every
# item has that shape), or None (a value taken as it is).
IP_RANGE = {"subnet": None, "rangeStart": None, "rangeEnd": None, "gateway": None}
RUNTIME_CONFIG = {
    "portMappings": [{"hostPort": None, "containerPort": None, "protocol": None, "hostIP": None}],
    "ipRanges": [[IP_RANGE]],
    "bandwidth": {"ingressRate": None, "ingressBurst": None, "egressRate": None, "egressBurst": None},
    "dns": {"servers": None, "searches": None, "options": None},
    "ips": None,
    "mac": None,
    "aliases": None,
    "infinibandGUID": None,
    "deviceID": None,
    "cgroupPath": None,
}
ARGS = {"cni": {"ips": None, "mac": None}}
CONFIG = {"runtimeConfig": RUNTIME_CONFIG, "args": ARGS}


def fold(value, shape):
    """`value` with the keys `shape` knows spelled as it spells them."""
    if isinstance(shape, list) and isinstance(value, list):
        return [fold(item, shape[0]) for item in value]
    if not isinstance(shape, dict) or not isinstance(value, dict):
        return value
    by_lower = {k.lower(): k for k in shape}
    out: dict = {}
    exact: dict = {}
    for key, item in value.items():
        name = by_lower.get(key.lower()) if isinstance(key, str) else None
        if name is None:
            out[key] = item
        elif name == key:
            exact[name] = item
        else:
            out.setdefault(name, item)
    out.update(exact)            # an exact key wins over one matched without case
    return {k: fold(v, shape[k]) if k in shape else v for k, v in out.items()}


def canonical(conf: dict) -> dict:
    """A plugin's config with `runtimeConfig` and `args` keys as the
    conventions spell them (the rest of the config is left alone)."""
    return fold(conf, CONFIG)
