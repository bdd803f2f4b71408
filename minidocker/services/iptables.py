"""The iptables rendering of service plans, as kube-proxy's iptables mode:
a dispatch chain matching (VIP, protocol, port) jumps to a per-service
chain, which picks an endpoint chain with `statistic --mode random
--probability 1/(N-i)`; the endpoint chain DNATs (and marks hairpin traffic
for masquerade). ClientIP affinity is xt_recent, as kube-proxy.

A change is one `iptables-restore --noflush`: the changed service's chains
are declared (flushed) and refilled, the dispatch chains (one rule per
service port) are rewritten whole, as kube-proxy does, so a packet walks a
list that grows with the number of services (the cost the nftables backend
avoids). Chains of other services are left untouched.
"""
from __future__ import annotations

import subprocess

from minidocker.errors import MinidockerError
from minidocker.services import plan as P
from minidocker.services.spec import AFFINITY_SECONDS

MARK = f"{P.MASQ_MARK:#x}/{P.MASQ_MARK:#x}"
#: (table, built-in chain, the jump into ours)
JUMPS = (("nat", "PREROUTING", ["-j", P.IPT_DISPATCH]),
         ("nat", "OUTPUT", ["-j", P.IPT_DISPATCH]),
         ("nat", "POSTROUTING", ["-j", P.IPT_POSTROUTING]),
         ("filter", "INPUT", ["-m", "conntrack", "--ctstate", "NEW", "-j", P.IPT_REJECT]),
         ("filter", "FORWARD", ["-m", "conntrack", "--ctstate", "NEW", "-j", P.IPT_REJECT]),
         ("filter", "OUTPUT", ["-m", "conntrack", "--ctstate", "NEW", "-j", P.IPT_REJECT]))
_OWN = {"nat": (P.IPT_DISPATCH, P.IPT_NODEPORTS, P.IPT_POSTROUTING), "filter": (P.IPT_REJECT,)}


