"""`minidocker trace` on a known topology, per firewall backend: a published
port from a client outside the node (delivered, DNAT shown), from the node
via localhost (the output path), from another container (hairpin), across
isolated networks (dropped by the isolation rule), to a published port
nobody listens on (refused), to an unpublished port (no DNAT: what
happened instead), a UDP datagram; two traces at once; the tracing table
gone after each, also after SIGINT or SIGTERM midway, and the table of a
trace killed outright goes with the next trace; bad input."""
from __future__ import annotations

import json
import signal
import time

import pytest

from harness import EXT_ADDR, MINIDOCKER, NODE_ADDR
from mdtools import wait_for
from wiring_helpers import built, ip_of

BACKENDS = ["iptables", "nftables"]


def _tables(node) -> str:
    return node.sh("nft", "list", "tables").stdout


def trace(node, *args: str) -> dict:
    out = json.loads(node.md("trace", "--json", *args).stdout)
    assert "minidocker-trace" not in _tables(node)      # the tracing table is gone
    return out


def _dnat(t: dict) -> list[dict]:
    return [s for s in t["steps"] if s["words"].startswith("DNAT")]


def _check_delivered(t: dict, hook: str, web: str, backend: str) -> None:
    assert t["outcome"].startswith("delivered to web:80 via mdbr-"), t["outcome"]
    assert t["outcome"].endswith("-> eth0") or "hairpin" in t["outcome"]
    dnat = _dnat(t)
    assert len(dnat) == 1 and dnat[0]["hook"] == hook, t["steps"]
    assert dnat[0]["words"].startswith("DNAT 0.0.0.0:8080 -> ")
    assert f"container web ({web[:12]})" in dnat[0]["owner"]
    assert dnat[0]["table"] == ("nat" if backend == "iptables" else "minidocker") and dnat[0]["handle"] > 0
    assert t["probe"]["result"] == "connected"


@pytest.mark.parametrize("backend", BACKENDS)
def test_trace_paths(tnode, backend):
    node = tnode
    with built(node, backend) as ids:
        # from outside the node: prerouting DNAT, then forward
        t = trace(node, "--from", EXT_ADDR, "--to", f"{NODE_ADDR}:8080")
        _check_delivered(t, "prerouting", ids["web"], backend)
        assert t["from"]["namespace"] == node.ext_netns and "forward" in [s["hook"] for s in t["steps"]]
        # from the node via localhost: the output path
        t = trace(node, "--to", "127.0.0.1:8080")
        _check_delivered(t, "output", ids["web"], backend)
        assert t["from"]["what"] == "the host" and t["steps"][0]["hook"] == "output"
        # from another container on the bridge, through the host's address (hairpin masquerade)
        t = trace(node, "--from", "cli", "--to", f"{NODE_ADDR}:8080")
        _check_delivered(t, "prerouting", ids["web"], backend)
        # iptables: the network's shared rule (the connection's mark says it was published);
        # nftables: the element of the published port
        masq = [s for s in t["steps"] if s["words"].startswith("masquerade")]
        assert len(masq) == 1 and masq[0]["owner"] == (
            "network front" if backend == "iptables" else f"container web ({ids['web'][:12]}) on network front"), t["steps"]
        if backend == "iptables":   # the mark that tells that rule the connection was published
            assert [s["words"].split(":")[0] for s in t["steps"] if s["chain"] == "MINIDOCKER"] == ["mark", "DNAT 0.0.0.0"]
        t = trace(node, "--from", "web", "--to", f"{NODE_ADDR}:8080")
        assert "hairpin" in t["outcome"], t["outcome"]
        # across isolated networks: dropped, and said so
        t = trace(node, "--from", "cli", "--to", "db:80")
        assert t["to"]["address"] == ip_of(node, "db", "back")
        assert t["outcome"] == "dropped by the isolation rule between networks front and back", t
        # iptables: the network's shared rule; nftables: the element of the endpoint it was going to
        assert t["steps"][-1]["verdict"] == "drop" and t["steps"][-1]["owner"] == (
            "network back" if backend == "iptables" else f"container db ({ids['db'][:12]}) on network back")
        # published, but nothing listens in the container
        t = trace(node, "--from", EXT_ADDR, "--to", f"{NODE_ADDR}:8090")
        assert t["outcome"] == "refused: nothing listens on 80/tcp in cli", t["outcome"]
        assert "cli" in _dnat(t)[0]["owner"]
        # not published: no DNAT, the host itself refuses
        t = trace(node, "--from", EXT_ADDR, "--to", f"{NODE_ADDR}:8099")
        assert _dnat(t) == [] and t["outcome"].startswith("no DNAT rule matched 203.0.113.1:8099/tcp")
        assert t["outcome"].endswith("refused: nothing listens on 8099/tcp on the host")
        if backend == "iptables":   # marked on the way into MINIDOCKER, unmarked on the way out
            assert [s["words"].split(":")[0] for s in t["steps"] if "mark" in s["words"]] == ["mark", "unmark"]
        # a UDP datagram to a published port, answered
        # (the reply comes from a child socat forks: under load that takes more than the default 1 s)
        t = trace(node, "--from", EXT_ADDR, "--to", f"{NODE_ADDR}:8053", "--proto", "udp", "--timeout", "10")
        assert t["probe"]["result"] == "answered" and t["outcome"].startswith("delivered to db:53 via")
        # the words a person reads
        out = node.md("trace", "--from", EXT_ADDR, "--to", f"{NODE_ADDR}:8080").stdout
        assert f"DNAT 0.0.0.0:8080 -> {ip_of(node, 'web', 'front')}:80 for container web ({ids['web'][:12]})" in out
        assert out.rstrip().splitlines()[-1].startswith("delivered to web:80 via mdbr-")


