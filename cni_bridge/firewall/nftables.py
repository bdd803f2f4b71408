"""nftables backend: our own `ip minidocker` / `ip6 minidocker` tables with
a fixed scaffold of rules that look packets up in sets and maps, and one
set element per published port, per address and per policy of each
attachment (kube-proxy's nftables layout): the number of rules never grows
and a new connection costs one hash lookup, whatever the number of
containers.

ADD adds its elements (and the scaffold, idempotently, when it is the
first attachment or the tables were flushed); DEL deletes exactly the
elements its ADD recorded in the owner index (owners.py), each as `add`
then `delete` in one batch (nft 1.0.6 has no `destroy`: the add makes a
missing element harmless), and the tables when the last attachment goes.
Neither lists the table. Every element carries its owner's comment, so
the listing path (GC, `network inspect`, an attachment the index does not
know) finds what belongs to whom. No forward accept rules: an accept in
our table cannot overrule a drop in another table at the same hook (an
established flow's `return` ends our forward chain, and only ours).
"""
from __future__ import annotations

from cni_bridge.firewall import owners
from cni_bridge.firewall.plan import (COMMENT_PREFIX, NFT_CHAINS, NFT_TABLE, SCAFFOLD_COMMENT, Attachment,
                                      Driver, Early, Lock, Pending, decide, isolation_plan, network_prefix, plan)
from cni_bridge.proc import Attempt, Proc

FAMILY = {4: "ip", 6: "ip6"}
ADDR = {4: "ipv4_addr", 6: "ipv6_addr"}

# set -> (key type, data type or "", flags); {T} is the family's address type (what an
# element of each does, in words: nftlisting.DOES)
SETS = {
    "ports": ("{T} . inet_proto . inet_service", "{T} . inet_service", ""),
    "ports_any": ("inet_proto . inet_service", "{T} . inet_service", ""),
    "pm_masq": ("{T} . {T} . inet_proto . inet_service", "", "interval"),
    "pm_local": ("{T} . inet_proto . inet_service", "", ""),
    "masq_skip": ("{T} . {T}", "", "interval"),
    "masq_local": ("{T} . ifname", "", ""),
    "masq": ("{T}", "", ""),
    "icc": ("ifname . {T} . ifname", "", ""),
    "stay": ("ifname . {T} . ifname", "", ""),
    "int_out": ("ifname . {T}", "", ""),
    "iso": ("ifname . {T}", "", ""),
    "int_in": ("ifname . {T}", "", ""),
}
# the scaffold: chain -> its rules, in order ({a} is ip or ip6); each looks one set up
_DNAT = ["fib daddr type local dnat {a} to {a} daddr . meta l4proto . th dport map @ports",
         "fib daddr type local dnat {a} to meta l4proto . th dport map @ports_any"]
SCAFFOLD = {
    "prerouting": _DNAT,
    "output": _DNAT,
    "postrouting": ["ct status dnat {a} saddr . {a} daddr . meta l4proto . th dport @pm_masq masquerade",
                    "ip saddr 127.0.0.0/8 ip daddr . meta l4proto . th dport @pm_local masquerade",
                    "{a} saddr . {a} daddr @masq_skip return",
                    "{a} saddr . oifname @masq_local return",
                    "{a} saddr @masq {a} daddr != {mcast} masquerade"],
    # an established flow's packets leave at once: every forward rule below
    # is about which connections may start (as the iptables backend's
    # MINIDOCKER-POLICY); without this, each forwarded packet and ACK made
    # the seven lookups below
    "forward": ["ct state established,related return",
                "ct status & dnat == 0 iifname . {a} saddr . oifname @icc drop",
                "iifname . {a} saddr . oifname @stay return",
                "iifname . {a} saddr @int_out drop",
                "ct status & dnat == 0 iifname . {a} saddr @iso jump isolation",
                "oifname . {a} daddr . iifname @stay return",
                "oifname . {a} daddr @int_in drop"],
    "isolation": ["oifname . {a} daddr @iso drop"],   # towards an endpoint of another isolated network
}


def _set_looked_up(rule: str) -> str | None:
    """The set a rule looks up (`@name`), without `re` on the plugin's path."""
    at = rule.find("@")
    while at >= 0:
        end = at + 1
        while end < len(rule) and (rule[end].isalnum() or rule[end] == "_"):
            end += 1
        if end > at + 1:
            return rule[at + 1:end]
        at = rule.find("@", end)
    return None


