"""Reading iptables back: one family's `iptables-save` (`Saved`), the
comment that names a rule's owner, and the nft handles of the rules (what a
trace event names). The iptables backend reads through here; so do the
views (`rules`)."""
from __future__ import annotations

from cni_bridge.firewall.plan import COMMENT_PREFIX
from cni_bridge.proc import Proc

TOOLS = {4: ("iptables-save", "iptables-restore"), 6: ("ip6tables-save", "ip6tables-restore")}


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


def comment(line: str, prefix: str = COMMENT_PREFIX) -> str | None:
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


def read(families, started: dict[int, Proc] | None = None) -> dict[int, Saved]:
    """Each family's tables, from the reads `started` (Early.reads) where
    there is one, else read now (all families at once)."""
    procs = {fam: (started or {}).get(fam) or Proc([TOOLS[fam][0]]) for fam in families}
    out = {}
    for fam in families:
        rc, text, _err = procs[fam].wait()
        out[fam] = Saved(text if rc == 0 else "")
    return out


def read_with_handles(families, tables) -> tuple[dict[int, Saved], dict[tuple[int, str], dict[str, list[int]]]]:
    """iptables-save per family, and (family, table) -> chain -> the nft
    handles of its rules in order. Debian's iptables is iptables-nft: the
    n-th `-A CHAIN` line of iptables-save is the n-th rule of that chain in
    nft's listing, whose handle is what a trace event names (nft cannot
    show the xt comment itself). No handles without nft (they stay 0). The
    listings run concurrently with each other and with iptables-save."""
    from cni_bridge.firewall.nftables import FAMILY
    from cni_bridge.firewall.nftlisting import parse_listing
    procs = {}
    for fam in families:
        for table in tables:
            try:
                procs[(fam, table)] = Proc(["nft", "-a", "list", "table", FAMILY[fam], table], timeout=10)
            except Exception:  # noqa: BLE001 - a view: without nft there are no handles
                pass
    saved = read(families)
    handles: dict[tuple[int, str], dict[str, list[int]]] = {}
    for key, p in procs.items():
        rc, text, _err = p.wait()
        chains = handles.setdefault(key, {})
        for chain, _com, handle, _text in (parse_listing(text) if rc == 0 else []):
            chains.setdefault(chain, []).append(handle)
    return saved, handles
