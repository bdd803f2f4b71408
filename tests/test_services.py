"""Services: a virtual IP load-balancing over labelled containers (ClusterIP,
NodePort), on both firewall backends: the spread over three backends, a
stopped backend getting nothing more, NodePort from `ext`, ClientIP
affinity, UDP (and its conntrack flushed when an endpoint goes), hairpin, a
service without endpoints refusing fast, endpoints following network
connect/disconnect, an established connection surviving an endpoint change,
refused input leaving nothing, and every rule gone with the last service."""
from __future__ import annotations

import collections
import json
import time

import pytest

from bridge_helpers import TOOLS, client, in_container, tcp_server, udp_server
from harness import NODE_ADDR

BACKENDS = ("iptables", "nftables")


class Md:
    """minidocker in the node with one firewall backend."""

    def __init__(self, node, backend):
        self.node, self.env = node, node.env(MINIDOCKER_FIREWALL=backend)

    def __call__(self, *args, **kw):
        return self.node.md(*args, env=self.env, **kw)

    def service(self, name) -> dict:
        return json.loads(self("service", "inspect", name).stdout)[0]


def requests(md: Md, client_ref: str, vip: str, port: int, n: int) -> list[str]:
    """n TCP requests from inside a container, one connection each: the
    answers in order ("FAIL" for one that got nothing)."""
    loop = (f"i=0; while [ $i -lt {n} ]; do "
            f"r=$(socat -T2 - TCP:{vip}:{port},connect-timeout=2 </dev/null); "
            f'echo "${{r:-FAIL}}"; i=$((i+1)); done')
    return md("exec", client_ref, "sh", "-c", loop, timeout=120).stdout.split()


def serve(md: Md, name: str, label: str, udp: bool = False) -> str:
    """A labelled container answering its name on TCP 80 (and UDP 53)."""
    cmd = " & ".join(" ".join(f"'{a}'" for a in argv)
                     for argv in [tcp_server(name)] + ([udp_server(name)] if udp else []))
    return md("run", "-d", "--name", name, "--label", label, TOOLS, "sh", "-c",
              cmd + " & wait").stdout.strip()


@pytest.mark.parametrize("backend", BACKENDS)
def test_clusterip_spreads_and_follows_the_containers(tnode, backend):
    md = Md(tnode, backend)
    for name in ("web1", "web2", "web3"):
        serve(md, name, "app=web")
    serve(md, "other", "app=db")
    md("run", "-d", "--name", "cl", TOOLS, "sleep", "300")
    vip = md("service", "create", "web", "--selector", "app=web", "--port", "8080:80").stdout.strip()
    assert vip == "10.96.0.2"
    svc = md.service("web")
    assert sorted(e["Name"] for e in svc["Endpoints"]) == ["web1", "web2", "web3"]
    assert any("svc/web" in r for r in svc["Rules"]) and svc["ClusterIP"] == vip
    # the wiring model (network diagram) shows it through services.describe()
    model = json.loads(md("network", "diagram", "--format", "json").stdout)
    entry = next(s for s in model["services"] if s["name"] == "web")
    assert entry["vip"] == vip and len(entry["backends"]) == 3 and entry["rules"], entry
    assert client(tnode.netns, vip, 8080, tries=3) in ("web1", "web2", "web3")   # from the node
    got = requests(md, "cl", vip, 8080, 90)
    counts = collections.Counter(got)
    assert len(got) == 90 and "FAIL" not in counts, counts
    assert all(counts[n] >= 15 for n in ("web1", "web2", "web3")), counts

    md("stop", "-t", "1", "web1")
    assert sorted(e["Name"] for e in md.service("web")["Endpoints"]) == ["web2", "web3"]
    counts = collections.Counter(requests(md, "cl", vip, 8080, 40))
    assert set(counts) == {"web2", "web3"}, counts        # none reaches web1, none fails
    # hairpin: a backend reaching its own service (every backend in turn)
    hair = collections.Counter(requests(md, "web2", vip, 8080, 12))
    assert "FAIL" not in hair and set(hair) <= {"web2", "web3"}, hair
    md("start", "web1")                                    # back in the set
    assert len(md.service("web")["Endpoints"]) == 3
    md("rm", "-f", "web3")
    assert sorted(e["Name"] for e in md.service("web")["Endpoints"]) == ["web1", "web2"]
    assert "web" in md("service", "ls").stdout
    md("service", "rm", "web")
    assert "svc/web" not in tnode.iptables_save() + tnode.nft_ruleset()
    md("rm", "-f", "web1", "web2", "other", "cl")


