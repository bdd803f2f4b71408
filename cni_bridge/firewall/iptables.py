"""iptables backend: rules in our own chains, read with `iptables-save` and
changed by one `iptables-restore --noflush` batch per address family.

Reading first (~2.5 ms) lets the batch create exactly what is missing (our
chains, the jumps into them, the network's shared rules) and lets DEL find
its rules by comment whether or not it knows the container's addresses.
Both families are read and written concurrently.
"""
from __future__ import annotations

from cni_bridge.firewall.plan import (CHAIN_DNAT, CHAIN_FORWARD, CHAIN_ISOLATION, CHAIN_POSTROUTING,
                                 COMMENT_PREFIX, SCAFFOLD_COMMENT, Attachment, Driver, Lock, Pending,
                                 decide, isolation_plan, network_plan, network_prefix, plan)
from cni_bridge.proc import Proc

TOOLS = {4: ("iptables-save", "iptables-restore"), 6: ("ip6tables-save", "ip6tables-restore")}
OUR_CHAINS = {"nat": (CHAIN_DNAT, CHAIN_POSTROUTING), "filter": (CHAIN_FORWARD, CHAIN_ISOLATION)}
_C = f"-m comment --comment {SCAFFOLD_COMMENT}"
# Our chains and the jumps into them: (table, chain, jump rule).
SCAFFOLD = [
    ("nat", CHAIN_DNAT, [f"-A PREROUTING -m addrtype --dst-type LOCAL {_C} -j {CHAIN_DNAT}",
                         f"-A OUTPUT -m addrtype --dst-type LOCAL {_C} -j {CHAIN_DNAT}"]),
    ("nat", CHAIN_POSTROUTING, [f"-A POSTROUTING {_C} -j {CHAIN_POSTROUTING}"]),
    ("filter", CHAIN_FORWARD, [f"-I FORWARD {_C} -j {CHAIN_FORWARD}"]),
    ("filter", CHAIN_ISOLATION, []),   # reached from MINIDOCKER-FORWARD only
]
_NOT_DNAT = "-m conntrack ! --ctstate DNAT"


def _host(ip: str) -> str:
    return f"{ip}/128" if ":" in ip else f"{ip}/32"


def render(rule: tuple, comment: str) -> list[tuple[str, str]]:
    """A plan entry -> [(table, `-A CHAIN ...` line)]."""
    kind, fam = rule[0], rule[1]
    c = f'-m comment --comment "{comment}"'
    if kind == "masq_skip":
        _, _, ip, cidr = rule
        return [("nat", f"-A {CHAIN_POSTROUTING} -s {_host(ip)} -d {cidr} {c} -j RETURN")]
    if kind == "masq":
        _, _, ip, subnet = rule
        return [("nat", f"-A {CHAIN_POSTROUTING} -s {_host(ip)} ! -d {subnet} {c} -j MASQUERADE")]
    if kind == "dnat":
        _, _, proto, hip, hport, ip, cport = rule
        dst = f"-d {_host(hip)} " if hip and hip not in ("0.0.0.0", "::") else ""
        to = f"[{ip}]:{cport}" if fam == 6 else f"{ip}:{cport}"
        return [("nat", f"-A {CHAIN_DNAT} {dst}-p {proto} -m {proto} --dport {hport} {c} "
                        f"-j DNAT --to-destination {to}")]
    if kind == "pm_masq":
        _, _, proto, subnet, ip, cport = rule
        return [("nat", f"-A {CHAIN_POSTROUTING} -s {subnet} -d {_host(ip)} -p {proto} -m {proto} "
                        f"--dport {cport} -m conntrack --ctstate DNAT {c} -j MASQUERADE")]
    if kind == "pm_local":
        _, _, proto, ip, cport = rule
        return [("nat", f"-A {CHAIN_POSTROUTING} -s 127.0.0.0/8 -d {_host(ip)} -p {proto} -m {proto} "
                        f"--dport {cport} {c} -j MASQUERADE")]
    if kind in ("iso", "icc", "int_out", "int_in"):
        # inserted: they must come before the forward accepts of MINIDOCKER-FORWARD
        _, _, ip, br = rule
        match = {"iso": f"-s {_host(ip)} -i {br} ! -o {br} {_NOT_DNAT}",
                 "icc": f"-s {_host(ip)} -i {br} -o {br} {_NOT_DNAT}",
                 "int_out": f"-s {_host(ip)} -i {br} ! -o {br}",
                 "int_in": f"-d {_host(ip)} -o {br} ! -i {br}"}[kind]
        target = CHAIN_ISOLATION if kind == "iso" else "DROP"
        return [("filter", f"-I {CHAIN_FORWARD} {match} {c} -j {target}")]
    if kind == "iso_net":
        _, _, br = rule
        return [("filter", f"-A {CHAIN_ISOLATION} -o {br} {c} -j DROP")]
    if kind == "fwd":
        _, _, subnet, br = rule
        return [("filter", f"-A {CHAIN_FORWARD} -d {subnet} -o {br} {c} -j ACCEPT"),
                ("filter", f"-A {CHAIN_FORWARD} -s {subnet} -i {br} {c} -j ACCEPT")]
    raise ValueError(kind)


