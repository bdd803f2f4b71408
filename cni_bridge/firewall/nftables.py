"""nftables backend: our own `ip minidocker` / `ip6 minidocker` tables,
read with `nft -a list table` and changed by one `nft -f -` batch (one
transaction for both families).

ADD adds the tables and chains (idempotent) and the attachment's rules.
DEL deletes the rules carrying its comment by handle, and a table that no
longer holds any rule. No forward accept rules: in nftables an accept in our
table cannot overrule a drop in another table at the same hook, so they
would change nothing (the iptables backend adds them where FORWARD drops).
"""
from __future__ import annotations

from cni_bridge.firewall.plan import (COMMENT_PREFIX, NFT_CHAINS, NFT_TABLE, Attachment, Driver, Lock, Pending,
                                 decide, isolation_plan, network_prefix, plan)
from cni_bridge.proc import Proc

FAMILY = {4: "ip", 6: "ip6"}


def _comment(line: str) -> str | None:
    """What `comment "([^"]*)"` finds (no `re`: ~5 ms of a plugin's start)."""
    start = line.find('comment "') + 9
    end = line.find('"', start) if start >= 9 else -1
    return line[start:end] if end >= 0 else None


def render(rule: tuple, comment: str) -> list[tuple[str, str]]:
    """A plan entry -> [(chain, rule expression)]."""
    kind, fam = rule[0], rule[1]
    a = FAMILY[fam]
    c = f'comment "{comment}"'
    if kind == "masq_skip":
        _, _, ip, cidr = rule
        return [("postrouting", f"{a} saddr {ip} {a} daddr {cidr} return {c}")]
    if kind == "masq":
        _, _, ip, subnet = rule
        mcast = "224.0.0.0/4" if fam == 4 else "ff00::/8"
        return [("postrouting", f"{a} saddr {ip} {a} daddr != {subnet} {a} daddr != {mcast} masquerade {c}")]
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
    if kind in ("iso", "icc", "int_out", "int_in"):
        _, _, ip, br = rule
        match = {"iso": f'iifname "{br}" oifname != "{br}" {a} saddr {ip} ct status & dnat == 0 jump isolation',
                 "icc": f'iifname "{br}" oifname "{br}" {a} saddr {ip} ct status & dnat == 0 drop',
                 "int_out": f'iifname "{br}" oifname != "{br}" {a} saddr {ip} drop',
                 "int_in": f'oifname "{br}" iifname != "{br}" {a} daddr {ip} drop'}[kind]
        return [("forward", f"{match} {c}")]
    if kind == "iso_net":
        _, _, br = rule
        return [("isolation", f'oifname "{br}" drop {c}')]
    raise ValueError(kind)


def parse_listing(text: str) -> list[tuple[str, str, int, str]]:
    """[(chain, comment or "", handle, rule text)] of one listed table."""
    out, chain = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("chain "):
            chain = line.split()[1]
        elif chain and "# handle" in line and not line.startswith(("type ", "policy ", "table ")):
            out.append((chain, _comment(line) or "", int(line.rsplit("# handle", 1)[1]), line))
    return out


def _read(families) -> dict[int, list[tuple[str, str, int, str]] | None]:
    """family -> our table's rules, or None when the table does not exist."""
    procs = {fam: Proc(["nft", "-a", "list", "table", FAMILY[fam], NFT_TABLE]) for fam in families}
    out = {}
    for fam, p in procs.items():
        rc, text, _err = p.wait()
        out[fam] = parse_listing(text) if rc == 0 else None
    return out


class NftDriver(Driver):
    name = "nftables"

    def setup(self, att: Attachment) -> Pending:
        rules = plan(att)
        families = sorted({r[1] for r in rules} | {r[1] for r in isolation_plan(att)})
        lock = Lock()
        try:
            current = _read(families)
            batch = []
            for fam in families:
                t = f"{FAMILY[fam]} {NFT_TABLE}"
                have = current.get(fam)
                if have is None:
                    batch.append(f"add table {t}")
                    batch += [f"add chain {t} {ch} {{ {decl} }}" if decl else f"add chain {t} {ch}"
                              for ch, decl in NFT_CHAINS.items()]
                for rule in rules:
                    if rule[1] == fam:
                        batch += [f"add rule {t} {ch} {expr}" for ch, expr in render(rule, att.comment)]
                shared = network_prefix(att.network)
                for rule in isolation_plan(att):
                    if rule[1] == fam and not any(ch == "isolation" and com == shared
                                                  for ch, com, _h, _t in have or []):
                        batch += [f"add rule {t} {ch} {expr}" for ch, expr in render(rule, shared)]
            procs = [Proc(["nft", "-f", "-"], "\n".join(batch) + "\n")] if batch else []
        except BaseException:
            lock.release()
            raise
        return Pending(lock, procs)

    def teardown(self, network: str, keep=None, owner: str | None = None, families=(4, 6)) -> Pending:
        prefix = network_prefix(network)
        lock = Lock()
        try:
            batch = []
            current = _read(families)
            verdicts = {fam: [(ch, h, decide(com or None, prefix, owner, keep), com)
                              for ch, com, h, _t in rules]
                        for fam, rules in current.items() if rules is not None}
            network_left = any(v == "keep" and com.startswith(prefix)
                               for vs in verdicts.values() for _c, _h, v, com in vs)
            for fam, vs in verdicts.items():
                t = f"{FAMILY[fam]} {NFT_TABLE}"
                drop = [(ch, h) for ch, h, v, _com in vs
                        if v == "drop" or (v == "net" and not network_left)]
                if len(drop) == len(vs):
                    batch.append(f"delete table {t}")
                else:
                    batch += [f"delete rule {t} {ch} handle {h}" for ch, h in drop]
            procs = [Proc(["nft", "-f", "-"], "\n".join(batch) + "\n")] if batch else []
        except BaseException:
            lock.release()
            raise
        return Pending(lock, procs)

    def owned(self, families=(4, 6)) -> dict[str, int]:
        counts: dict[str, int] = {}
        for rules in _read(families).values():
            for _ch, com, _h, _t in rules or []:
                if com.startswith(COMMENT_PREFIX):
                    counts[com] = counts.get(com, 0) + 1
        return counts

    def rules(self, families=(4, 6)) -> list[dict]:
        out = []
        for fam, rules in _read(families).items():
            for chain, com, handle, rule in rules or []:
                if com:
                    rule = rule.split(" # handle", 1)[0]
                    out.append({"backend": self.name, "family": fam, "table": NFT_TABLE,
                                "chain": chain, "handle": handle, "comment": com,
                                "text": f"nft {FAMILY[fam]} {NFT_TABLE} {chain}: {rule}"})
        return out
