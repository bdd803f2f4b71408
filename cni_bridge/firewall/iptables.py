"""iptables backend: rules in our own chains, changed by one
`iptables-restore --noflush` batch per address family.

ADD first tries the batch alone (our chains usually exist); if the kernel
refuses it (a chain is missing) the same batch is applied again with the
chains and the jumps into them. DEL reads `iptables-save`, deletes the lines
that carry its comment, and removes the chains when they become empty.
"""
from __future__ import annotations

import re

from cni_bridge.firewall import (CHAIN_DNAT, CHAIN_FORWARD, CHAIN_POSTROUTING, COMMENT_PREFIX,
                                 SCAFFOLD_COMMENT, Attachment, Driver, Locked, network_prefix, plan)
from cni_bridge.firewall.run import tool

TOOLS = {4: ("iptables-save", "iptables-restore"), 6: ("ip6tables-save", "ip6tables-restore")}
OUR_CHAINS = {"nat": (CHAIN_DNAT, CHAIN_POSTROUTING), "filter": (CHAIN_FORWARD,)}
_C = f'-m comment --comment "{SCAFFOLD_COMMENT}"'
SCAFFOLD = {
    "nat": [f"-N {CHAIN_DNAT}", f"-N {CHAIN_POSTROUTING}",
            f"-A PREROUTING -m addrtype --dst-type LOCAL {_C} -j {CHAIN_DNAT}",
            f"-A OUTPUT -m addrtype --dst-type LOCAL {_C} -j {CHAIN_DNAT}",
            f"-A POSTROUTING {_C} -j {CHAIN_POSTROUTING}"],
    "filter": [f"-N {CHAIN_FORWARD}", f"-I FORWARD {_C} -j {CHAIN_FORWARD}"],
}
_COMMENT_RE = re.compile(r'--comment "?(md/[^"\s]+)"?')


def _host(ip: str) -> str:
    return f"{ip}/128" if ":" in ip else f"{ip}/32"


def render(rule: tuple, comment: str) -> tuple[str, str]:
    """A plan entry -> (table, `-A CHAIN ...` line)."""
    kind, fam = rule[0], rule[1]
    c = f'-m comment --comment "{comment}"'
    if kind == "masq":
        _, _, ip, subnet = rule
        return "nat", f"-A {CHAIN_POSTROUTING} -s {_host(ip)} ! -d {subnet} {c} -j MASQUERADE"
    if kind == "dnat":
        _, _, proto, hip, hport, ip, cport = rule
        dst = f"-d {_host(hip)} " if hip and hip not in ("0.0.0.0", "::") else ""
        to = f"[{ip}]:{cport}" if fam == 6 else f"{ip}:{cport}"
        return "nat", f"-A {CHAIN_DNAT} {dst}-p {proto} -m {proto} --dport {hport} {c} -j DNAT --to-destination {to}"
    if kind == "pm_masq":
        _, _, proto, subnet, ip, cport = rule
        return "nat", (f"-A {CHAIN_POSTROUTING} -s {subnet} -d {_host(ip)} -p {proto} -m {proto} --dport {cport} "
                       f"-m conntrack --ctstate DNAT {c} -j MASQUERADE")
    if kind == "pm_local":
        _, _, proto, ip, cport = rule
        return "nat", (f"-A {CHAIN_POSTROUTING} -s 127.0.0.0/8 -d {_host(ip)} -p {proto} -m {proto} "
                       f"--dport {cport} {c} -j MASQUERADE")
    raise ValueError(kind)


def _lines(att: Attachment) -> dict[int, dict[str, list[str]]]:
    out: dict[int, dict[str, list[str]]] = {}
    for rule in plan(att):
        fam = rule[1]
        tables = out.setdefault(fam, {})
        if rule[0] == "fwd":
            _, _, ip, br = rule
            c = f'-m comment --comment "{att.comment}"'
            tables.setdefault("filter", []).extend([
                f"-A {CHAIN_FORWARD} -d {_host(ip)} -o {br} {c} -j ACCEPT",
                f"-A {CHAIN_FORWARD} -s {_host(ip)} -i {br} {c} -j ACCEPT"])
            continue
        table, line = render(rule, att.comment)
        tables.setdefault(table, []).append(line)
    return out


