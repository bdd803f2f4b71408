"""`minidocker network create / ls / inspect / rm / prune`, run in a node:
Docker's output, CNI file networks, bad input (nothing changes), and one
name created concurrently."""
import json
import os
import re

import pytest

from harness import MINIDOCKER


def snapshot(node) -> dict:
    """Everything bad input must leave as it was: network records and
    endpoints, leases, containers' network settings, links, rules."""
    files = {}
    for sub in ("networks", "ipam"):
        base = node.state_root / sub
        for dirpath, _dirs, names in os.walk(base):
            for name in names:
                path = os.path.join(dirpath, name)
                with open(path, "rb") as fh:
                    files[os.path.relpath(path, node.state_root)] = fh.read()
    for path in (node.state_root / "containers").glob("*/container.json"):
        files[str(path)] = json.loads(path.read_text()).get("NetworkSettings")
    rules = [re.sub(r"\[\d+:\d+\]", "", l) for l in node.iptables_save().splitlines()
             if not l.startswith("#")]  # no time stamps or packet counters
    return {"files": files, "links": sorted(node.link_names()), "rules": rules,
            "nft": node.nft_ruleset()}


def fails(node, *args, words):
    """Run a network command that must fail with one `Error:` line naming `words`."""
    proc = node.md("network", *args, check=False)
    assert proc.returncode != 0, proc.stdout
    err = proc.stderr.strip()
    assert err.startswith("Error: ") and "\n" not in err, err
    for w in ([words] if isinstance(words, str) else words):
        assert w in err, err
    return proc


def inspect(node, *refs):
    return json.loads(node.md("network", "inspect", *refs).stdout)


def test_create_ls_inspect_rm(node):
    net_id = node.md("network", "create", "--subnet", "10.50.0.0/16", "--gateway", "10.50.0.254",
                     "--ip-range", "10.50.1.0/24", "-o", "com.docker.network.bridge.name=br-app",
                     "-o", "com.docker.network.driver.mtu=1400",
                     "-o", "com.docker.network.bridge.enable_icc=false", "app").stdout.strip()
    assert len(net_id) == 64 and int(net_id, 16) >= 0
    v6 = node.md("network", "create", "--ipv6", "--internal", "v6").stdout.strip()

    lines = node.md("network", "ls").stdout.splitlines()
    assert lines[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    rows = [l.split() for l in lines[1:]]
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("bridge", "bridge", "local"), ("host", "host", "local"), ("none", "null", "local"),
        ("app", "bridge", "local"), ("v6", "bridge", "local")]
    assert all(len(r[0]) == 12 for r in rows) and len({r[0] for r in rows}) == 5
    assert rows[3][0] == net_id[:12]
    quiet = node.md("network", "ls", "-q").stdout.split()
    assert quiet == [r[0] for r in rows]
    js = [json.loads(l) for l in node.md("network", "ls", "--format", "json").stdout.splitlines()]
    assert [(j["Name"], j["Driver"], j["ID"]) for j in js] == [(r[1], r[2], r[0]) for r in rows]

    app, six = inspect(node, "app", v6[:8])
    assert app["Name"] == "app" and app["Id"] == net_id and app["Driver"] == "bridge"
    assert app["Scope"] == "local" and app["EnableIPv6"] is False and app["Internal"] is False
    assert app["Created"]
    assert app["IPAM"]["Config"] == [{"Subnet": "10.50.0.0/16", "Gateway": "10.50.0.254",
                                      "IPRange": "10.50.1.0/24"}]
    assert app["Options"] == {"com.docker.network.bridge.name": "br-app",
                              "com.docker.network.driver.mtu": "1400",
                              "com.docker.network.bridge.enable_icc": "false"}
    assert app["Containers"] == {}
    assert six["EnableIPv6"] is True and six["Internal"] is True
    assert [c["Subnet"].count(":") > 0 for c in six["IPAM"]["Config"]] == [False, True]

    proc = node.md("network", "rm", "app", v6)
    assert proc.stdout.split() == ["app", v6]
    assert [l.split()[1] for l in node.md("network", "ls").stdout.splitlines()[1:]] == \
        ["bridge", "host", "none"]
    assert not (node.state_root / "networks" / net_id).exists()


