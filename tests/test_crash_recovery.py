"""Crash recovery: `run`, the shim and the teardown killed (SIGKILL) at each
fault point (minidocker/faults.py), then `system prune -f` brings the node
back to exactly the running containers' state, beside a healthy container
on the same network whose published port keeps answering.

A killed shim: minidocker has no daemon that could adopt the container, so
a container without its shim counts as exited (`ps` says so at once) and
its process is killed by the next `rm -f` or `system prune` (Docker's daemon
would keep it; here nothing could record its exit or tear it down later).
"""
from __future__ import annotations

import functools
import json
import os
import signal
import time

import pytest

from bridge_helpers import TOOLS, client, inspect, load_tools, run_server, tools_archive
from harness import NODE_ADDR


@pytest.fixture(scope="session")
def tools(tmp_path_factory):
    return tools_archive(tmp_path_factory.mktemp("tools"))


@pytest.fixture
def app(node, tools, request):
    """A node with network `app` and a healthy server published on 8080;
    an indirect parameter adds environment (firewall backend, exec path)
    to every minidocker call of the test."""
    extra = getattr(request, "param", {})
    if extra:
        node.env = functools.partial(type(node).env, node, **extra)
    load_tools(node, tools)
    node.md("network", "create", "app")
    run_server(node, "healthy", "--network", "app", "-p", "8080:80")
    assert client(node.netns, "127.0.0.1", 8080, tries=30) == "hello"
    # a second attachment adds the network's shared forward accepts (they
    # stay while the network has rules): settle them before the baseline
    node.md("run", "-d", "--name", "warmup", "--network", "app", TOOLS, "sleep", "60")
    node.md("rm", "-f", "warmup")
    yield node
    node.md("rm", "-f", "healthy", check=False)
    node.md("network", "rm", "app", check=False)


def snapshot(node, skip: str = "") -> dict:
    """Everything of ours in the node; `skip` leaves out one container's
    record (a reconciled container stays listed as exited, as in `ps -a`)."""
    def files(d):
        return sorted(str(p.relative_to(d)) for p in d.rglob("*")
                      if p.is_file() and p.name != "lock" and not p.name.startswith("last_")) \
            if d.is_dir() else []
    rules = [l for l in node.iptables_save().splitlines() if "md/" in l or "MINIDOCKER" in l]
    nft, ours = [], False
    for line in node.nft_ruleset().splitlines():  # our tables only (counters move)
        if line.startswith("table "):
            ours = line.split()[2] == "minidocker"
        if ours:
            nft.append(line)
    return {
        "links": sorted(node.link_names()),
        "rules": sorted(rules),
        "nft": sorted(l.strip() for l in nft),
        "leases": files(node.state_root / "ipam"),
        "mounts": sorted(node.mounts()),
        "pins": files(node.run_root / "netns"),
        "records": sorted(n for n in os.listdir(node.state_root / "containers") if n != skip),
        "endpoints": [f for f in files(node.state_root / "networks") if "/endpoints/" in f],
        "cni cache": files(node.cni_cache / "results"),
        "processes": sorted(p.pid for p in node.processes()),
    }


def same(now: dict, base: dict) -> None:
    """now == base, failing with what is extra and what is missing per kind."""
    diff = {k: {"extra": sorted(set(now[k]) - set(base[k])), "missing": sorted(set(base[k]) - set(now[k]))}
            for k in base if now[k] != base[k]}
    assert not diff, diff


def prune(node) -> str:
    out = node.md("system", "prune", "-f").stdout
    again = node.md("system", "prune", "-f").stdout
    assert again.startswith("Nothing to prune"), again
    return out


def healthy_answers(node) -> None:
    assert client(node.netns, "127.0.0.1", 8080, tries=5) == "hello"
    assert client(node.ext_netns, NODE_ADDR, 8080, tries=5) == "hello"


NFT_EXEC = {"MINIDOCKER_FIREWALL": "nftables", "MINIDOCKER_CNI_EXEC": "1"}


@pytest.mark.parametrize("app,point", [({}, "run:netns-pinned"), ({}, "run:cni-added"),
                                       ({}, "shim:process-started"), (NFT_EXEC, "run:cni-added"),
                                       (NFT_EXEC, "shim:process-started")],
                         indirect=["app"], ids=["netns-pinned", "cni-added", "process-started",
                                                "cni-added-nft-exec", "process-started-nft-exec"])