def _run(argv: list[str], text: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, input=text, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MinidockerError(f"cannot run {argv[0]}: {exc}") from None


def _c(p: dict) -> str:
    return f'-m comment --comment "{p["comment"]}"'


def _port_rules(p: dict, port: dict) -> list[str]:
    proto, note = port["proto"], _c(p)
    out = []
    eps = port["endpoints"]
    for ep in eps:
        chain = ep["chain"]
        out.append(f"-A {chain} -s {ep['ip']}/32 {note} -j MARK --set-xmark {MARK}")
        recent = (f"-m recent --name {ep['affinity_set']} --set --mask 255.255.255.255 --rsource "
                  if p["affinity"] else "")
        out.append(f"-A {chain} -p {proto} {note} {recent}-m {proto} "
                   f"-j DNAT --to-destination {ep['ip']}:{port['target']}")
    if p["affinity"]:
        out += [f"-A {port['chain']} {note} -m recent --name {ep['affinity_set']} --rcheck "
                f"--seconds {AFFINITY_SECONDS} --reap --mask 255.255.255.255 --rsource -j {ep['chain']}"
                for ep in eps]
    for i, ep in enumerate(eps):
        left = len(eps) - i
        pick = f"-m statistic --mode random --probability {1 / left:.10f} " if left > 1 else ""
        out.append(f"-A {port['chain']} {note} {pick}-j {ep['chain']}")
    if port["node_port"]:
        out.append(f"-A {port['ext_chain']} {note} -j MARK --set-xmark {MARK}")
        out.append(f"-A {port['ext_chain']} {note} -j {port['chain']}")
    return out


def _dispatch(plans: list[dict]) -> tuple[list[str], list[str]]:
    """(nat dispatch and node-port rules, filter reject rules) of every service."""
    nat, nodeports, reject = [], [], []
    for p in plans:
        note = _c(p)
        for port in p["ports"]:
            proto, live = port["proto"], bool(port["endpoints"])
            match = f"-d {p['vip']}/32 -p {proto} -m {proto} --dport {port['port']} {note}"
            if live:
                nat.append(f"-A {P.IPT_DISPATCH} {match} -j {port['chain']}")
            else:
                reject.append(f"-A {P.IPT_REJECT} {match} -j REJECT")
            if port["node_port"]:
                npm = f"-p {proto} -m {proto} --dport {port['node_port']} {note}"
                if live:
                    nodeports.append(f"-A {P.IPT_NODEPORTS} {npm} -j {port['ext_chain']}")
                else:
                    reject.append(f"-A {P.IPT_REJECT} -m addrtype --dst-type LOCAL {npm} -j REJECT")
    nat.append(f"-A {P.IPT_DISPATCH} ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL "
               f"-j {P.IPT_NODEPORTS}")
    return nat + nodeports, reject


def script(old: dict | None, new: dict | None, plans: list[dict]) -> str:
    """The restore input taking the kernel from plan old to plan new; plans:
    every service's plan after the change (for the dispatch chains)."""
    o, n = P.objects(old), P.objects(new)
    return _text(n["chains"] | o["chains"], [new] if new else [], o["chains"] - n["chains"], plans)


def _text(declare: set, bodies: list[dict], drop: set, plans: list[dict]) -> str:
    nat, reject = _dispatch(plans)
    out = ["*nat"] + [f":{c} - [0:0]" for c in _OWN["nat"]]
    out += [f":{c} - [0:0]" for c in sorted(declare)]
    for p in bodies:
        for port in p["ports"]:
            if port["endpoints"]:
                out += _port_rules(p, port)
    out += nat
    out += [f"-A {P.IPT_POSTROUTING} -m mark ! --mark {MARK} -j RETURN",
            f"-A {P.IPT_POSTROUTING} -j MARK --xor-mark {P.MASQ_MARK:#x}",
            f"-A {P.IPT_POSTROUTING} -j MASQUERADE --random-fully"]
    out += [f"-X {c}" for c in sorted(drop)]
    out += ["COMMIT", "*filter", f":{P.IPT_REJECT} - [0:0]"] + reject + ["COMMIT"]
    return "\n".join(out) + "\n"


def _restore(text: str, what: str) -> None:
    proc = _run(["iptables-restore", "-w", "--noflush"], text)
    if proc.returncode:
        raise MinidockerError(f"iptables-restore refused the rules of {what}: "
                              + " ".join(proc.stderr.split())[:300])
    # one probe when all is in place; every jump checked only when it is not
    if _run(["iptables", "-w", "-t", "nat", "-C", "PREROUTING", "-j", P.IPT_DISPATCH]).returncode:
        _jumps(add=True)


def bulk(plans: list[dict]) -> None:
    """Program many services that are not in the kernel yet, in one restore
    (the benchmark's 5,000)."""
    chains = set().union(*(P.objects(p)["chains"] for p in plans)) if plans else set()
    _restore(_text(chains, plans, set(), plans), f"{len(plans)} services")


def _jumps(add: bool) -> None:
    """Our jumps from the built-in chains: added when missing, or all removed."""
    for table, chain, rule in JUMPS:
        present = _run(["iptables", "-w", "-t", table, "-C", chain, *rule]).returncode == 0
        if add and not present:
            _run(["iptables", "-w", "-t", table, "-I", chain, "1", *rule])
        while not add and present:   # every copy (a jump added twice by hand too)
            present = _run(["iptables", "-w", "-t", table, "-D", chain, *rule]).returncode == 0


def apply(old: dict | None, new: dict | None, plans: list[dict]) -> None:
    _restore(script(old, new, plans), f"service {(new or old)['service']}")


def drop() -> None:
    """The last service is gone: our jumps and chains go."""
    _jumps(add=False)
    text = []
    for table, chains in _OWN.items():
        text += [f"*{table}"] + [f":{c} - [0:0]" for c in chains] + [f"-X {c}" for c in chains]
        text.append("COMMIT")
    _run(["iptables-restore", "-w", "--noflush"], "\n".join(text) + "\n")


def rules(p: dict | None) -> list[str]:
    """The service's rules as the kernel holds them (inspect)."""
    if not p:
        return []
    out = []
    for table in ("nat", "filter"):
        proc = _run(["iptables-save", "-t", table])
        out += [f"{table}: {line}" for line in proc.stdout.splitlines()
                if f'"{p["comment"]}"' in line or f" {p['comment']} " in line]
    return out
