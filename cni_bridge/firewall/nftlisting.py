"""Reading the nftables backend's tables back: a listing (`nft -a list
table`) as rules and set elements, what an element does in words, and
which element a traced packet matched (`trace`). Read-only: the backend
(nftables.py) writes.
"""
from __future__ import annotations

DOES = {"ports": "dnat", "ports_any": "dnat", "pm_masq": "masquerade (hairpin, same subnet)",
        "pm_local": "masquerade (from the host's 127/8)", "masq_skip": "no NAT towards",
        "masq_local": "no NAT on its own bridge", "masq": "masquerade", "icc": "drop (icc off)",
        "stay": "return (stays on its bridge)", "int_out": "drop (internal, outbound)",
        "iso": "isolation", "int_in": "drop (internal, inbound)"}


def _split_elements(body: str) -> list[str]:
    out, cur, quoted = [], [], False
    for ch in body:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def comment_of(line: str) -> str:
    """The text of the first `comment "..."` of a rule, or "" (what
    `re.search(r'comment "([^"]*)"')` finds; not `re`, ~5 ms of the last
    DEL, which reads the listing)."""
    at = line.find('comment "')
    end = line.find('"', at + 9) if at >= 0 else -1
    return line[at + 9:end] if end >= 0 else ""


def element_parts(item: str) -> tuple[str, str, str]:
    """One listed element, `KEY[ comment "C"][ : DATA]` -> (KEY, C, DATA), as
    `re.fullmatch(r'(.*?)(?: comment "([^"]*)")?(?: : (.*))?')` splits it:
    the key ends at the first place the rest has that form."""
    at = 0
    while True:
        c, d = item.find(' comment "', at), item.find(" : ", at)
        if c < 0 and d < 0:
            return item, "", ""
        if d >= 0 and (c < 0 or d < c):
            return item[:d], "", item[d + 3:]
        end = item.find('"', c + 10)
        rest = item[end + 1:] if end >= 0 else None
        if rest == "" or (rest is not None and rest.startswith(" : ")):
            return item[:c], item[c + 10:end], rest[3:]
        at = c + 1


def parse_table(text: str) -> tuple[list[tuple[str, str, int, str]], list[tuple[str, str, str, str]]]:
    """One listed table (`nft -a list table`): ([(chain, comment or "",
    handle, rule text)], [(set, key, data, comment)])."""
    rules, els = [], []
    chain = aset = None
    body: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if body is None and aset and line.startswith("elements = {"):
            body, line = [], line[len("elements = {"):].strip()
        if body is not None:
            body.append(line)
            if line.endswith("}"):
                for item in _split_elements(" ".join(body)[:-1]):
                    key, comment, data = element_parts(item)
                    els.append((aset, key.strip(), data.strip(), comment))
                body = None
        elif line.startswith(("set ", "map ")):
            aset, chain = line.split()[1], None
        elif line.startswith("chain "):
            chain, aset = line.split()[1], None
        elif chain and "# handle" in line and not line.startswith(("type ", "policy ", "table ")):
            rules.append((chain, comment_of(line), int(line.rsplit("# handle", 1)[1]), line))
    return rules, els


def parse_listing(text: str) -> list[tuple[str, str, int, str]]:
    """[(chain, comment or "", handle, rule text)] of one listed table."""
    return parse_table(text)[0]


def describe(aset: str, key: str, data: str) -> str:
    """What one element does, in nft's words (a DNAT names its target as a rule would)."""
    does = DOES.get(aset, aset)
    if does == "dnat":
        ip, _dot, port = data.rpartition(" . ")
        return f"dnat to {'[' + ip + ']' if ':' in ip else ip}:{port}"
    if aset == "masq_skip":
        return f"{does} {key.split(' . ')[-1]}"
    return does


# --- which element a traced packet matched (`trace`, not the plugin: `re` here) -------
_LOOKUP = (r"((?:(?:ip6? [sd]addr|meta l4proto|th dport|iifname|oifname)(?: \. )?)+)"
           r"\s+(?:map )?@(\w+)")
_PACKET = {"ip saddr": r"\bip6? saddr (\S+)", "ip daddr": r"\bip6? daddr (\S+)",
           "meta l4proto": r"\b(tcp|udp|sctp) dport", "th dport": r"\b(?:tcp|udp|sctp) dport (\d+)",
           "iifname": r'\biif "([^"]+)"', "oifname": r'\boif "([^"]+)"'}


def _part_matches(part: str, value: str) -> bool:
    part = part.strip().strip('"')
    if "/" in part:
        import ipaddress
        try:
            return ipaddress.ip_address(value) in ipaddress.ip_network(part, strict=False)
        except ValueError:
            return False
    return part == value


def matched_element(rule_text: str, packet: str, els: list[dict]) -> dict:
    """The element (from `rules()`) of the set `rule_text` looks up that
    the packet (a trace event's `packet:` text) matches, or {}."""
    import re
    m = re.search(_LOOKUP, rule_text)
    if not m:
        return {}
    exprs = [e.strip().replace("ip6 ", "ip ") for e in m.group(1).split(" . ")]
    values = []
    for e in exprs:
        found = re.search(_PACKET.get(e, r"(?!)"), packet)
        if not found:
            return {}
        values.append(found.group(1))
    for el in els:
        if el.get("set") == m.group(2):
            parts = el["key"].split(" . ")
            if len(parts) == len(values) and all(_part_matches(p, v) for p, v in zip(parts, values)):
                return el
    return {}
