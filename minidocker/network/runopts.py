"""`run`'s network options checked and put in the record's shape:
-p/-P, --ip, --ip6, --dns, --add-host, --network-alias, --mac-address.

Each bad value is a one-line error naming it and what is accepted (code
125), raised before anything exists. Cheap when no option is given: `run
--network none` pays for nothing here.
"""
from __future__ import annotations

from minidocker.errors import MinidockerError

_HOST_RE = r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,252})$"
_MAC_RE = r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"


def _bad(msg: str) -> MinidockerError:
    return MinidockerError(msg, 125)


def _address(value: str, what: str, accepted: str) -> str:
    import ipaddress
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise _bad(f"invalid {what} {value!r}: {accepted}") from None


def parse_dns(values) -> list[str]:
    return [_address(v, "--dns", "an IPv4 or IPv6 address, e.g. --dns 9.9.9.9") for v in values]


def parse_add_host(values) -> list[str]:
    """'name:ip' (or 'name=ip'); IPv6 after the first ':' ('h:::1', 'h:[::1]')."""
    out = []
    accepted = "accepted: NAME:IP, e.g. --add-host db:10.0.0.5"
    for v in values:
        import re   # (not at import: most runs give no --add-host)
        sep = "=" if "=" in v else ":"
        name, found, ip = v.partition(sep)
        if not found or not re.match(_HOST_RE, name):
            raise _bad(f"invalid --add-host {v!r}: {accepted}")
        ip = ip[1:-1] if ip.startswith("[") and ip.endswith("]") else ip
        ip = _address(ip, "--add-host address in", accepted) if ip else ""
        if not ip:
            raise _bad(f"invalid --add-host {v!r}: {accepted}")
        out.append(f"{name}:{ip}")
    return out


def parse(opts, mode) -> dict:
    """The HostConfig / NetworkingConfig parts of the record."""
    out = {"PortBindings": {}, "Dns": parse_dns(opts.dns), "ExtraHosts": parse_add_host(opts.add_hosts),
           "EndpointsConfig": {}}
    if opts.publish or opts.publish_all:
        from minidocker.network import ports, publish
        mappings = []
        for spec in opts.publish:
            try:
                mappings += ports.parse_publish(spec)
            except ports.PortSpecError as exc:
                raise _bad(str(exc)) from None
        try:
            ports.check_conflicts(mappings)
        except ports.PortSpecError as exc:
            raise _bad(str(exc)) from None
        if mode.ignores_ports:
            import sys
            print(f"WARNING: published ports are discarded when using {mode.name} network mode",
                  file=sys.stderr)
        elif not mode.accepts_ports:
            raise _bad(f"conflicting options: port publishing and --network {mode.spec}")
        else:
            out["PortBindings"] = publish.to_bindings(mappings)
    wants = {"--ip": opts.ip, "--ip6": opts.ip6, "--network-alias": opts.aliases,
             "--mac-address": opts.mac}
    given = [k for k, v in wants.items() if v]
    if given and not mode.accepts_ports:
        raise _bad(f"{', '.join(given)} need a bridge, user or CNI network, not --network {mode.spec}")
    if not given:
        return out
    if opts.aliases and mode.spec == "bridge":
        raise _bad("--network-alias works on user-defined networks only, not the default bridge")
    import re
    for alias in opts.aliases:
        if not re.match(_HOST_RE, alias):
            raise _bad(f"invalid --network-alias {alias!r}: a host name (letters, digits, '.', '-', '_')")
    if opts.mac and (not re.match(_MAC_RE, opts.mac) or int(opts.mac[:2], 16) & 1):
        raise _bad(f"invalid --mac-address {opts.mac!r}: a unicast MAC like 02:42:ac:11:00:02")
    ipam = {}
    if opts.ip:
        ipam["IPv4Address"] = opts.ip
    if opts.ip6:
        ipam["IPv6Address"] = opts.ip6
    from minidocker.network.settings import endpoint_config
    out["EndpointsConfig"][mode.spec] = endpoint_config(ipam, opts.aliases, opts.mac)
    return out
