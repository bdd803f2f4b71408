"""`network diagram`: the wiring model (wiring.py) drawn as a text tree, as
Graphviz dot, or rendered by Graphviz to svg/png. Nothing here reads the
kernel: every fact comes from the model.
"""
from __future__ import annotations

import json

from minidocker.errors import MinidockerError

FORMATS = ("text", "dot", "svg", "png", "json")
WIDTH = 100
RENDER_TIMEOUT = 60


def _short_comment(comment: str) -> str:
    """md/<net>/<64 hex>/eth0 -> md/<net>/<12 hex>/eth0: fits a line."""
    parts = comment.split("/")
    return "/".join(p[:12] if len(p) == 64 else p for p in parts)


def rule_ref(rule: dict) -> str:
    """Where a rule lives, as a person looks it up: the iptables table,
    chain and comment, the nft family/table/chain and handle, or the nft
    set and the element's key."""
    if rule["backend"] == "nftables":
        fam = "ip6" if rule["family"] == 6 else "ip"
        if "set" in rule:
            return f"nft {fam} {rule['table']} set {rule['set']} element {{ {rule['key']} }}"
        return f"nft {fam} {rule['table']} {rule['chain']} handle {rule['handle']}"
    tool = "ip6tables" if rule["family"] == 6 else "iptables"
    target = rule["text"].rsplit(" -j ", 1)[-1].split()[0] if " -j " in rule["text"] else ""
    return (f"{tool} -t {rule['table']} {rule['chain']} \"{_short_comment(rule['comment'])}\""
            + (f" -j {target}" if target else ""))


def _label(c: dict) -> str:
    return f"{c['name'] or '?'} ({c['short_id']})"


def _policies(n: dict) -> str:
    on = lambda b: "on" if b else "off"  # noqa: E731
    return (f"masquerade {on(n['masquerade'])}, isolation {on(n['isolation'])}, "
            f"icc {on(n['icc'])}" + (", internal" if n["internal"] else ""))


def _global(addrs: list[str]) -> str:
    """Addresses without the link-local ones (the JSON keeps them)."""
    return " ".join(a for a in addrs if not a.startswith("fe80:")) or "-"


def _short_path(path: str) -> str:
    return "/".join(p[:12] + "…" if len(p) == 64 else p for p in path.split("/"))


def _endpoint_lines(e: dict) -> list[str]:
    i, v = e["interface"], e["host_veth"]
    route = i["default_route"]
    lines = [_label(e["container"]) + ("  STALE: " + ", ".join(e["stale_why"]) if e["stale"] else ""),
             f"  netns {_short_path(e['namespace']) or '-'}",
             f"  {i['ifindex']}: {i['name'] or e['ifname']}@if{i['peer_ifindex']}  {i['mac'] or '-'}  "
             f"{_global(i['addresses']) if i['addresses'] else e['ipv4'] or '-'}"]
    if route["v4"] or route["v6"]:
        lines.append(f"     default via {' / '.join(r for r in (route['v4'], route['v6']) if r)}")
    lines.append(f"  {v['ifindex']}: {v['name'] or '(no host veth)'}@if{v['peer_ifindex']}"
                 + (f"  on {v['master']}" if v["master"] else ""))
    for p in e["ports"]:
        lines.append(f"  port {p['host_ip']}:{p['host_port']}/{p['proto']} -> "
                     f"{p['container_ip']}:{p['container_port']}" + ("" if p["rules"] else "  NO RULE"))
        lines += [f"     {rule_ref(r)}" for r in p["rules"]]
    for s in e["sharers"]:
        lines.append(f"  shared by {_label(s)} (--network container:)")
    return lines


def text(model: dict, width: int = WIDTH) -> str:
    """A tree within `width` columns (longer lines are cut with '…')."""
    out = ["host"]
    for u in model["host"]["uplinks"]:
        out.append(f"├─ uplink {u['ifindex']}: {u['name']}  {_global(u['addresses'])}")
    route = model["host"]["default_route"]
    if route["v4"] or route["v6"]:
        out.append(f"├─ default via {' / '.join(r for r in (route['v4'], route['v6']) if r)}")
    items = [("net", n) for n in model["networks"]]
    if model["stale"]["veths"] or model["stale"]["rules"]:
        items.append(("stale", model["stale"]))
    if model.get("cluster"):
        items.append(("cluster", model["cluster"]))
    for s in model.get("services") or []:
        items.append(("service", s))
    for k, (kind, item) in enumerate(items):
        last = k == len(items) - 1
        head, pad = ("└─ ", "   ") if last else ("├─ ", "│  ")
        out += [head + line if j == 0 else pad + line for j, line in enumerate(_item_lines(kind, item))]
    return "\n".join(line if len(line) <= width else line[:width - 1] + "…" for line in out) + "\n"


