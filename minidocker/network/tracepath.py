"""A traced probe in words: `nft monitor` trace events -> the hooks, tables,
chains and rules the packet crossed, each rule with its owner from the
wiring model (which container, which network), and where it ended.

Events look like `trace id ID FAMILY TABLE CHAIN (packet: ...|rule TEXT
# handle N (verdict V)|verdict V|policy V)`; only the packets our tracing
table marked are kept (trace.py's table names them first).
"""
from __future__ import annotations

import ipaddress
import re

from cni_bridge import api

HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
_EVENT = re.compile(r"^trace id (\S+) (\S+) (\S+) (\S+) (.*)$")
_RULE = re.compile(r"^rule (.*?)(?: # handle (\d+))? \(verdict ([^)]*)\)\s*$")
_DNAT = re.compile(r"\bdnat (?:ip6? )?to \[?([0-9a-fA-F.:]+?)\]?:(\d+)")
_COUNTER = re.compile(r"\s*counter packets \d+ bytes \d+")
_OWNER = re.compile(r"^md/(.+?)/(?:([0-9a-f]{64})/([^/]+))?$")
_MARK_SET = re.compile(r"\bmeta mark set mark (or|and) 0x")


def events(lines: list[str], table: str, saddr: str, sport: int) -> list[dict]:
    """The trace events of the probe's packets, in order, without our
    table's own. A trace id is the packet's buffer, so the kernel may give
    one packet new ids between hooks (seen on forwarded ones) and reuse an
    id for another packet: each chain's `packet:` line says which packet
    the id's next events are about; ours shows the probe's source address
    and port (or went through our table)."""
    current: dict[str, bool] = {}
    out = []
    for m in map(_EVENT.match, lines):
        if not m:
            continue
        tid, fam, tab, chain, rest = m.groups()
        if rest.startswith("packet:"):
            current[tid] = tab == table or (f"saddr {saddr} " in rest and f"sport {sport} " in rest)
        if tab == table or not current.get(tid):
            continue
        ev = {"id": tid, "family": fam, "table": tab, "chain": chain}
        rule = _RULE.match(rest)
        if rest.startswith("packet:"):
            ev.update(kind="packet", text=rest[len("packet: "):].strip())
        elif rule:
            ev.update(kind="rule", text=_COUNTER.sub("", rule.group(1)).strip(),
                      handle=int(rule.group(2) or 0), verdict=rule.group(3).split()[0])
        elif rest.startswith(("policy", "verdict")):
            kind, _sp, verdict = rest.strip().partition(" ")
            ev.update(kind=kind, verdict=verdict.split()[0] if verdict else "")
        else:
            continue
        out.append(ev)
    return out


def _endpoint_index(model: dict) -> dict[str, tuple[dict, dict]]:
    return {e["container"]["id"]: (n, e) for n in model["networks"] for e in n["endpoints"]}


def owner(model: dict, comment: str) -> str:
    """Who a rule belongs to, in words."""
    if comment == api.scaffold_comment():
        return "minidocker's scaffold"
    m = _OWNER.match(comment or "")
    if not m:
        return "not minidocker's" if not comment else f"comment {comment}"
    net, cid, ifname = m.groups()
    if not cid:
        return f"network {net}"
    found = _endpoint_index(model).get(cid)
    name = found[1]["container"]["name"] if found else "?"
    return f"container {name} ({cid[:12]}) on network {net}" + ("" if ifname == "eth0" else f" ({ifname})")


def _published(model: dict, rule: dict, flow_dst: str) -> str:
    """host-ip:port of the published port a DNAT rule implements (as `-p` gave it)."""
    m = _OWNER.match(rule.get("comment", ""))
    found = _endpoint_index(model).get(m.group(2)) if m and m.group(2) else None
    for p in found[1]["ports"] if found else []:
        if any((r.get("set"), r.get("key")) == (rule.get("set"), rule.get("key")) if "set" in rule
               else r["handle"] == rule["handle"] and r["chain"] == rule["chain"] for r in p["rules"]):
            return f"{p['host_ip']}:{p['host_port']}"
    return flow_dst


def _action(ev: dict, published: str) -> str:
    text = ev["text"]
    dnat = _DNAT.search(text)
    if dnat:
        return f"DNAT {published} -> {dnat.group(1)}:{dnat.group(2)}"
    if "masquerade" in text:
        return "masquerade (the source becomes the outgoing interface's address)"
    mark = _MARK_SET.search(text)
    if mark:   # iptables' published-port mark (its --set-xmark as nft shows it)
        return ("mark: to a host address (kept if a published port's DNAT follows)" if mark.group(1) == "or"
                else "unmark: no published port took it")
    jump = re.search(r"\b(jump|goto) (\S+)", text)
    if jump:
        return f"{jump.group(1)} {jump.group(2)}"
    return {"drop": "drop", "accept": "accept", "return": "return"}.get(ev["verdict"], ev["verdict"])


