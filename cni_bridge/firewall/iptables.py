"""iptables backend: rules in our own chains, changed by one
`iptables-restore --noflush` batch per address family.

The first attachment of a network reads the tables (`iptables-save`) so
its batch creates exactly what is missing (our chains, the jumps into
them, the network's shared rules); later ones, and their DELs, take what
they add or delete from the owner index (owners.py) and do not read: a
whole-table read costs 33 ms at 1,500 rules against 6 ms at 60. A batch
the kernel refuses (a flushed chain, a rule already gone) is made again
from a read. The network's last DEL, GC and a DEL the index does not know
read first and find rules by comment. What stays O(rules) is inside
iptables-nft: `-D` compares the rule with each rule of its chain.
Both families are read and written concurrently.

A forwarded packet crosses a fixed number of our rules whatever the number
of containers: the per-container drops (isolation, icc, internal) sit in
MINIDOCKER-POLICY, which only packets of new connections enter (a flow
those rules would drop never gets established); established ones go on to
the network's accepts. With the drops walked for every packet, 500
containers' rules halved the throughput between two containers.

For the same reason of scale, the masquerade of a published port's clients
on its own bridge and on the host's 127/8 is one rule per network
(plan.published_plan), not one per port: the first packet of every
connection to a host address enters MINIDOCKER marked (PUBLISHED_MARK);
one DNAT'ed there keeps the mark, the others lose it right after the jump,
so the network's rule masquerades exactly the published ports' clients.
"""
from __future__ import annotations

from cni_bridge.firewall import iptsaved, owners
from cni_bridge.firewall.iptsaved import TOOLS, Saved
from cni_bridge.firewall.plan import (CHAIN_DNAT, CHAIN_FORWARD, CHAIN_ISOLATION, CHAIN_POLICY, CHAIN_POSTROUTING,
                                 COMMENT_PREFIX, PUBLISHED_MARK, SCAFFOLD_COMMENT, Attachment, Driver, Early,
                                 Lock, Pending, decide, isolation_plan, network_plan, network_prefix, plan,
                                 published_plan)
from cni_bridge.proc import Attempt, Proc

OUR_CHAINS = {"nat": (CHAIN_DNAT, CHAIN_POSTROUTING),
              "filter": (CHAIN_FORWARD, CHAIN_POLICY, CHAIN_ISOLATION)}
_C = f"-m comment --comment {SCAFFOLD_COMMENT}"
# Our chains and the jumps into them: (table, chain, jump rule).
_MARK = f"{PUBLISHED_MARK:#x}/{PUBLISHED_MARK:#x}"
_LOCAL = "-m addrtype --dst-type LOCAL"
# (as iptables-save prints them: a jump is recognised by its text after -j)
SCAFFOLD = [
    ("nat", CHAIN_DNAT, [f"-A PREROUTING {_LOCAL} {_C} -j {CHAIN_DNAT}",
                         f"-A OUTPUT {_LOCAL} {_C} -j {CHAIN_DNAT}",
                         # marked on entry; not DNAT'ed there: unmarked on return
                         f"-I {CHAIN_DNAT} 1 {_C} -j MARK --set-xmark {_MARK}",
                         f"-A PREROUTING {_LOCAL} -m mark --mark {_MARK} {_C} -j MARK --set-xmark 0x0/{PUBLISHED_MARK:#x}",
                         f"-A OUTPUT {_LOCAL} -m mark --mark {_MARK} {_C} -j MARK --set-xmark 0x0/{PUBLISHED_MARK:#x}"]),
    ("nat", CHAIN_POSTROUTING, [f"-A POSTROUTING {_C} -j {CHAIN_POSTROUTING}"]),
    ("filter", CHAIN_FORWARD, [f"-I FORWARD {_C} -j {CHAIN_FORWARD}"]),
    # first in MINIDOCKER-FORWARD, before the network's accepts
    ("filter", CHAIN_POLICY, [f"-I {CHAIN_FORWARD} -m conntrack ! --ctstate RELATED,ESTABLISHED "
                              f"{_C} -j {CHAIN_POLICY}"]),
    ("filter", CHAIN_ISOLATION, []),   # reached from MINIDOCKER-POLICY only
]
_NOT_DNAT = "-m conntrack ! --ctstate DNAT"
#: plan entries rendered once per network (published_plan), not per attachment
PER_NETWORK = ("pm_masq", "pm_local")


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
    if kind in PER_NETWORK:
        return []   # published_plan's rules of the network do it
    if kind == "pm_masq_net":
        _, _, subnet, br = rule
        return [("nat", f"-A {CHAIN_POSTROUTING} -s {subnet} -o {br} -m mark --mark {_MARK} {c} -j MASQUERADE")]
    if kind == "pm_local_net":
        _, _, br = rule
        return [("nat", f"-A {CHAIN_POSTROUTING} -s 127.0.0.0/8 -o {br} {c} -j MASQUERADE")]
    if kind in ("iso", "icc", "int_out", "int_in"):
        _, _, ip, br = rule
        match = {"iso": f"-s {_host(ip)} -i {br} ! -o {br} {_NOT_DNAT}",
                 "icc": f"-s {_host(ip)} -i {br} -o {br} {_NOT_DNAT}",
                 "int_out": f"-s {_host(ip)} -i {br} ! -o {br}",
                 "int_in": f"-d {_host(ip)} -o {br} ! -i {br}"}[kind]
        target = CHAIN_ISOLATION if kind == "iso" else "DROP"
        return [("filter", f"-A {CHAIN_POLICY} {match} {c} -j {target}")]
    if kind == "iso_net":
        _, _, br = rule
        return [("filter", f"-A {CHAIN_ISOLATION} -o {br} {c} -j DROP")]
    if kind == "fwd":
        _, _, subnet, br = rule
        return [("filter", f"-A {CHAIN_FORWARD} -d {subnet} -o {br} {c} -j ACCEPT"),
                ("filter", f"-A {CHAIN_FORWARD} -s {subnet} -i {br} {c} -j ACCEPT")]
    raise ValueError(kind)