class Saved:
    """One family's iptables-save: per table, its chains and `-A` lines."""

    def __init__(self, text: str):
        self.tables: dict[str, tuple[set[str], list[str]]] = {}
        self.policies: dict[tuple[str, str], str] = {}
        cur = table = None
        for line in text.splitlines():
            if line.startswith("*"):
                table = line[1:]
                cur = self.tables.setdefault(table, (set(), []))
            elif cur is None:
                continue
            elif line.startswith(":"):
                name, policy = (line[1:].split(" ") + ["-"])[:2]
                cur[0].add(name)
                self.policies[(table, name)] = policy
            elif line.startswith("-A "):
                cur[1].append(line)

    def policy(self, table: str, chain: str) -> str:
        return self.policies.get((table, chain), "-")

    def chains(self, table: str) -> set[str]:
        return self.tables.get(table, (set(), []))[0]

    def lines(self, table: str) -> list[str]:
        return self.tables.get(table, (set(), []))[1]


def _comment(line: str, prefix: str = COMMENT_PREFIX) -> str | None:
    """The first `--comment "?(<prefix>[^"\\s]*)"?` of a line (an empty
    prefix: any non-empty comment); not `re`: ~5 ms of a plugin's start."""
    at = line.find("--comment ")
    while at >= 0:
        start = end = at + 10 + line.startswith('"', at + 10)
        while end < len(line) and line[end] != '"' and not line[end].isspace():
            end += 1
        if line.startswith(prefix, start) and end > start:
            return line[start:end]
        at = line.find("--comment ", at + 1)
    return None


def _read(families) -> dict[int, Saved]:
    procs = {fam: Proc([TOOLS[fam][0]]) for fam in families}
    out = {}
    for fam, p in procs.items():
        rc, text, _err = p.wait()
        out[fam] = Saved(text if rc == 0 else "")
    return out


def _read_with_handles(families) -> tuple[dict[int, "Saved"], dict[tuple[int, str], dict[str, list[int]]]]:
    """iptables-save per family, and (family, table) -> chain -> the nft
    handles of its rules in order. Debian's iptables is iptables-nft: the
    n-th `-A CHAIN` line of iptables-save is the n-th rule of that chain in
    nft's listing, whose handle is what a trace event names (nft cannot
    show the xt comment itself). No handles without nft (they stay 0). The
    listings run concurrently with each other and with iptables-save."""
    from cni_bridge.firewall.nftables import FAMILY, parse_listing
    procs = {}
    for fam in families:
        for table in OUR_CHAINS:
            try:
                procs[(fam, table)] = Proc(["nft", "-a", "list", "table", FAMILY[fam], table], timeout=10)
            except Exception:  # noqa: BLE001 - a view: without nft there are no handles
                pass
    saved = _read(families)
    handles: dict[tuple[int, str], dict[str, list[int]]] = {}
    for key, p in procs.items():
        rc, text, _err = p.wait()
        chains = handles.setdefault(key, {})
        for chain, _com, handle, _text in (parse_listing(text) if rc == 0 else []):
            chains.setdefault(chain, []).append(handle)
    return saved, handles


def _forward_may_drop(saved: "Saved") -> bool:
    """Accept rules in FORWARD matter only where something there can drop:
    a DROP policy (Docker's hosts) or rules of others. On a clean host they
    would only cost a second commit (~14 ms) on the last DEL of a network."""
    if saved.policy("filter", "FORWARD") == "DROP":
        return True
    return any(l.split(" ", 2)[1] == "FORWARD" and f"-j {CHAIN_FORWARD}" not in l
               for l in saved.lines("filter")) or bool(saved.chains("filter") & {CHAIN_FORWARD})


def _tokens(line: str) -> frozenset:
    return frozenset(line.replace('"', "").split())


def _jump_spec(line: str) -> str:
    """"-A PREROUTING ... -j X" -> "PREROUTING X": enough to tell our jumps apart."""
    return line.split(" ", 2)[1] + " " + line.rsplit("-j ", 1)[-1]


def _restore_locked(families, batch_of) -> Pending:
    """Under the firewall lock: read the tables once, then one
    `iptables-restore --noflush` per family with batch_of(saved, family);
    the lock is held until the caller has waited for the batches."""
    lock = Lock()
    try:
        saved = _read(families)
        procs = []
        for fam in families:
            batch = batch_of(saved[fam], fam)
            if batch:
                procs.append(Proc([TOOLS[fam][1], "--noflush"], batch))
    except BaseException:
        lock.release()
        raise
    return Pending(lock, procs)