def scaffold_rules(fam: int) -> list[tuple[str, str]]:
    a, mcast = FAMILY[fam], "224.0.0.0/4" if fam == 4 else "ff00::/8"
    return [(ch, r.format(a=a, mcast=mcast)) for ch, rs in SCAFFOLD.items() for r in rs
            if fam == 4 or "127.0.0.0/8" not in r]


def _name(s: str) -> str:
    return f'"{s}"'


def render(rule: tuple, att: Attachment) -> list[tuple[str, str, str]]:
    """A plan entry -> [(set, element key, data or "")]. The network's
    isolation rule (iso_net) needs no element: the isolation chain drops
    towards any endpoint of an isolated network, each of which has an
    `iso` element of its own."""
    kind, br = rule[0], _name(att.bridge)
    if kind == "masq_skip":
        _, _, ip, cidr = rule
        return [("masq_skip", f"{ip} . {cidr}", "")]
    if kind == "masq":
        _, _, ip, _subnet = rule
        return [("masq", ip, ""), ("masq_local", f"{ip} . {br}", "")]
    if kind == "dnat":
        _, _, proto, hip, hport, ip, cport = rule
        if hip and hip not in ("0.0.0.0", "::"):
            return [("ports", f"{hip} . {proto} . {hport}", f"{ip} . {cport}")]
        return [("ports_any", f"{proto} . {hport}", f"{ip} . {cport}")]
    if kind == "pm_masq":
        _, _, proto, subnet, ip, cport = rule
        return [("pm_masq", f"{subnet} . {ip} . {proto} . {cport}", "")]
    if kind == "pm_local":
        _, _, proto, ip, cport = rule
        return [("pm_local", f"{ip} . {proto} . {cport}", "")]
    if kind in ("iso", "icc", "int_out", "int_in"):
        _, _, ip, brname = rule
        b = _name(brname)
        if kind == "icc":
            return [("icc", f"{b} . {ip} . {b}", "")]
        return [(kind, f"{b} . {ip}", ""), ("stay", f"{b} . {ip} . {b}", "")]
    if kind == "iso_net":
        return []
    raise ValueError(kind)


def elements(att: Attachment) -> dict[int, list[tuple[str, str, str]]]:
    """family -> the attachment's elements, each once (two port maps to one
    container port share their hairpin element); an address's
    nonMasqueradeCIDRs are merged first (an interval set refuses overlaps;
    `ipaddress`, ~4.5 ms to import, only then)."""
    out: dict[int, list[tuple[str, str, str]]] = {}
    skip: dict[tuple[int, str], list] = {}
    for rule in plan(att):
        if rule[0] == "masq_skip":
            skip.setdefault((rule[1], rule[2]), []).append(rule[3])
            continue
        fam_out = out.setdefault(rule[1], [])
        if rule[0] == "masq" and (rule[1], rule[2]) in skip:
            import ipaddress
            nets = [ipaddress.ip_network(cidr, strict=False) for cidr in skip.pop((rule[1], rule[2]))]
            for net in ipaddress.collapse_addresses(nets):
                fam_out.append(("masq_skip", f"{rule[2]} . {net}", ""))
        for el in render(rule, att):
            if el not in fam_out:
                fam_out.append(el)
    return out


def _element(key: str, data: str, comment: str = "") -> str:
    c = f' comment "{comment}"' if comment else ""
    return f"{{ {key}{c}{' : ' + data if data else ''} }}"


def _scaffold(fam: int) -> list[str]:
    """The table, sets and chains (each `add` is idempotent) and the chains'
    rules (flushed and added again: one transaction, so no packet sees them
    missing)."""
    t = f"{FAMILY[fam]} {NFT_TABLE}"
    out = [f"add table {t}"]
    for name, (key, data, flags) in SETS.items():
        if fam == 6 and name == "pm_local":
            continue
        kind = "map" if data else "set"
        spec = f"type {key}" + (f" : {data}" if data else "")
        out.append(f"add {kind} {t} {name} {{ {spec.replace('{T}', ADDR[fam])};"
                   + (f" flags {flags};" if flags else "") + " }")
    for ch, decl in NFT_CHAINS.items():
        out.append(f"add chain {t} {ch} {{ {decl} }}" if decl else f"add chain {t} {ch}")
        out.append(f"flush chain {t} {ch}")
    out += [f'add rule {t} {ch} {expr} comment "{SCAFFOLD_COMMENT}"' for ch, expr in scaffold_rules(fam)]
    return out