def test_builtins_inspect_and_cni_file_networks(node):
    conf = {"cniVersion": "1.0.0", "name": "filenet", "plugins": [
        {"type": "bridge", "bridge": "cnibr0", "ipam": {"type": "host-local", "ranges": [
            [{"subnet": "10.77.0.0/24", "gateway": "10.77.0.1"}]]}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}
    path = node.cni_conf / "10-filenet.conflist"
    path.write_text(json.dumps(conf))
    rows = [l.split() for l in node.md("network", "ls").stdout.splitlines()[1:]]
    assert rows[-1][1:] == ["filenet", "cni", "local"]
    host, none, bridge, filenet = inspect(node, "host", "none", "bridge", "filenet")
    assert (host["Driver"], none["Driver"], bridge["Driver"]) == ("host", "null", "bridge")
    assert bridge["Options"]["com.docker.network.bridge.name"] == "minidocker0"
    assert filenet["Driver"] == "cni" and filenet["ConfigFile"] == str(path)
    assert filenet["Plugins"] == ["bridge", "portmap"]
    assert filenet["IPAM"]["Config"] == [{"Subnet": "10.77.0.0/24", "Gateway": "10.77.0.1"}]
    assert filenet["Id"].startswith(rows[-1][0]) and filenet["ConfigDigest"].startswith("sha256:")
    assert inspect(node, rows[-1][0])[0]["Name"] == "filenet"
    before = snapshot(node)
    fails(node, "rm", "filenet", words=["filenet", str(path), "cannot be removed"])
    fails(node, "create", "filenet", words=["'filenet'", "already exists"])
    assert snapshot(node) == before and path.exists()
    conf["plugins"][1]["capabilities"]["bandwidth"] = True
    path.write_text(json.dumps(conf))
    # the id stays (endpoints are recorded under it); the digest tells the edit
    edited = inspect(node, "filenet")[0]
    assert edited["Id"] == filenet["Id"] and edited["ConfigDigest"] != filenet["ConfigDigest"]


def test_prune_keeps_builtins_and_needs_confirmation(node):
    for name in ("p1", "p2"):
        node.md("network", "create", name)
    before = snapshot(node)
    fails(node, "prune", words=["-f", "not a terminal"])
    assert snapshot(node) == before
    out = node.md("network", "prune", "-f").stdout.splitlines()
    assert out == ["Deleted Networks:", "p1", "p2"]
    assert [l.split()[1] for l in node.md("network", "ls").stdout.splitlines()[1:]] == \
        ["bridge", "host", "none"]
    assert node.md("network", "prune", "-f").stdout == ""


def test_bad_input_changes_nothing(node):
    node.md("network", "create", "--subnet", "10.60.0.0/24", "taken")
    before = snapshot(node)
    cases = [
        (["create", "--", "-bad"], ["invalid network name '-bad'"]),
        (["create", "_x"], ["invalid network name '_x'", "letters, digits"]),
        (["create", "n" * 129], ["invalid network name", "at most 128"]),
        (["create", "-o", "com.docker.network.bridge.name=uplink0", "x"], ["'uplink0'", "veth", "exists"]),
        (["create", "--subnet", "10.61.0.0/24", "--gateway", "abc", "x"], ["invalid gateway 'abc'"]),
        (["create", "a/b"], ["invalid network name"]),
        (["create", "taken"], ["'taken'", "already exists"]),
        (["create", "bridge"], ["'bridge'", "reserved"]),
        (["create", "--subnet", "10.60.0.128/25", "x"], ["10.60.0.128/25", "overlaps 10.60.0.0/24"]),
        (["create", "--subnet", "203.0.113.0/25", "x"], ["overlaps 203.0.113.0/24"]),
        (["create", "--subnet", "10.1.0.1/24", "x"], ["invalid subnet '10.1.0.1/24'", "ADDRESS/PREFIX"]),
        (["create", "--subnet", "nonsense", "x"], ["invalid subnet 'nonsense'"]),
        (["create", "--subnet", "10.61.0.0/24", "--gateway", "10.62.0.1", "x"],
         ["gateway 10.62.0.1", "10.61.0.0/24"]),
        (["create", "--subnet", "10.61.0.0/24", "--ip-range", "10.62.0.0/25", "x"],
         ["ip-range 10.62.0.0/25", "not inside subnet 10.61.0.0/24"]),
        (["create", "--gateway", "10.62.0.1", "x"], ["--subnet"]),
        (["create", "-o", "foo=bar", "x"], ["unknown network option 'foo'", "com.docker.network.driver.mtu"]),
        (["create", "-o", "novalue", "x"], ["invalid -o 'novalue'", "KEY=VALUE"]),
        (["create", "-o", "com.docker.network.driver.mtu=12", "x"], ["invalid MTU '12'", "68 to 65535"]),
        (["create", "-o", "com.docker.network.driver.mtu=abc", "x"], ["invalid MTU 'abc'"]),
        (["create", "-o", "com.docker.network.bridge.enable_icc=maybe", "x"], ["'maybe'", "true or false"]),
        (["create", "-o", "minidocker.network.non_masquerade_cidrs=10.244.0.0/16,bogus", "x"],
         ["'bogus'", "CIDRs"]),
        (["create", "-o", "com.docker.network.bridge.name=" + "b" * 16, "x"], ["invalid bridge name"]),
        (["create", "--driver", "overlay", "x"], ["'overlay'", "accepted: bridge"]),
        (["create", "--subnet", "fd00:9::/64", "x"], ["IPv6", "--ipv6"]),
        (["rm", "nosuch"], ["'nosuch' not found"]),
        (["rm", "bridge"], ["bridge", "pre-defined"]),
        (["rm", "host"], ["host", "pre-defined"]),
        (["rm", "none"], ["none", "pre-defined"]),
        (["inspect", "nosuch"], ["'nosuch' not found"]),
    ]
    for args, words in cases:
        fails(node, *args, words=words)
        assert snapshot(node) == before, args


def test_rm_reports_each_failure_and_removes_the_rest(node):
    node.md("network", "create", "ok1")
    node.md("network", "create", "ok2")
    proc = node.md("network", "rm", "ok1", "nosuch", "host", "ok2", check=False)
    assert proc.returncode == 1
    assert proc.stdout.split() == ["ok1", "ok2"]
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 2 and "'nosuch' not found" in errors[0] and "host" in errors[1]


def test_concurrent_create_of_one_name(node):
    procs = [node.popen([MINIDOCKER, "network", "create", "same"]) for _ in range(10)]
    results = [(p.wait(timeout=60), *p.communicate(timeout=60)) for p in procs]
    winners = [r for r in results if r[0] == 0]
    losers = [r for r in results if r[0] != 0]
    assert len(winners) == 1 and len(winners[0][1].strip()) == 64
    for rc, out, err in losers:
        assert err.strip() == "Error: network with name 'same' already exists", err
    records = list((node.state_root / "networks").glob("*/network.json"))
    names = [json.loads(p.read_text())["name"] for p in records]
    assert sorted(names) == ["bridge", "same"] or names == ["same"]
    assert [l.split()[1] for l in node.md("network", "ls").stdout.splitlines()[1:]].count("same") == 1


def test_prune_and_rm_see_through_endpoints_of_removed_containers(node):
    """An endpoint whose container record is gone (no teardown ran) does not
    keep a network; one whose container exists does."""
    ids = {n: node.md("network", "create", n).stdout.strip() for n in ("used", "orphaned")}
    for name, cid in (("used", "c1" * 32), ("orphaned", "c2" * 32)):
        d = node.state_root / "networks" / ids[name] / "endpoints"
        d.mkdir(parents=True)
        (d / f"{cid}.json").write_text(json.dumps({"Name": name + "-ctr", "IfName": "eth0"}))
    cdir = node.state_root / "containers" / ("c1" * 32)
    cdir.mkdir(parents=True)
    (cdir / "container.json").write_text(json.dumps({"Id": "c1" * 32, "Name": "/used-ctr"}))
    assert node.md("network", "prune", "-f").stdout.splitlines() == ["Deleted Networks:", "orphaned"]
    fails(node, "rm", "used", words=["used", "active endpoints (used-ctr)"])
    cdir.joinpath("container.json").unlink()
    assert node.md("network", "rm", "used").stdout.split() == ["used"]