def _forward_may_drop(saved: Saved) -> bool:
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


def _tables_text(lines: list[tuple[str, str]]) -> str:
    """[(table, line)] -> iptables-restore input, nat first."""
    text = []
    for table in ("nat", "filter"):
        mine = [l for t, l in lines if t == table]
        if mine:
            text += [f"*{table}", *mine, "COMMIT"]
    return "\n".join(text) + "\n" if text else ""


def _restore(lock, families, batch_of, started=None) -> Pending:
    """Under the firewall lock: read the tables once (or take the reads
    `started`), then one `iptables-restore --noflush` per family with
    batch_of(saved, family), the lock held until the batches are waited for."""
    try:
        saved = iptsaved.read(families, started)
        procs = []
        for fam in families:
            batch = batch_of(saved[fam], fam)
            if batch:
                procs.append(Proc([TOOLS[fam][1], "--noflush"], batch))
    except BaseException:
        lock.release()
        raise
    return Pending(lock, procs)


def _restore_now(families, batch_of, own=None) -> None:
    """The read-then-restore path, run to the end (the retry of a batch
    that did not read first); `own`: the attachment's lines, added only
    where missing (the refused batch may have committed a table)."""
    saved = iptsaved.read(families)
    for fam in families:
        text = batch_of(saved[fam], fam) if own is None else batch_of(saved[fam], fam, True)
        if text:
            Proc([TOOLS[fam][1], "--noflush"], text).check()


