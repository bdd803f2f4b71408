"""The known topology of the diagram and trace tests: networks `front` and
`back`, web (front, -p 8080:80, TCP server), db (back, -p 8085:80 and
-p 8053:53/udp, TCP and UDP servers), cli (front, -p 8090:80, nothing
listens) and side (--network container:web)."""
from __future__ import annotations

import contextlib
import json

from bridge_helpers import TOOLS, client, inspect, run_server
from harness import NODE_ADDR


def topology(node, backend: str) -> dict:
    """Build it with firewall `backend`; returns {name: container id} and
    waits until web answers on its published port."""
    env = node.env(MINIDOCKER_FIREWALL=backend)
    node.md("network", "create", "front", env=env)
    node.md("network", "create", "back", env=env)
    ids = {"web": run_server(node, "web", "--network", "front", "-p", "8080:80", tcp="web", env=env),
           "db": run_server(node, "db", "--network", "back", "-p", "8085:80", "-p", "8053:53/udp",
                            tcp="db", udp="dbu", env=env)}
    ids["cli"] = node.md("run", "-d", "--name", "cli", "--network", "front", "-p", "8090:80", TOOLS,
                         "sleep", "300", env=env).stdout.strip()
    ids["side"] = node.md("run", "-d", "--name", "side", "--network", "container:web", TOOLS,
                          "sleep", "300", env=env).stdout.strip()
    assert client(node.netns, NODE_ADDR, 8080, tries=30) == "web"
    assert client(node.netns, NODE_ADDR, 8085, tries=30) == "db"
    return ids


def remove(node, backend: str) -> None:
    env = node.env(MINIDOCKER_FIREWALL=backend)
    node.md("rm", "-f", "side", "cli", "db", "web", env=env)
    node.md("network", "rm", "front", "back", env=env)


@contextlib.contextmanager
def built(node, backend: str):
    """The topology for a `with` block, removed at its end even when a check
    failed (so a failure reports itself, not a leak)."""
    ids = topology(node, backend)
    try:
        yield ids
    finally:
        remove(node, backend)


def diagram(node, *args: str) -> dict:
    return json.loads(node.md("network", "diagram", "--format", "json", *args).stdout)


def ip_of(node, name: str, net: str) -> str:
    return inspect(node, name)["NetworkSettings"]["Networks"][net]["IPAddress"]