def _add(fam: int, els, comment: str) -> list[str]:
    t = f"{FAMILY[fam]} {NFT_TABLE}"
    return [f"add element {t} {s} {_element(k, d, comment)}" for s, k, d in els]


def _delete(fam: int, els) -> list[str]:
    """Deletes that do not fail on an element already gone: each added first."""
    t = f"{FAMILY[fam]} {NFT_TABLE}"
    return ([f"add element {t} {s} {_element(k, d)}" for s, k, d in els]
            + [f"delete element {t} {s} {_element(k, '')}" for s, k, _d in els])


def _read(families) -> dict[int, tuple[list, list] | None]:
    """family -> our table's (rules, elements), or None when the table does not exist.
    The listing reader (and its `re`) is imported here: ADD and DEL of an
    attachment the owner index knows read no listing."""
    from cni_bridge.firewall import nftlisting
    procs = {fam: Proc(["nft", "-a", "list", "table", FAMILY[fam], NFT_TABLE]) for fam in families}
    out = {}
    for fam, p in procs.items():
        rc, text, _err = p.wait()
        out[fam] = nftlisting.parse_table(text) if rc == 0 else None
    return out


def _listed_teardown(families, prefix: str, owner: str | None, keep) -> list[str]:
    """The batch that removes, as listed now, the elements (and any rules of
    an older layout) the verdict drops; a table left without any goes."""
    batch = []
    for fam, found in _read(families).items():
        if found is None:
            continue
        t = f"{FAMILY[fam]} {NFT_TABLE}"
        rules, els = found
        drop_els = [(s, k, d) for s, k, d, com in els if decide(com or None, prefix, owner, keep) == "drop"]
        kept_els = [e for e in els if decide(e[3] or None, prefix, owner, keep) != "drop"]
        drop_rules = [(ch, h) for ch, com, h, _t in rules if com.startswith(COMMENT_PREFIX)
                      and decide(com, prefix, owner, keep) in ("drop", "net")]
        kept_rules = [r for r in rules if r[1].startswith(COMMENT_PREFIX)
                      and decide(r[1], prefix, owner, keep) not in ("drop", "net")]
        if not kept_els and not kept_rules:
            batch.append(f"delete table {t}")
            continue
        batch += [f"delete element {t} {s} {_element(k, '')}" for s, k, _d in drop_els]
        batch += [f"delete rule {t} {ch} handle {h}" for ch, h in drop_rules]
    return batch


def _dnat_rules(fam: int, els, comment: str) -> list[str]:
    """A published port as a rule of its own, after the maps' rules: for a
    host port another attachment's element already maps (CNI's portmap
    allows that; the first one wins, as with portmap)."""
    t, a = f"{FAMILY[fam]} {NFT_TABLE}", FAMILY[fam]
    out = []
    for s, key, data in els:
        if s not in ("ports", "ports_any"):
            continue
        parts = key.split(" . ")
        dst = f"{a} daddr {parts[0]} " if s == "ports" else ""
        ip, _dot, port = data.rpartition(" . ")
        to = f"[{ip}]:{port}" if fam == 6 else f"{ip}:{port}"
        out += [f'add rule {t} {ch} fib daddr type local {dst}{parts[-2]} dport {parts[-1]} dnat to {to} '
                f'comment "{comment}"' for ch in ("prerouting", "output")]
    return out


def _batch(lines: list[str], fallback=None) -> Attempt:
    """One `nft -f -` transaction started now; when it fails, the batch
    `fallback(error)` makes (if any) runs instead."""
    def instead(err: str) -> None:
        again = fallback(err)
        if again:
            Proc(["nft", "-f", "-"], "\n".join(again) + "\n").check()
    return Attempt(Proc(["nft", "-f", "-"], "\n".join(lines) + "\n") if lines else None,
                   instead if fallback else None)