def _batch(tables: dict[str, list[str]], saved: dict | None = None) -> str:
    """The restore input; with `saved` (a fresh _save) it also creates
    whichever of our chains and jumps are missing."""
    text = []
    for table in ("nat", "filter"):
        lines = tables.get(table)
        if not lines:
            continue
        text.append(f"*{table}")
        if saved is not None:
            chains, present = saved.get(table, (set(), []))
            present_specs = {l.split(" ", 2)[1] + " " + l.rsplit("-j ", 1)[-1] for l in present}
            for cmd in SCAFFOLD[table]:
                if cmd.startswith("-N "):
                    if cmd[3:] not in chains:
                        text.append(cmd)
                elif cmd.split(" ", 2)[1] + " " + cmd.rsplit("-j ", 1)[-1] not in present_specs:
                    text.append(cmd)
        text.extend(lines)
        text.append("COMMIT")
    return "\n".join(text) + "\n"


def _save(fam: int) -> dict[str, tuple[set[str], list[str]]]:
    """table -> (its chains, its `-A` lines), from one iptables-save."""
    out: dict[str, tuple[set[str], list[str]]] = {}
    cur = None
    for line in tool([TOOLS[fam][0]], check=False).stdout.splitlines():
        if line.startswith("*"):
            cur = out.setdefault(line[1:], (set(), []))
        elif cur is None:
            continue
        elif line.startswith(":"):
            cur[0].add(line[1:].split(" ", 1)[0])
        elif line.startswith("-A "):
            cur[1].append(line)
    return out


def _mine(line: str, prefix: str, owner: str | None, keep) -> bool:
    m = _COMMENT_RE.search(line)
    if m is None or not m.group(1).startswith(prefix):
        return False
    return m.group(1) == owner if owner is not None else keep is not None and m.group(1) not in keep


class IptablesDriver(Driver):
    name = "iptables"

    def setup(self, att: Attachment) -> None:
        with Locked():
            for fam, tables in _lines(att).items():
                restore = [TOOLS[fam][1], "--noflush"]
                if tool(restore, _batch(tables), check=False).returncode != 0:
                    tool(restore, _batch(tables, _save(fam)))

    def teardown(self, network: str, keep=None, owner: str | None = None, families=(4, 6)) -> int:
        prefix = network_prefix(network)
        removed = 0
        with Locked():
            for fam in families:
                batch = []
                for table, (chains, lines) in _save(fam).items():
                    ours = OUR_CHAINS.get(table)
                    if not ours:
                        continue
                    drop = ["-D" + l[2:] for l in lines if _mine(l, prefix, owner, keep)]
                    left = sum(1 for l in lines if l.split(" ", 2)[1] in ours) - len(drop)
                    cmds = list(drop)
                    if left == 0 and chains & set(ours):
                        jumps = tuple(f"-j {ch}" for ch in ours)
                        cmds += ["-D" + l[2:] for l in lines
                                 if l.split(" ", 2)[1] not in ours and l.endswith(jumps)]
                        cmds += [f"-X {ch}" for ch in ours if ch in chains]
                    removed += len(drop)
                    if cmds:
                        batch += [f"*{table}", *cmds, "COMMIT"]
                if batch:
                    tool([TOOLS[fam][1], "--noflush"], "\n".join(batch) + "\n")
        return removed

    def owned(self, families=(4, 6)) -> dict[str, int]:
        counts: dict[str, int] = {}
        for fam in families:
            for _chains, lines in _save(fam).values():
                for line in lines:
                    m = _COMMENT_RE.search(line)
                    if m and m.group(1).startswith(COMMENT_PREFIX):
                        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
        return counts