def _item_lines(kind: str, item: dict) -> list[str]:
    if kind == "net":
        return _network_lines(item)
    if kind == "stale":
        return (["stale (no live container explains these)"]
                + [f"  veth {v['ifindex']}: {v['name']}@if{v['peer_ifindex']}  {v['network']} / "
                   f"{v['container_id'][:12]} / {v['ifname']}" for v in item["veths"]]
                + [f"  rule {rule_ref(r)}" for r in item["rules"]])
    if kind == "cluster":
        return ([f"cluster node {item.get('Node')}  pod subnet {item.get('Subnet')}"]
                + [f"  peer {p['Name']} {p['Subnet']} via {p['PublicIP']}" for p in item.get("Peers", [])]
                + [f"  route {r}" if isinstance(r, str) else f"  route {json.dumps(r)}"
                   for r in item.get("Routes", [])]
                + [f"  fdb {f}" if isinstance(f, str) else f"  fdb {json.dumps(f)}" for f in item.get("FDB", [])])
    return [f"service {item.get('name')} {item.get('vip')}:{item.get('port')}/{item.get('proto')}"] + \
        [f"  backend {b}" for b in item.get("backends", [])]


def _network_lines(n: dict) -> list[str]:
    b = n["bridge"]
    lines = [f"network {n['name']} ({n['driver']}, {n['id'][:12]})  {' '.join(n['subnets'])}",
             f"  {_policies(n)}",
             f"  bridge {b['ifindex']}: {b['name']}  {_global(b['addresses']) if b['present'] else ''}"
             + ("" if b["present"] else "  (not present: no endpoint yet)")]
    lines += [f"  shared rule {rule_ref(r)}" for r in n["rules"]]
    for k, e in enumerate(n["endpoints"]):
        last = k == len(n["endpoints"]) - 1
        ep = _endpoint_lines(e)
        lines += [("  └─ " if last else "  ├─ ") + ep[0]] + \
                 [("     " if last else "  │  ") + line for line in ep[1:]]
    return lines


# --- Graphviz -----------------------------------------------------------------

def _q(value: str) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _attrs(**kw) -> str:
    return "[" + ", ".join(f"{k}={_q(v)}" for k, v in kw.items()) + "]"


def dot(model: dict) -> str:
    """The model as a Graphviz digraph: a node per uplink, bridge and
    container (id `container-<short id>`), an edge per veth pair and one per
    published port (id `port-<short id>-<host port>-<proto>`); stale in red."""
    out = ["digraph wiring {", '  rankdir=LR; node [shape=box, fontname="Helvetica", fontsize=10];',
           '  edge [fontname="Helvetica", fontsize=9];',
           f"  host {_attrs(label='host', shape='house')};"]
    for u in model["host"]["uplinks"]:
        out.append(f"  {_q('uplink-' + u['name'])} {_attrs(label=str(u['ifindex']) + ': ' + u['name'] + chr(10) + _global(u['addresses']).replace(' ', chr(10)))};")
        out.append(f"  host -> {_q('uplink-' + u['name'])} [dir=none];")
    for n in model["networks"]:
        out += _dot_network(n)
    for v in model["stale"]["veths"]:
        out.append(f"  {_q('stale-' + v['name'])} {_attrs(label='STALE veth ' + v['name'], color='red', style='dashed')};")
    if model["stale"]["rules"]:
        label = "STALE rules\n" + "\n".join(rule_ref(r) for r in model["stale"]["rules"])
        out.append(f"  stale_rules {_attrs(label=label, color='red', style='dashed')};")
    out += _dot_extras(model)
    out.append("}")
    return "\n".join(out) + "\n"


