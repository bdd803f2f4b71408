"""nftables backend: our own `ip minidocker` / `ip6 minidocker` tables,
changed by one `nft -f -` batch.

`add table` and `add chain` are idempotent, so ADD is a single exec. DEL lists
the ruleset with handles, deletes the rules carrying its comment, and deletes
a table that no longer holds any rule.
"""
from __future__ import annotations

import re

from cni_bridge.firewall import (COMMENT_PREFIX, NFT_CHAINS, NFT_TABLE, Attachment, Driver, Locked,
                                 network_prefix, plan)
from cni_bridge.firewall.run import tool

FAMILY = {4: "ip", 6: "ip6"}
_RULE_RE = re.compile(r'comment "([^"]+)".*# handle (\d+)\s*$')


def _daddr_kw(fam: int) -> str:
    return "ip" if fam == 4 else "ip6"


def render(rule: tuple, comment: str) -> list[tuple[str, str]]:
    """A plan entry -> [(chain, rule expression)]."""
    kind, fam = rule[0], rule[1]
    a = _daddr_kw(fam)
    c = f'comment "{comment}"'
    if kind == "masq":
        _, _, ip, subnet = rule
        mcast = "224.0.0.0/4" if fam == 4 else "ff00::/8"
        return [("postrouting", f"{a} saddr {ip} {a} daddr != {subnet} {a} daddr != {mcast} masquerade {c}")]
    if kind == "fwd":
        _, _, ip, br = rule
        return [("forward", f'{a} daddr {ip} oifname "{br}" accept {c}'),
                ("forward", f'{a} saddr {ip} iifname "{br}" accept {c}')]
    if kind == "dnat":
        _, _, proto, hip, hport, ip, cport = rule
        dst = f"{a} daddr {hip} " if hip and hip not in ("0.0.0.0", "::") else ""
        to = f"[{ip}]:{cport}" if fam == 6 else f"{ip}:{cport}"
        expr = f"fib daddr type local {dst}{proto} dport {hport} dnat to {to} {c}"
        return [("prerouting", expr), ("output", expr)]
    if kind == "pm_masq":
        _, _, proto, subnet, ip, cport = rule
        return [("postrouting", f"{a} saddr {subnet} {a} daddr {ip} {proto} dport {cport} "
                                f"ct status dnat masquerade {c}")]
    if kind == "pm_local":
        _, _, proto, ip, cport = rule
        return [("postrouting", f"ip saddr 127.0.0.0/8 ip daddr {ip} {proto} dport {cport} masquerade {c}")]
    raise ValueError(kind)


def _list() -> dict[int, list[tuple[str, str, int]]]:
    """family -> [(chain, comment or "", handle)] of our tables, one exec."""
    out: dict[int, list[tuple[str, str, int]]] = {}
    proc = tool(["nft", "-a", "list", "ruleset"], check=False)
    fam = chain = None
    for raw in proc.stdout.splitlines():
        line = raw.strip()
        if line.startswith("table "):
            parts = line.split()
            fam = {"ip": 4, "ip6": 6}.get(parts[1]) if parts[2] == NFT_TABLE else None
            if fam:
                out.setdefault(fam, [])
            chain = None
        elif fam is None:
            continue
        elif line.startswith("chain "):
            chain = line.split()[1]
        elif chain and "# handle" in line and not line.startswith(("type ", "policy ")):
            m = _RULE_RE.search(line)
            handle = int(line.rsplit("# handle", 1)[1])
            out[fam].append((chain, m.group(1) if m else "", handle))
    return out


class NftDriver(Driver):
    name = "nftables"

    def setup(self, att: Attachment) -> None:
        batch = []
        rules = plan(att)
        for fam in sorted({r[1] for r in rules}):
            t = f"{FAMILY[fam]} {NFT_TABLE}"
            batch.append(f"add table {t}")
            for chain, decl in NFT_CHAINS.items():
                batch.append(f"add chain {t} {chain} {{ {decl} }}")
            for rule in rules:
                if rule[1] == fam:
                    for chain, expr in render(rule, att.comment):
                        batch.append(f"add rule {t} {chain} {expr}")
        if batch:
            with Locked():
                tool(["nft", "-f", "-"], "\n".join(batch) + "\n")

    def teardown(self, network: str, keep=None, owner: str | None = None, families=(4, 6)) -> int:
        prefix = network_prefix(network)
        removed = 0
        with Locked():
            batch = []
            for fam, rules in _list().items():
                t = f"{FAMILY[fam]} {NFT_TABLE}"
                drop = [(ch, h) for ch, com, h in rules if com.startswith(prefix) and (
                    com == owner if owner is not None else keep is not None and com not in keep)]
                removed += len(drop)
                if len(drop) == len(rules):
                    batch.append(f"delete table {t}")
                else:
                    batch += [f"delete rule {t} {ch} handle {h}" for ch, h in drop]
            if batch:
                tool(["nft", "-f", "-"], "\n".join(batch) + "\n")
        return removed

    def owned(self, families=(4, 6)) -> dict[str, int]:
        counts: dict[str, int] = {}
        for fam, rules in _list().items():
            for _ch, com, _h in rules:
                if com.startswith(COMMENT_PREFIX):
                    counts[com] = counts.get(com, 0) + 1
        return counts