@pytest.mark.parametrize("backend", BACKENDS)
def test_nodeport_affinity_udp_and_no_endpoints(tnode, backend):
    md = Md(tnode, backend)
    for name in ("a1", "a2", "a3"):
        serve(md, name, "tier=api", udp=True)
    md("run", "-d", "--name", "cl", TOOLS, "sleep", "300")
    vip = md("service", "create", "api", "--selector", "tier=api", "--port", "80", "--port", "53/udp",
             "--type", "NodePort", "--node-port", "30080").stdout.strip()
    svc = md.service("api")
    assert [p["NodePort"] for p in svc["Ports"]][0] == 30080
    udp_np = svc["Ports"][1]["NodePort"]
    assert 30000 <= udp_np <= 32767
    # NodePort from outside, through the node: spread over the backends
    seen = collections.Counter(client(tnode.ext_netns, NODE_ADDR, 30080, tries=3) for _ in range(30))
    assert "" not in seen and len(seen) >= 2, seen
    assert client(tnode.ext_netns, NODE_ADDR, udp_np, "udp", tries=3) in ("a1", "a2", "a3")
    # UDP through the VIP from a container
    assert in_container(tnode, "cl", vip, 53, "udp", tries=3) in ("a1", "a2", "a3")
    # a UDP flow whose endpoint goes is not stuck to it (its conntrack entry is flushed)
    def udp_from_fixed_port():   # tries again from the same port: the same conntrack entry
        for _ in range(3):
            # the server's child for the last datagram holds this peer until it exits
            time.sleep(1)
            out = md("exec", "-i", "cl", "socat", "-T1.5", "-", f"UDP:{vip}:53,sourceport=5555",
                     input="ping\n", check=False).stdout.strip()
            if out:
                return out
        return ""
    first = udp_from_fixed_port()
    assert first in ("a1", "a2", "a3") and udp_from_fixed_port() == first
    md("stop", "-t", "0", first)
    after = udp_from_fixed_port()
    assert after in {"a1", "a2", "a3"} - {first}, tnode.sh("conntrack", "-L", check=False).stdout
    # ClientIP affinity: one client stays on one backend
    md("service", "create", "sticky", "--selector", "tier=api", "--port", "81:80",
       "--session-affinity", "ClientIP")
    sticky = md.service("sticky")["ClusterIP"]
    assert len(set(requests(md, "cl", sticky, 81, 20))) == 1
    # no endpoints: refused at once, not a hang
    md("service", "create", "empty", "--selector", "tier=none", "--port", "80")
    empty = md.service("empty")
    assert empty["Endpoints"] == [] and any("svc/empty" in r for r in empty["Rules"])
    t0 = time.monotonic()
    proc = md("exec", "cl", "socat", "-T2", "-", f"TCP:{empty['ClusterIP']}:80,connect-timeout=5",
              check=False)
    assert proc.returncode != 0 and time.monotonic() - t0 < 2.5, proc.stderr
    assert "refused" in proc.stderr.lower(), proc.stderr
    md("service", "rm", "api", "sticky", "empty")
    md("rm", "-f", "a1", "a2", "a3", "cl")


def test_endpoints_follow_network_connect_and_disconnect(tnode):
    md = Md(tnode, "iptables")
    md("network", "create", "--subnet", "10.8.0.0/24", "-o",
       "minidocker.network.service_range=10.97.5.0/24", "back")   # its own VIP range
    serve(md, "s1", "app=x")                       # on the default bridge
    md("run", "-d", "--name", "cl", "--network", "back", TOOLS, "sleep", "300")
    vip = md("service", "create", "x", "--network", "back", "--selector", "app=x",
             "--port", "80").stdout.strip()
    assert vip == "10.97.5.2"
    proc = md("exec", "cl", "socat", "-T2", "-", f"TCP:{vip}:80,connect-timeout=2", check=False)
    assert proc.returncode != 0 and md.service("x")["Endpoints"] == []
    md("network", "connect", "back", "s1")
    assert [e["IP"] for e in md.service("x")["Endpoints"]] == ["10.8.0.3"]
    assert requests(md, "cl", vip, 80, 3) == ["s1"] * 3
    md("network", "disconnect", "back", "s1")
    assert md.service("x")["Endpoints"] == []
    md("service", "rm", "x")
    md("rm", "-f", "s1", "cl")
    md("network", "rm", "back")