class IptablesDriver(Driver):
    name = "iptables"

    def setup(self, att: Attachment) -> Pending:
        rules: dict[int, list[tuple[str, str]]] = {}
        for rule in plan(att):
            rules.setdefault(rule[1], []).extend(render(rule, att.comment))
        families = sorted(set(rules) | {r[1] for r in network_plan(att)})
        def batch(saved: Saved, fam: int) -> str:
            shared = []
            if _forward_may_drop(saved):
                for rule in network_plan(att):
                    if rule[1] == fam:
                        shared += render(rule, network_prefix(att.network))
            for rule in isolation_plan(att):
                if rule[1] == fam:
                    shared += render(rule, network_prefix(att.network))
            return self._add_batch(saved, rules.get(fam, []), shared)
        return _restore_locked(families, batch)

    @staticmethod
    def _add_batch(saved: Saved, rules: list[tuple[str, str]], shared: list[tuple[str, str]]) -> str:
        per_table: dict[str, list[str]] = {}
        jumps_in: dict[str, set] = {}    # each table's lines looked at once, not once per entry
        for table, chain, jumps in SCAFFOLD:
            if not any(t == table for t, _ in rules + shared):
                continue
            cmds = per_table.setdefault(table, [])
            if chain not in saved.chains(table):
                cmds.append(f"-N {chain}")
            if table not in jumps_in:
                jumps_in[table] = {_jump_spec(l) for l in saved.lines(table)}
            cmds += [j for j in jumps if _jump_spec(j) not in jumps_in[table]]
        tokens_in: dict[str, set] = {}
        for table, line in shared:
            if table not in tokens_in:
                tokens_in[table] = {_tokens(l) for l in saved.lines(table)}
            if _tokens(line) not in tokens_in[table]:
                per_table.setdefault(table, []).append(line)
        for table, line in rules:
            per_table.setdefault(table, []).append(line)
        text = []
        for table in ("nat", "filter"):
            if per_table.get(table):
                text += [f"*{table}", *per_table[table], "COMMIT"]
        return "\n".join(text) + "\n" if text else ""

    def teardown(self, network: str, keep=None, owner: str | None = None, families=(4, 6)) -> Pending:
        prefix = network_prefix(network)
        return _restore_locked(families, lambda saved, fam: self._del_batch(saved, prefix, owner, keep))

    @staticmethod
    def _del_batch(saved: Saved, prefix: str, owner, keep) -> str:
        verdicts = {t: [(l, decide(_comment(l), prefix, owner, keep)) for l in saved.lines(t)]
                    for t in OUR_CHAINS}
        # the network's shared rules go when none of its attachments keeps rules
        network_left = any(v == "keep" and (_comment(l) or "").startswith(prefix)
                           for t in verdicts for l, v in verdicts[t])
        text = []
        for table, ours in OUR_CHAINS.items():
            cmds, left = [], 0
            for line, v in verdicts[table]:
                chain = line.split(" ", 2)[1]
                if v == "drop" or (v == "net" and not network_left):
                    cmds.append("-D" + line[2:])
                elif chain in ours:
                    left += 1
            present = saved.chains(table) & set(ours)
            if left == 0 and present:
                jumps = tuple(f"-j {ch}" for ch in ours)
                cmds += ["-D" + l[2:] for l in saved.lines(table)
                         if l.split(" ", 2)[1] not in ours and l.endswith(jumps)]
                cmds += [f"-X {ch}" for ch in ours if ch in present]
            if cmds:
                text += [f"*{table}", *cmds, "COMMIT"]
        return "\n".join(text) + "\n" if text else ""

    def owned(self, families=(4, 6)) -> dict[str, int]:
        counts: dict[str, int] = {}
        for saved in _read(families).values():
            for table in OUR_CHAINS:
                for line in saved.lines(table):
                    com = _comment(line)
                    if com and com.startswith(COMMENT_PREFIX):
                        counts[com] = counts.get(com, 0) + 1
        return counts

    def rules(self, families=(4, 6)) -> list[dict]:
        out = []
        saved_by_family, all_handles = _read_with_handles(families)
        for fam, saved in saved_by_family.items():
            tool = "iptables" if fam == 4 else "ip6tables"
            for table in saved.tables:
                handles = all_handles.get((fam, table), {})
                counts: dict[str, int] = {}
                for line in saved.lines(table):
                    counts[line.split(" ", 2)[1]] = counts.get(line.split(" ", 2)[1], 0) + 1
                # a chain whose rule count differs in nft's view: no handle is trusted
                handles = {ch: hs for ch, hs in handles.items() if len(hs) == counts.get(ch)}
                seen: dict[str, int] = {}
                for line in saved.lines(table):
                    chain = line.split(" ", 2)[1]
                    pos = seen[chain] = seen.get(chain, -1) + 1
                    com = _comment(line, prefix="")
                    if com:
                        chain_handles = handles.get(chain, [])
                        out.append({"backend": self.name, "family": fam, "table": table, "chain": chain,
                                    "handle": chain_handles[pos] if pos < len(chain_handles) else 0,
                                    "comment": com, "text": f"{tool} -t {table} {line}"})
        return out

    def scaffold_intact(self, families=(4, 6)) -> bool:
        for saved in _read(families).values():
            for table, chain, jumps in SCAFFOLD:
                if chain not in saved.chains(table):
                    continue  # made when a rule needs it
                present = {_jump_spec(l) for l in saved.lines(table)}
                if any(_jump_spec(j) not in present for j in jumps):
                    return False
        return True