def test_run_killed_at_fault_point(app, point):
    node = app
    base = snapshot(node)
    res = node.md("run", "-d", "--name", "crashed", "--network", "app", "-p", "8081:80", TOOLS,
                  "sleep", "300", env=node.env(MINIDOCKER_FAULT=point), check=False)
    assert res.returncode != 0
    cid = next(r for r in os.listdir(node.state_root / "containers") if r not in base["records"])
    crashed = snapshot(node, skip=cid)
    assert crashed != base  # the crash left something: that is what prune is for
    assert crashed["pins"] and crashed["mounts"] != base["mounts"]
    if point != "run:netns-pinned":
        assert crashed["links"] != base["links"] and crashed["leases"] != base["leases"]
    if point == "shim:process-started":
        assert len(crashed["processes"]) > len(base["processes"])  # the orphaned container
    out = prune(node)
    assert cid in out
    same(snapshot(node, skip=cid), base)
    healthy_answers(node)
    assert inspect(node, "crashed")["State"]["Running"] is False
    node.md("rm", "crashed")
    same(snapshot(node), base)


def test_teardown_killed_halfway(app):
    node = app
    base = snapshot(node)
    node.md("run", "-d", "--name", "half", "--network", "app", "-p", "8082:80", TOOLS, "sleep", "300",
            env=node.env(MINIDOCKER_FAULT="teardown:half"))
    cid = inspect(node, "half")["Id"]
    node.md("stop", "-t", "0", "half")  # the shim's teardown dies after the network part
    left = snapshot(node, skip=cid)
    assert left["pins"] != base["pins"] and left["mounts"] != base["mounts"]
    prune(node)
    same(snapshot(node, skip=cid), base)
    healthy_answers(node)
    node.md("rm", "half")


@pytest.mark.parametrize("how", ["prune", "rm-f"])
def test_killed_shim(app, how):
    node = app
    base = snapshot(node)
    run_server(node, "victim", "--network", "app", "-p", "8083:80", tcp="victim")
    assert client(node.netns, "127.0.0.1", 8083, tries=30) == "victim"
    record = inspect(node, "victim")
    on_disk = json.loads((node.state_root / "containers" / record["Id"] / "container.json").read_text())
    os.kill(on_disk["ShimPid"], signal.SIGKILL)
    time.sleep(0.1)
    assert inspect(node, "victim")["State"]["Status"] == "exited"  # no shim: not running
    assert client(node.netns, "127.0.0.1", 8083) == "victim"  # its process is still there
    if how == "prune":
        out = prune(node)
        assert "process" in out and record["Id"] in out
        same(snapshot(node, skip=record["Id"]), base)
        node.md("rm", "victim")
    else:
        node.md("rm", "-f", "victim")
    same(snapshot(node), base)
    assert client(node.netns, "127.0.0.1", 8083) == ""
    healthy_answers(node)


def test_lost_record_is_collected_by_executor_gc(app):
    """The crashed container's record and endpoint are gone too (a lost
    state directory): only the CNI cache knows the attachment, and the
    executor's GC (a DEL with the cached config, then cni-bridge's GC)
    removes its veth, rules and lease."""
    node = app
    base = snapshot(node)
    node.md("run", "-d", "--name", "lost", "--network", "app", "-p", "8084:80", TOOLS, "sleep", "300",
            env=node.env(MINIDOCKER_FAULT="run:cni-added"), check=False)
    cid = next(r for r in os.listdir(node.state_root / "containers") if r not in base["records"])
    (node.state_root / "containers" / cid / "container.json").unlink()
    for ep in (node.state_root / "networks").rglob(f"endpoints/{cid}.json"):
        ep.unlink()
    assert snapshot(node) != base
    out = prune(node)
    assert "Removed network attachments (executor GC)" in out and "Removed leases" in out, out
    same(snapshot(node), base)
    healthy_answers(node)


def test_prune_spares_a_foreground_container(node):
    """An attached run's shim is a fork of `run` (no container id in its
    argv): prune must still see it alive (ShimStart), and `ps` too."""
    import subprocess
    from harness import MINIDOCKER
    fg = node.popen([MINIDOCKER, "run", "--name", "fg", "--network", "none", "busybox", "sleep", "2"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while "Up " not in node.md("ps").stdout and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "Up " in node.md("ps").stdout
    assert node.md("system", "prune", "-f").stdout.startswith("Nothing to prune")
    assert fg.wait(timeout=20) == 0  # it ran to its end, not killed (137)
    node.md("rm", "fg")


def test_prune_input(node):
    res = node.md("system", "prune", check=False, stdin=open(os.devnull))
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "-f" in res.stderr
    res = node.md("system", "prune", "--bogus", check=False)
    assert res.returncode == 2 and "--bogus" in res.stderr
    assert node.md("system", "prune", "-f").stdout.startswith("Nothing to prune")