class IptablesDriver(Driver):
    name = "iptables"

    def commit_tools(self, families) -> list[list[str]]:
        return [[TOOLS[fam][1], "--noflush"] for fam in families]

    def count(self, att: Attachment) -> int:
        return sum(1 for rule in plan(att) if rule[0] not in PER_NETWORK)

    def begin(self, network: str, families) -> Early:
        """The lock, and for a network without attachments (its batch must
        know what exists) the tables' read, while IPAM allocates."""
        lock = Lock()
        try:
            empty = owners.network_empty(network_prefix(network))
            return Early(lock, {fam: Proc([TOOLS[fam][0]]) for fam in families} if empty else None)
        except BaseException:
            lock.release()
            raise

    def setup(self, att: Attachment, repair: bool = False, early: Early | None = None) -> Pending:
        rules: dict[int, list[tuple[str, str]]] = {}
        for rule in plan(att):
            rules.setdefault(rule[1], []).extend(render(rule, att.comment))
        families = sorted(set(rules) | {r[1] for r in network_plan(att) + published_plan(att)})
        prefix = network_prefix(att.network)

        def batch(saved: Saved, fam: int, own_present: bool = False) -> str:
            shared = []
            if _forward_may_drop(saved):
                for rule in network_plan(att):
                    if rule[1] == fam:
                        shared += render(rule, prefix)
            for rule in isolation_plan(att) + published_plan(att):
                if rule[1] == fam:
                    shared += render(rule, prefix)
            return self._add_batch(saved, rules.get(fam, []), shared, own_present)
        lock = early.lock if early else Lock()
        started = early.reads if early else None
        try:
            # another attachment of the network is indexed: our chains, the
            # jumps and the network's shared rules are there; no read
            known = not repair and not owners.network_empty(prefix)
            again = owners.read(prefix, att.comment) is not None   # a repeated ADD: add only what is missing
            owners.write(prefix, att.comment, {"lines": {str(f): [list(x) for x in v] for f, v in rules.items()}})
            if again:
                return _restore(lock, families, lambda saved, fam: batch(saved, fam, True), started)
            if not known:
                return _restore(lock, families, batch, started)
            procs = []
            for fam in families:
                text = _tables_text(rules.get(fam, []))
                if text:
                    procs.append(Attempt(Proc([TOOLS[fam][1], "--noflush"], text),
                                         lambda _err, fam=fam: _restore_now([fam], batch, own=rules)))
        except BaseException:
            lock.release()
            raise
        return Pending(lock, procs)

    @staticmethod
    def _add_batch(saved: Saved, rules: list[tuple[str, str]], shared: list[tuple[str, str]],
                   own_present: bool = False) -> str:
        """Our chains and jumps where missing, the shared rules not yet
        there, and `rules` (only those not yet there when `own_present`
        may be true: the retry of a batch the kernel refused)."""
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
        for table, line in shared + rules:
            if (table, line) in rules and not own_present:
                per_table.setdefault(table, []).append(line)
                continue
            if table not in tokens_in:
                tokens_in[table] = {_tokens(l.replace("-I ", "-A ", 1)) for l in saved.lines(table)}
            if _tokens(line.replace("-I ", "-A ", 1)) not in tokens_in[table]:
                per_table.setdefault(table, []).append(line)
        text = []
        for table in ("nat", "filter"):
            if per_table.get(table):
                text += [f"*{table}", *per_table[table], "COMMIT"]
        return "\n".join(text) + "\n" if text else ""

    def teardown(self, network: str, keep=None, owner: str | None = None, families=(4, 6)) -> Pending:
        prefix = network_prefix(network)
        listed = lambda saved, fam: self._del_batch(saved, prefix, owner, keep)  # noqa: E731
        lock = Lock()
        try:
            entry = owners.take(prefix, owner, keep)
            if entry is None or owners.network_empty(prefix):
                # unknown to the index, a GC, or the network's last attachment
                # (its shared rules, maybe our chains, go too): read first
                return _restore(lock, families, listed)
            procs = []
            for fam, lines in entry["lines"].items():
                text = _tables_text([(t, "-D" + l[2:]) for t, l in lines])
                if text:   # a rule already gone fails the batch: then by listing
                    procs.append(Attempt(Proc([TOOLS[int(fam)][1], "--noflush"], text),
                                         lambda _err, fam=int(fam): _restore_now([fam], listed)))
        except BaseException:
            lock.release()
            raise
        return Pending(lock, procs)

    @staticmethod
    def _del_batch(saved: Saved, prefix: str, owner, keep) -> str:
        verdicts = {t: [(l, decide(iptsaved.comment(l), prefix, owner, keep)) for l in saved.lines(t)]
                    for t in OUR_CHAINS}
        # the network's shared rules go when none of its attachments keeps rules
        network_left = any(v == "keep" and (iptsaved.comment(l) or "").startswith(prefix)
                           for t in verdicts for l, v in verdicts[t])
        text = []
        for table, ours in OUR_CHAINS.items():
            cmds, left = [], 0
            for line, v in verdicts[table]:
                chain = line.split(" ", 2)[1]
                if v == "drop" or (v == "net" and not network_left):
                    cmds.append("-D" + line[2:])
                elif chain in ours and iptsaved.comment(line, "") != SCAFFOLD_COMMENT:
                    left += 1
            present = saved.chains(table) & set(ours)
            if left == 0 and present:
                jumps = tuple(f"-j {ch}" for ch in ours)
                cmds += ["-D" + l[2:] for l in saved.lines(table)
                         if iptsaved.comment(l, "") == SCAFFOLD_COMMENT
                         or (l.endswith(jumps) and l.split(" ", 2)[1] not in ours)]
                cmds += [f"-X {ch}" for ch in ours if ch in present]
            if cmds:
                text += [f"*{table}", *cmds, "COMMIT"]
        return "\n".join(text) + "\n" if text else ""

    def owned(self, families=(4, 6)) -> dict[str, int]:
        counts: dict[str, int] = {}
        for saved in iptsaved.read(families).values():
            for table in OUR_CHAINS:
                for line in saved.lines(table):
                    com = iptsaved.comment(line)
                    if com and com.startswith(COMMENT_PREFIX):
                        counts[com] = counts.get(com, 0) + 1
        return counts

    def rules(self, families=(4, 6)) -> list[dict]:
        out = []
        saved_by_family, all_handles = iptsaved.read_with_handles(families, OUR_CHAINS)
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
                    comment = iptsaved.comment(line, "")
                    if comment:
                        chain_handles = handles.get(chain, [])
                        out.append({"backend": self.name, "family": fam, "table": table, "chain": chain,
                                    "handle": chain_handles[pos] if pos < len(chain_handles) else 0,
                                    "comment": comment, "text": f"{tool} -t {table} {line}"})
        return out

    def scaffold_intact(self, families=(4, 6)) -> bool:
        for saved in iptsaved.read(families).values():
            for table, chain, jumps in SCAFFOLD:
                if chain not in saved.chains(table):
                    continue  # made when a rule needs it
                present = {_jump_spec(l) for l in saved.lines(table)}
                if any(_jump_spec(j) not in present for j in jumps):
                    return False
        return True