class NftDriver(Driver):
    name = "nftables"

    def commit_tools(self, families, early: Early | None = None, publishes: bool = True) -> list[list[str]]:
        return [["nft", "-f", "-"]]   # every attachment has elements of its own

    def setup(self, att: Attachment, repair: bool = False, early: Early | None = None) -> Pending:
        els = elements(att)
        families = sorted(set(els) | {r[1] for r in isolation_plan(att)})
        lock = early.lock if early else Lock()
        try:
            first = owners.empty()
            entry = {"elements": {str(f): [list(e) for e in v] for f, v in els.items()}}
            owners.write(network_prefix(att.network), att.comment, entry)
            adds = [line for fam in families for line in _add(fam, els.get(fam, []), att.comment)]
            scaffold = [line for fam in families for line in _scaffold(fam)]

            def retry(err: str) -> list[str]:
                if "File exists" not in err:
                    return scaffold + adds     # our tables were flushed: made again
                # a host port already mapped to another attachment: a rule of its own
                owners.write(network_prefix(att.network), att.comment, {**entry, "rules": True})
                return [line for fam in families for line in
                        _add(fam, [e for e in els.get(fam, []) if e[0] not in ("ports", "ports_any")], att.comment)
                        + _dnat_rules(fam, els.get(fam, []), att.comment)]
            # repair (network reload): the scaffold again only when it is broken,
            # since its rebuild flushes our chains
            rebuild = first or (repair and not self.scaffold_intact(families))
            procs = [_batch(scaffold + adds if rebuild else adds, retry)]
        except BaseException:
            lock.release()
            raise
        return Pending(lock, procs)

    def teardown(self, network: str, keep=None, owner: str | None = None, families=(4, 6)) -> Pending:
        prefix = network_prefix(network)
        lock = Lock()
        try:
            entry = owners.take(prefix, owner, keep)
            if entry is None or entry.get("rules") or owners.empty():
                # unknown to the index, a GC, rules of its own (a shared host port),
                # or the last attachment (a small table then)
                families = sorted(set(families) | {int(f) for f in (entry or {}).get("elements", {})})
                batch = _listed_teardown(families, prefix, owner, keep)
                procs = [_batch(batch)]
            else:
                batch = [line for fam, els in entry["elements"].items()
                         for line in _delete(int(fam), [tuple(e) for e in els])]
                procs = [_batch(batch, lambda _err: _listed_teardown(families, prefix, owner, keep))]
        except BaseException:
            lock.release()
            raise
        return Pending(lock, procs)

    def count(self, att: Attachment) -> int:
        return sum(len(v) for v in elements(att).values())

    def owned(self, families=(4, 6)) -> dict[str, int]:
        counts: dict[str, int] = {}
        for found in _read(families).values():
            rules, els = found or ([], [])
            for com in [r[1] for r in rules] + [e[3] for e in els]:
                if com.startswith(COMMENT_PREFIX):
                    counts[com] = counts.get(com, 0) + 1
        return counts

    def scaffold_intact(self, families=(4, 6)) -> bool:
        for fam, found in _read(families).items():
            if found is None:
                continue   # made by the next ADD
            have: dict[str, int] = {}
            for ch, com, _h, _t in found[0]:
                if com == SCAFFOLD_COMMENT:
                    have[ch] = have.get(ch, 0) + 1
            want: dict[str, int] = {}
            for ch, _expr in scaffold_rules(fam):
                want[ch] = want.get(ch, 0) + 1
            if any(have.get(ch, 0) < n for ch, n in want.items()):
                return False
        return True

    def rules(self, families=(4, 6)) -> list[dict]:
        """Our scaffold rules, then every element as an entry of its own
        (handle 0, with "set", "key" and "data"; "chain" and "lookup_handle"
        name the rule that looks the set up)."""
        from cni_bridge.firewall import nftlisting
        out = []
        for fam, found in _read(families).items():
            if found is None:
                continue
            a = FAMILY[fam]
            user = {}
            for chain, com, handle, rule in found[0]:
                looked_up = _set_looked_up(rule)
                if looked_up and looked_up not in user:
                    user[looked_up] = (chain, handle)
                if com:
                    rule = rule.split(" # handle", 1)[0]
                    out.append({"backend": self.name, "family": fam, "table": NFT_TABLE,
                                "chain": chain, "handle": handle, "comment": com,
                                "text": f"nft {a} {NFT_TABLE} {chain}: {rule}"})
            for aset, key, data, com in found[1]:
                chain, handle = user.get(aset, ("", 0))
                out.append({"backend": self.name, "family": fam, "table": NFT_TABLE, "chain": chain,
                            "handle": 0, "lookup_handle": handle, "comment": com,
                            "set": aset, "key": key, "data": data,
                            "text": f"nft add element {a} {NFT_TABLE} {aset} {_element(key, data, com)}"
                                    f" # {nftlisting.describe(aset, key, data)}"})
        return out
