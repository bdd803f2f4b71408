"""The nftables rendering of service plans, as kube-proxy's nftables mode:
one verdict map (VIP . protocol . port) -> per-service chain, and in that
chain a `numgen random mod N` vmap over the endpoint chains, so a packet's
cost does not grow with the number of services.

Every change is one `nft -f` transaction holding only the changed service's
objects (adding one service to 1,000 touches that one). It is written to
succeed whatever the kernel holds: `add` of what exists is a no-op, and
every deletion is preceded by an `add` of the same object, so a table
flushed by someone else is rebuilt rather than failing the batch.
"""
from __future__ import annotations

import subprocess

from minidocker.errors import MinidockerError
from minidocker.services import plan as P
from minidocker.services.spec import AFFINITY_SECONDS

T = f"ip {P.NFT_TABLE}"
_BASE = {  # chain -> (hook declaration, its rules)
    "nat-prerouting": ("type nat hook prerouting priority dstnat; policy accept;",
                       [f"jump {P.NFT_DISPATCH}"]),
    "nat-output": ("type nat hook output priority -100; policy accept;",
                   [f"jump {P.NFT_DISPATCH}"]),
    "nat-postrouting": ("type nat hook postrouting priority srcnat; policy accept;",
                        [f"meta mark & {P.MASQ_MARK:#x} == 0 return",
                         f"meta mark set meta mark ^ {P.MASQ_MARK:#x}", "masquerade fully-random"]),
    # filter - 10: a service without endpoints is refused before anything accepts it
    "filter-input": ("type filter hook input priority -10; policy accept;",
                     ["ct state new fib daddr type local meta l4proto . th dport "
                      f"vmap @{P.NFT_NO_EP_NODEPORT_MAP}"]),
    "filter-forward": ("type filter hook forward priority -10; policy accept;",
                       [f"ct state new ip daddr . meta l4proto . th dport vmap @{P.NFT_NO_EP_MAP}"]),
    "filter-output": ("type filter hook output priority -10; policy accept;",
                      [f"ct state new ip daddr . meta l4proto . th dport vmap @{P.NFT_NO_EP_MAP}",
                       "ct state new fib daddr type local meta l4proto . th dport "
                       f"vmap @{P.NFT_NO_EP_NODEPORT_MAP}"]),
    P.NFT_DISPATCH: (None, [f"ip daddr . meta l4proto . th dport vmap @{P.NFT_SERVICE_MAP}",
                            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport "
                            f"vmap @{P.NFT_NODEPORT_MAP}"]),
    P.NFT_REJECT: (None, ["reject"]),
}
_MAPS = {P.NFT_SERVICE_MAP: "ipv4_addr . inet_proto . inet_service",
         P.NFT_NO_EP_MAP: "ipv4_addr . inet_proto . inet_service",
         P.NFT_NODEPORT_MAP: "inet_proto . inet_service",
         P.NFT_NO_EP_NODEPORT_MAP: "inet_proto . inet_service"}


def scaffold() -> list[str]:
    """The table, its maps and base chains: idempotent (a base chain is
    flushed and refilled in the same transaction, so no packet sees it empty)."""
    out = [f"add table {T}"]
    for name, kind in _MAPS.items():
        out.append(f"add map {T} {name} {{ type {kind} : verdict; }}")
    for name, (hook, rules) in _BASE.items():
        out.append(f"add chain {T} {name}" + (f" {{ {hook} }}" if hook else ""))
    for name, (_hook, rules) in _BASE.items():
        out.append(f"flush chain {T} {name}")
        out += [f"add rule {T} {name} {rule}" for rule in rules]
    return out


def _port_rules(p: dict, port: dict) -> list[str]:
    """The rules of one service port's chains (it has endpoints)."""
    note = f'comment "{p["comment"]}"'
    out = []
    for ep in port["endpoints"]:
        chain = ep["chain"]
        out.append(f"add rule {T} {chain} ip saddr {ep['ip']} meta mark set meta mark | "
                   f"{P.MASQ_MARK:#x} {note}")   # hairpin: the backend reaching itself
        update = f"update @{ep['affinity_set']} {{ ip saddr }} " if p["affinity"] else ""
        out.append(f"add rule {T} {chain} {update}meta l4proto {port['proto']} "
                   f"dnat to {ep['ip']}:{port['target']} {note}")
    if p["affinity"]:
        out += [f"add rule {T} {port['chain']} ip saddr @{ep['affinity_set']} goto {ep['chain']} {note}"
                for ep in port["endpoints"]]
    n = len(port["endpoints"])
    choices = ", ".join(f"{i} : goto {ep['chain']}" for i, ep in enumerate(port["endpoints"]))
    out.append(f"add rule {T} {port['chain']} numgen random mod {n} vmap {{ {choices} }} {note}")
    if port["node_port"]:
        out.append(f"add rule {T} {port['ext_chain']} meta mark set meta mark | {P.MASQ_MARK:#x} {note}")
        out.append(f"add rule {T} {port['ext_chain']} goto {port['chain']} {note}")
    return out


def _key(key: tuple) -> str:
    return " . ".join(str(k) for k in key)