def steps(model: dict, rules, evs: list[dict], flow_dst: str) -> list[dict]:
    """Each rule matched and each policy applied, with its hook and owner.
    A rule of ours that looks a set up (nftables) is shown with the element
    the packet matched: that element carries the owner and the action."""
    out, hook, packet = [], "", {}
    for ev in evs:
        if ev["chain"].lower() in HOOKS:
            hook = ev["chain"].lower()
        if ev["kind"] == "packet":
            packet[ev["id"]] = ev["text"]
        if ev["kind"] not in ("rule", "policy"):
            continue
        step = {"hook": hook, "family": ev["family"], "table": ev["table"], "chain": ev["chain"],
                "verdict": ev.get("verdict", ""), "packet": ev["id"]}
        if ev["kind"] == "policy":
            step.update(rule="", handle=0, comment="", owner="", words=f"end of the base chain: its policy {step['verdict']}")
        else:
            rule = rules.by_handle(ev["family"], ev["table"], ev["chain"], ev["handle"])
            element = rules.element(rule, packet.get(ev["id"], "")) if "@" in rule.get("text", "") else {}
            if element:
                rule, ev = element, {**ev, "text": f"{ev['text']} [{element['text'].split(' # ')[0]}: "
                                                   f"{element['text'].split(' # ', 1)[-1]}]"}
            comment = rule.get("comment", "")
            step.update(rule=ev["text"], handle=ev["handle"], comment=comment, owner=owner(model, comment),
                        words=_action(ev, _published(model, rule, flow_dst) if rule else flow_dst))
            if step["words"].startswith("DNAT") and comment.startswith("md/"):
                step["words"] += f" for {step['owner']}"
        out.append(step)
    return out


def _is_local(model: dict, addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    if ip.is_loopback:
        return True
    held = [a.split("/")[0] for u in model["host"]["uplinks"] for a in u["addresses"]]
    held += [a.split("/")[0] for n in model["networks"] for a in n["bridge"]["addresses"]]
    return addr in held


def _dropped(model: dict, sts: list[dict]) -> str:
    drop = next((s for s in sts if s["verdict"] == "drop"), None)
    if drop is None:
        return ""
    if drop["chain"] in ("MINIDOCKER-ISOLATION", "isolation") and drop["comment"].startswith("md/"):
        to_net = _OWNER.match(drop["comment"]).group(1)
        jump = next((s for s in reversed(sts[:sts.index(drop)]) if s["comment"].startswith("md/")), None)
        from_net = _OWNER.match(jump["comment"]).group(1) if jump else "?"
        return f"dropped by the isolation rule between networks {from_net} and {to_net}"
    if drop["rule"]:
        return f"dropped by {drop['table']} {drop['chain']} rule \"{drop['rule']}\" ({drop['owner']})"
    return f"dropped by the policy of {drop['table']} {drop['chain']} ({drop['hook']})"


def outcome(model: dict, sts: list[dict], src: dict, dst: dict, proto: str, probe: dict) -> str:
    """Where the probe ended, in one line."""
    dropped = _dropped(model, sts)
    if dropped:
        return dropped
    final_addr, final_port = dst["address"], dst["port"]
    for s in sts:
        m = _DNAT.search(s["rule"])
        if m:
            final_addr, final_port = m.group(1), int(m.group(2))
    target = next(((n, e) for n in model["networks"] for e in n["endpoints"]
                   if final_addr in (e["ipv4"], e["ipv6"])), None)
    note = ""
    if not any(_DNAT.search(s["rule"]) for s in sts) and not dst["container"] and _is_local(model, final_addr):
        note = (f"no DNAT rule matched {final_addr}:{final_port}/{proto} (no container publishes it), "
                "so the packet went to the host itself: ")
    where = f"{target[1]['container']['name']}:{final_port}" if target else f"{final_addr}:{final_port}"
    result = probe["result"]
    if result in ("connected", "answered"):
        if target:
            n, e = target
            hairpin = " (hairpin: back into the container it came from)" if (
                src.get("container") or {}).get("id") == e["container"]["id"] else ""
            return (f"{note}delivered to {where} via {n['bridge']['name']} -> {e['host_veth']['name']}"
                    f"@if{e['host_veth']['peer_ifindex']} -> {e['interface']['name'] or e['ifname']}{hairpin}")
        return note + (f"delivered to a process listening on {final_addr}:{final_port} on the host"
                       if _is_local(model, final_addr) else f"delivered to {where}")
    if result == "refused":
        inside = f"in {target[1]['container']['name']}" if target else (
            "on the host" if _is_local(model, final_addr) else f"at {final_addr}")
        return f"{note}refused: nothing listens on {final_port}/{proto} {inside}"
    if result == "timeout":
        return (f"{note}no answer from {where} within {probe.get('timeout', '')}s"
                + (" (UDP: nothing replied; no rule dropped the datagram)" if proto == "udp"
                   else " and no rule dropped the packet"))
    return f"{note}{result}: {where}"


def explain(model: dict, rules, evs: list[dict], src: dict, dst: dict, proto: str, probe: dict) -> dict:
    """The trace's result: the probe, the steps, the outcome (stable keys)."""
    sts = steps(model, rules, evs, f"{dst['address']}:{dst['port']}")
    return {"from": src, "to": dst, "proto": proto, "probe": probe, "steps": sts,
            "outcome": outcome(model, sts, src, dst, proto, probe)}
