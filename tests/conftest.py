"""Fixtures shared by every test: throwaway nodes and the leak checks."""
from __future__ import annotations

import os

import pytest

from harness import Node, host_snapshot


def pytest_configure(config):
    if os.geteuid() != 0:
        raise pytest.UsageError("the minidocker suite runs as root (namespaces, mounts, rules)")


@pytest.fixture(scope="session", autouse=True)
def host_leak_check(tmp_path_factory):
    """Session end: the real host holds nothing more of ours than at start."""
    session_tmp = str(tmp_path_factory.getbasetemp())
    before = host_snapshot(session_tmp)
    yield
    after = host_snapshot(session_tmp)
    grown = {k: sorted(set(after[k]) - set(before[k])) for k in after}
    grown = {k: v for k, v in grown.items() if v}
    if grown:
        pytest.fail(f"the test session left these on the host: {grown}", pytrace=False)


@pytest.fixture
def node(tmp_path):
    """A fresh node (host) namespace with an `ext` peer; checked for leaks
    and destroyed after the test."""
    n = Node.create(tmp_path / "node")
    try:
        yield n
    finally:
        left = n.leftovers()
        n.destroy()
    if left:
        pytest.fail(f"test left behind in its node: {left}", pytrace=False)


@pytest.fixture
def cni(node):
    """A runtime's view of the node for plugin tests: runs plugins as a
    runtime does and DELs whatever the test left attached."""
    from cni_helpers import Cni
    c = Cni(node)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def cluster(tmp_path, request):
    """A cluster of namespace nodes on one underlay with its own etcd
    (cluster_helpers), every node on one firewall backend (the indirect
    parameter; iptables by default); what its nodes leave behind fails the test."""
    from cluster_helpers import Cluster
    c = Cluster(tmp_path / "cluster", firewall=getattr(request, "param", "iptables"))
    try:
        c.start_etcd()
        yield c
    finally:
        left = c.destroy()
    assert not left, left


@pytest.fixture(scope="session")
def tools(tmp_path_factory):
    """An image with the clients and servers the bridge tests run in containers."""
    from bridge_helpers import tools_archive
    return tools_archive(tmp_path_factory.mktemp("tools"))


@pytest.fixture
def tnode(node, tools):
    """A node with the tools image loaded."""
    from bridge_helpers import load_tools
    load_tools(node, tools)
    return node


@pytest.fixture
def servers(node):
    """Server processes (each in its own session) a test started; killed at
    teardown (ask for it after `cni`, so they go before its DELs)."""
    import signal
    procs = []
    yield procs
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=5)