BAD = [
    (["Bad_Name", "--selector", "a=b", "--port", "80"], "invalid service name"),
    (["s", "--port", "80"], "at least one --selector"),
    (["s", "--selector", "nokey", "--port", "80"], "invalid --selector 'nokey'"),
    (["s", "--selector", "a=b"], "at least one --port"),
    (["s", "--selector", "a=b", "--port", "80/sctp"], "unknown protocol 'sctp'"),
    (["s", "--selector", "a=b", "--port", "99999"], "not a port number"),
    (["s", "--selector", "a=b", "--port", "80:x"], "target port 'x'"),
    (["s", "--selector", "a=b", "--port", "80", "--port", "80"], "given twice"),
    (["s", "--selector", "a=b", "--port", "80", "--type", "LoadBalancer"], "invalid --type"),
    (["s", "--selector", "a=b", "--port", "80", "--node-port", "30001"], "needs --type NodePort"),
    (["s", "--selector", "a=b", "--port", "80", "--type", "NodePort", "--node-port", "80"],
     "accepted are 30000-32767"),
    (["s", "--selector", "a=b", "--port", "80", "--session-affinity", "Cookie"],
     "invalid --session-affinity"),
    (["s", "--selector", "a=b", "--port", "80", "--network", "host"], "not host or none"),
    (["s", "--selector", "a=b", "--port", "80", "--network", "nosuch"], "nosuch"),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_refused_input_leaves_nothing(node, backend):
    md = Md(node, backend)
    for args, words in BAD:
        proc = md("service", "create", *args, check=False)
        assert proc.returncode != 0 and words in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    md("service", "create", "s", "--selector", "a=b", "--port", "80", "--type", "NodePort",
       "--node-port", "30001")
    for args, words in ((["s", "--selector", "a=b", "--port", "80"], "already in use"),
                        (["t", "--selector", "a=b", "--port", "80", "--type", "NodePort",
                          "--node-port", "30001"], "already used")):
        proc = md("service", "create", *args, check=False)
        assert proc.returncode != 0 and words in proc.stderr, proc.stderr
    proc = md("network", "create", "-o", "minidocker.network.service_range=10.0.0.0/31", "n1",
              check=False)
    assert proc.returncode != 0 and "invalid service range '10.0.0.0/31'" in proc.stderr
    proc = node.md("service", "create", "u", "--selector", "a=b", "--port", "80", check=False,
                   env=node.env(MINIDOCKER_FIREWALL=backend, MINIDOCKER_SERVICE_RANGE="bogus"))
    assert proc.returncode != 0 and "invalid service range 'bogus'" in proc.stderr
    proc = md("service", "rm", "nosuch", check=False)
    assert proc.returncode != 0 and "no such service" in proc.stderr
    assert md("service", "ls", "-q").stdout.split() == ["s"]
    md("service", "rm", "s")
    assert md("service", "ls", "-q").stdout.split() == []
    proc = md("run", "--rm", "--label", "=x", "busybox", "true", check=False)
    assert proc.returncode == 125 and "invalid label '=x'" in proc.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_established_connection_survives_endpoint_changes(tnode, backend):
    md = Md(tnode, backend)
    for name in ("e1", "e2"):   # answers its name, then echoes what it reads
        md("run", "-d", "--name", name, "--label", "app=echo", TOOLS, "socat",
           "TCP-LISTEN:80,fork,reuseaddr", f"SYSTEM:echo {name}; cat")
    md("run", "-d", "--name", "cl", TOOLS, "sleep", "300")
    vip = md("service", "create", "echo", "--selector", "app=echo", "--port", "80").stdout.strip()
    # one connection open across the change: a line, a pause, another line
    proc = tnode.popen(["minidocker", "exec", "cl", "sh", "-c",
                        f"(echo one; sleep 4; echo two; sleep 1) | socat -T6 - TCP:{vip}:80"],
                       env=md.env)
    time.sleep(1.5)
    serve(md, "e3", "app=echo")                            # an endpoint comes
    assert len(md.service("echo")["Endpoints"]) == 3
    out, _ = proc.communicate(timeout=30)
    lines = out.split()
    assert len(lines) == 3 and lines[0] in ("e1", "e2") and lines[1:] == ["one", "two"], out
    md("service", "rm", "echo")
    md("rm", "-f", "e1", "e2", "e3", "cl")