def script(old: dict | None, new: dict | None, with_scaffold: bool = True) -> str:
    """The transaction taking the kernel from plan old to plan new."""
    o, n = P.objects(old), P.objects(new)
    out = scaffold() if with_scaffold else []
    for s in sorted(n["sets"] | o["sets"]):
        out.append(f"add set {T} {s} {{ type ipv4_addr; flags dynamic,timeout; "
                   f"timeout {AFFINITY_SECONDS}s; }}")
    for c in sorted(n["chains"] | o["chains"]):
        out += [f"add chain {T} {c}", f"flush chain {T} {c}"]
    for port in (new or {}).get("ports", []):
        if port["endpoints"]:
            out += _port_rules(new, port)
    verdicts = {"svc": (P.NFT_SERVICE_MAP, lambda k: f"goto {_chain_of(new or old, k)}"),
                "no_ep": (P.NFT_NO_EP_MAP, lambda k: f"goto {P.NFT_REJECT}"),
                "np": (P.NFT_NODEPORT_MAP, lambda k: f"goto {_chain_of(new or old, k, ext=True)}"),
                "np_no_ep": (P.NFT_NO_EP_NODEPORT_MAP, lambda k: f"goto {P.NFT_REJECT}")}
    note = f'comment "{(new or old)["comment"]}"'
    for kind, (mapname, verdict) in verdicts.items():
        for k in sorted(n[kind]):
            out.append(f"add element {T} {mapname} {{ {_key(k)} {note} : {verdict(k)} }}")
        for k in sorted(o[kind] - n[kind]):   # add first: the delete cannot fail
            out.append(f"add element {T} {mapname} {{ {_key(k)} {note} : "
                       f"{_verdict_old(old, kind, k)} }}")
            out.append(f"delete element {T} {mapname} {{ {_key(k)} }}")
    out += [f"delete chain {T} {c}" for c in sorted(o["chains"] - n["chains"])]
    out += [f"delete set {T} {s}" for s in sorted(o["sets"] - n["sets"])]
    return "\n".join(out) + "\n"


def _chain_of(p: dict, key: tuple, ext: bool = False) -> str:
    for port in p["ports"]:
        if ext and (port["proto"], port["node_port"]) == key:
            return port["ext_chain"]
        if not ext and (p["vip"], port["proto"], port["port"]) == key:
            return port["chain"]
    raise KeyError(key)


def _verdict_old(old: dict, kind: str, key: tuple) -> str:
    if kind == "svc":
        return f"goto {_chain_of(old, key)}"
    if kind == "np":
        return f"goto {_chain_of(old, key, ext=True)}"
    return f"goto {P.NFT_REJECT}"


def _nft(args: list[str], text: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["nft", *args], input=text, capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MinidockerError(f"cannot run nft: {exc}") from None


def apply(old: dict | None, new: dict | None, others: list[dict]) -> None:
    """Program the change of one service (every object here is its own).
    The scaffold is written with the backend's first service, and again
    when the batch fails without it (someone flushed the ruleset): left out,
    a change at 1,000 services costs half as much (nft reads less)."""
    first = not [o for o in others if o is not new]
    proc = _nft(["-f", "-"], script(old, new, first))
    if proc.returncode and not first:
        proc = _nft(["-f", "-"], script(old, new, True))
    if proc.returncode:
        raise MinidockerError(f"nft refused the rules of service {(new or old)['service']}: "
                              + " ".join(proc.stderr.split())[:300])


def bulk(plans: list[dict]) -> None:
    """Program many services that are not in the kernel yet, in one
    transaction (the benchmark's 5,000)."""
    text = "\n".join(scaffold()) + "\n" + "".join(script(None, p, False) for p in plans)
    proc = _nft(["-f", "-"], text)
    if proc.returncode:
        raise MinidockerError(f"nft refused the rules of {len(plans)} services: "
                              + " ".join(proc.stderr.split())[:300])


def drop() -> None:
    """The last service is gone: the table goes (add first: never fails)."""
    _nft(["-f", "-"], f"add table {T}\ndelete table {T}\n")


def rules(p: dict | None) -> list[str]:
    """The service's rules as the kernel holds them (inspect): its map
    elements (found by their comment) and the rules of its chains, from one
    listing of the table."""
    if not p:
        return []
    note = f'comment "{p["comment"]}"'
    chains = P.objects(p)["chains"]
    out, kind, name, body = [], "", "", []
    for line in _nft(["list", "table", "ip", P.NFT_TABLE]).stdout.splitlines():
        words = line.split()
        if words[:1] in (["chain"], ["map"]) and words[-1] == "{":
            kind, name, body = words[0], words[1], []
        elif words == ["}"] and kind:
            if kind == "chain" and name in chains:
                out += [f"{T} chain {name}: {b}" for b in body]
            elif kind == "map":
                elements = " ".join(body).partition("elements = {")[2].rpartition("}")[0]
                out += [f"{T} map {name}: {' '.join(e.split())}" for e in elements.split(",")
                        if note in e]
            kind = ""
        elif kind and line.strip():
            body.append(line.strip())
    return out