def _popen_trace(node, *args, sigint_ignored=False):
    """sigint_ignored: started as a background job of a non-interactive shell
    is (SIGINT ignored): Ctrl-C must still end the trace and its table."""
    def ignore_sigint():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return node.popen([MINIDOCKER, "trace", "--json", *args], start_new_session=True,
                      preexec_fn=ignore_sigint if sigint_ignored else None)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_traces_at_once_signals_and_bad_input(tnode, backend):
    node = tnode
    with built(node, backend):
        procs = [_popen_trace(node, "--from", EXT_ADDR, "--to", f"{NODE_ADDR}:8080"),
                 _popen_trace(node, "--from", "cli", "--to", "db:80")]
        outs = [json.loads(p.communicate(timeout=30)[0]) for p in procs]
        assert outs[0]["outcome"].startswith("delivered to web:80") and len(_dnat(outs[0])) == 1
        assert outs[1]["outcome"].startswith("dropped by the isolation rule") and _dnat(outs[1]) == []
        assert outs[0]["probe"]["table"] != outs[1]["probe"]["table"]
        assert "minidocker-trace" not in _tables(node)
        # Ctrl-C midway (waiting for an answer that never comes): the table goes,
        # also when the trace was started with SIGINT ignored
        for ignored in (False, True):
            p = _popen_trace(node, "--from", "cli", "--to", "db:80", "--timeout", "30", sigint_ignored=ignored)
            wait_for(lambda: "minidocker-trace" in _tables(node), timeout=20)
            time.sleep(0.2)
            p.send_signal(signal.SIGINT)
            assert p.wait(timeout=10) == 130, ignored
            assert "minidocker-trace" not in _tables(node)
        p = _popen_trace(node, "--from", "cli", "--to", "db:80", "--timeout", "30")
        wait_for(lambda: "minidocker-trace" in _tables(node), timeout=20)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 143
        assert "minidocker-trace" not in _tables(node)
        # a trace killed outright leaves its table; the next trace removes it
        p = _popen_trace(node, "--from", "cli", "--to", "db:80", "--timeout", "30")
        wait_for(lambda: "minidocker-trace" in _tables(node), timeout=20)
        p.kill()
        p.wait(timeout=10)
        wait_for(lambda: not [c for c in node.processes() if "monitor" in " ".join(c.cmdline())])  # died with it
        assert "minidocker-trace" in _tables(node)
        trace(node, "--to", "127.0.0.1:8080")
        # bad input: one line naming the value, non-zero, no table left
        for args, word in ((["--to", "nowhere"], "'nowhere'"), (["--to", "web:99999"], "'web:99999'"),
                           (["--to", "ghost:80"], "'ghost'"), (["--from", "ghost", "--to", "web:80"], "'ghost'"),
                           (["--from", "192.0.2.77", "--to", "web:80"], "'192.0.2.77'"),
                           (["--to", "web:80", "--proto", "icmp"], "icmp"),
                           (["--to", "web:80", "--timeout", "0"], "0")):
            proc = node.md("trace", *args, check=False)
            assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
            assert word in proc.stderr, (args, proc.stderr)
        assert "minidocker-trace" not in _tables(node)