def _dot_extras(model: dict) -> list[str]:
    """The cluster's node, subnet and peers; services and their backends."""
    out = []
    c = model.get("cluster")
    if c:
        out.append(f"  cluster_node {_attrs(label='cluster node ' + str(c.get('Node')) + chr(10) + 'pods ' + str(c.get('Subnet')), shape='component')};")
        out.append("  host -> cluster_node [dir=none];")
        for p in c.get("Peers", []):
            pid = "peer-" + str(p.get("Name"))
            out.append(f"  {_q(pid)} {_attrs(label='peer ' + str(p.get('Name')) + chr(10) + str(p.get('Subnet')) + ' via ' + str(p.get('PublicIP')), shape='component')};")
            out.append(f"  cluster_node -> {_q(pid)} {_attrs(label=c.get('Backend', ''), style='dashed')};")
    for k, svc in enumerate(model.get("services") or []):
        sid = f"service-{k}"
        out.append(f"  {_q(sid)} {_attrs(label='service ' + str(svc.get('name')) + chr(10) + str(svc.get('vip')) + ':' + str(svc.get('port')) + '/' + str(svc.get('proto')), shape='diamond')};")
        for b in svc.get("backends", []):
            out.append(f"  {_q(sid)} -> {_q(str(b))} [style=dotted];")
    return out


def _dot_network(n: dict) -> list[str]:
    b = n["bridge"]
    br = "bridge-" + n["name"]
    out = [f"  subgraph {_q('cluster_' + n['name'])} {{",
           f"    label={_q('network ' + n['name'] + '  ' + ' '.join(n['subnets']) + chr(10) + _policies(n))};",
           f"    {_q(br)} {_attrs(label=str(b['ifindex']) + ': ' + b['name'] + chr(10) + _global(b['addresses']), shape='oval')};"]
    edges = []
    for e in n["endpoints"]:
        c, i, v = e["container"], e["interface"], e["host_veth"]
        node = "container-" + c["short_id"]
        label = (f"{c['name']} ({c['short_id']})\n{i['ifindex']}: {i['name'] or e['ifname']}@if{i['peer_ifindex']} "
                 f"{_global(i['addresses'])}\n{i['mac']}" + ("\nSTALE: " + ", ".join(e["stale_why"]) if e["stale"] else ""))
        out.append(f"    {_q(node)} {_attrs(id=node, label=label, color='red' if e['stale'] else 'black')};")
        for s in e["sharers"]:
            sn = "container-" + s["short_id"]
            out.append(f"    {_q(sn)} {_attrs(id=sn, label=s['name'] + ' (' + s['short_id'] + ')' + chr(10) + 'container:' + c['name'], style='dashed')};")
            edges.append(f"  {_q(sn)} -> {_q(node)} {_attrs(label='shares netns', style='dashed')};")
        edges.append(f"  {_q(br)} -> {_q(node)} "
                     f"{_attrs(id='veth-' + c['short_id'] + '-' + n['name'], dir='none', label=str(v['ifindex']) + ': ' + (v['name'] or '?') + '@if' + str(v['peer_ifindex']), color='red' if e['stale'] else 'black')};")
        for p in e["ports"]:
            rules = "\n".join(rule_ref(r) for r in p["rules"]) or "NO RULE"
            pid = "port-%s-%s-%s" % (c["short_id"], p["host_port"], p["proto"])
            plabel = "%s:%s/%s -> :%s\n%s" % (p["host_ip"], p["host_port"], p["proto"], p["container_port"], rules)
            edges.append(f"  host -> {_q(node)} {_attrs(id=pid, label=plabel, color='blue')};")
    out.append("  }")
    out.append(f"  host -> {_q(br)} [dir=none];")
    return out + edges


def render(model: dict, fmt: str) -> bytes:
    """The diagram in `fmt` as bytes. svg and png come from the Graphviz
    `dot` program (Debian `graphviz`, installed by scripts/bootstrap): its
    command line is the interface the package guarantees (no Python binding
    to depend on just for this), fed on stdin and read from stdout so no
    temporary file is left, with a timeout because a large graph's layout
    can take long."""
    if fmt == "json":
        return (json.dumps(model, indent=2) + "\n").encode()
    if fmt == "text":
        import shutil
        return text(model, min(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns)).encode()
    if fmt == "dot":
        return dot(model).encode()
    if fmt not in FORMATS:
        raise MinidockerError(f"unknown format {fmt!r}: accepted are {', '.join(FORMATS)}")
    import shutil
    import subprocess
    exe = shutil.which("dot")
    if not exe:
        raise MinidockerError(f"--format {fmt} needs Graphviz's `dot` (Debian package graphviz)")
    proc = subprocess.run([exe, f"-T{fmt}"], input=dot(model).encode(), capture_output=True,
                          timeout=RENDER_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise MinidockerError(f"dot -T{fmt} failed: {proc.stderr.decode(errors='replace').strip()[:200]}")
    return proc.stdout
