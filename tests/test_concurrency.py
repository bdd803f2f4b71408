"""Issue 6, concurrency: 50 concurrent `run -d` with distinct published ports
on one user network, then 50 concurrent `rm -f`: no address twice, every
port answers (with its own container's hostname) while up, nothing left.
The concurrent `network create` of one name is
tests/test_network_cmd.py::test_concurrent_create_of_one_name."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

N = 50
BASE_PORT = 9100


def test_fifty_concurrent_runs_and_removals(node):
    node.md("network", "create", "many")
    node.md("run", "--rm", "--network", "none", "busybox", "true")  # the image, made once

    def start(i: int) -> str:
        return node.md("run", "-d", "--name", f"c{i}", "--network", "many", "-p",
                       f"{BASE_PORT + i}:80", "busybox", "httpd", "-f", "-p", "80", "-h", "/etc",
                       timeout=120).stdout.strip()

    with ThreadPoolExecutor(12) as pool:
        cids = list(pool.map(start, range(N)))
    records = json.loads(node.md("inspect", *cids).stdout)
    addrs = [r["NetworkSettings"]["Networks"]["many"]["IPAddress"] for r in records]
    assert len(set(addrs)) == N and all(addrs), addrs
    assert [r["State"]["Running"] for r in records] == [True] * N

    def fetch(i: int) -> str:
        deadline = time.monotonic() + 20
        while True:
            out = node.sh("curl", "-s", "--max-time", "2", f"http://127.0.0.1:{BASE_PORT + i}/hostname",
                          check=False).stdout.strip()
            if out or time.monotonic() > deadline:
                return out

    with ThreadPoolExecutor(12) as pool:
        names = list(pool.map(fetch, range(N)))
    assert names == [cid[:12] for cid in cids]

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda cid: node.md("rm", "-f", cid, timeout=120), cids))
    assert node.md("ps", "-aq").stdout.strip() == ""
    leases = [p for p in (node.state_root / "ipam").rglob("*")
              if p.is_file() and p.name != "lock" and not p.name.startswith(("last_", "."))]
    assert leases == []
    node.md("network", "rm", "many")
    assert node.md("system", "prune", "-f").stdout.startswith("Nothing to prune")


def test_prune_while_containers_start(node):
    """`system prune` racing `run -d`s takes nothing of a container being
    started (its record, lock or named shim says it is alive)."""
    node.md("network", "create", "race")
    node.md("run", "--rm", "--network", "none", "busybox", "true")
    n = 12

    def start(i: int) -> str:
        return node.md("run", "-d", "--name", f"r{i}", "--network", "race", "-p", f"{BASE_PORT + i}:80",
                       "busybox", "httpd", "-f", "-p", "80", "-h", "/etc", timeout=120).stdout.strip()

    def prune(_i: int) -> str:
        return node.md("system", "prune", "-f", timeout=120).stdout

    with ThreadPoolExecutor(8) as pool:
        runs = [pool.submit(start, i) for i in range(n)]
        prunes = [pool.submit(prune, i) for i in range(4)]
        cids = [f.result() for f in runs]
        for f in prunes:
            f.result()
    records = json.loads(node.md("inspect", *cids).stdout)
    assert [r["State"]["Running"] for r in records] == [True] * n
    for i, cid in enumerate(cids):
        out = node.sh("curl", "-s", "--max-time", "2", "--retry", "5", "--retry-connrefused",
                      f"http://127.0.0.1:{BASE_PORT + i}/hostname", check=False).stdout.strip()
        assert out == cid[:12], i
    assert node.md("system", "prune", "-f").stdout.startswith("Nothing to prune")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda cid: node.md("rm", "-f", cid, timeout=120), cids))
    node.md("network", "rm", "race")
