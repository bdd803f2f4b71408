"""`network reload` after another tool flushed the tables: every published
port answers again (node loopback, ext, another container), the rule set is
the one from before, and a second reload changes nothing. Both backends."""
from __future__ import annotations

import pytest

from bridge_helpers import TOOLS, client, in_container, load_tools, run_server, tools_archive
from harness import NODE_ADDR


@pytest.fixture(scope="session")
def tools(tmp_path_factory):
    return tools_archive(tmp_path_factory.mktemp("tools"))


def ours(node) -> list[str]:
    """Our rules, sorted, without counters or handles."""
    rules = [l for l in node.iptables_save().splitlines() if "md/" in l or "MINIDOCKER" in l]
    table = False
    for line in node.nft_ruleset().splitlines():
        if line.startswith("table "):
            table = line.split()[2] == "minidocker"
        if table and line.strip():
            rules.append(line.strip())
    return sorted(rules)


def answers(node, port: int, reply: str) -> bool:
    return (client(node.netns, "127.0.0.1", port, tries=3) == reply
            and client(node.ext_netns, NODE_ADDR, port, tries=3) == reply
            and in_container(node, "other", NODE_ADDR, port, tries=3) == reply)


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_reload_after_flush(node, tools, backend):
    load_tools(node, tools)
    env = node.env(MINIDOCKER_FIREWALL=backend)
    node.md("network", "create", "app", env=env)
    node.md("run", "-d", "--name", "web", "-p", "8080:80", TOOLS, "socat",
            "TCP-LISTEN:80,fork,reuseaddr", "SYSTEM:echo default", env=env)
    node.md("run", "-d", "--name", "app1", "--network", "app", "-p", "8081:80", TOOLS, "socat",
            "TCP-LISTEN:80,fork,reuseaddr", "SYSTEM:echo app", env=env)
    # alone on its network and publishing nothing: only its network's rules are there for it
    node.md("network", "create", "lone", env=env)
    node.md("run", "-d", "--name", "other", "--network", "lone", TOOLS, "sleep", "300", env=env)
    assert client(node.netns, "127.0.0.1", 8080, tries=30) == "default"
    assert client(node.netns, "127.0.0.1", 8081, tries=30) == "app"
    assert answers(node, 8080, "default") and answers(node, 8081, "app")
    before = ours(node)
    assert "Nothing to reload" in node.md("network", "reload", env=env).stdout
    for flush in (["iptables", "-t", "nat", "-F"], ["iptables", "-t", "filter", "-F"],
                  ["nft", "flush", "ruleset"]):
        node.sh(*flush)
    assert ours(node) != before
    assert client(node.ext_netns, NODE_ADDR, 8081) == ""
    out = node.md("network", "reload", env=env).stdout
    assert "Reloaded the rules of 3 of 3 endpoints" in out, out
    assert ours(node) == before
    assert answers(node, 8080, "default") and answers(node, 8081, "app")
    again = node.md("network", "reload", env=env).stdout
    assert "Nothing to reload" in again and ours(node) == before
    for name in ("web", "app1", "other"):
        node.md("rm", "-f", name, env=env)
    node.md("network", "rm", "app", "lone", env=env)


def test_reload_input(node):
    assert "Nothing to reload: the rules of 0 endpoints" in node.md("network", "reload").stdout
    res = node.md("network", "reload", "--bogus", check=False)
    assert res.returncode == 2 and "--bogus" in res.stderr
    res = node.md("network", "reload", "extra", check=False)
    assert res.returncode == 2
