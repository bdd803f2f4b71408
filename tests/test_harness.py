"""The harness itself: a node is isolated, wired to ext, and its leak check bites."""
import os

from harness import EXT_ADDR, Node, UPLINK


def test_node_reaches_ext_and_is_isolated(node):
    node.sh("ping", "-c1", "-W2", EXT_ADDR)
    assert node.link_names() == {"lo", UPLINK}
    assert node.leftovers() == []


def test_leak_check_sees_a_left_link(tmp_path):
    n = Node.create(tmp_path / "n")
    try:
        n.sh("ip", "link", "add", "leak0", "type", "veth", "peer", "name", "leak1")
        left = n.leftovers()
        assert any("leak0" in item for item in left)
    finally:
        n.destroy()
    assert not os.path.exists(n.netns)


def test_leak_check_sees_a_left_process(tmp_path):
    n = Node.create(tmp_path / "n")
    try:
        p = n.popen(["sleep", "30"])
        assert any("sleep" in item for item in n.leftovers())
    finally:
        n.destroy()
    p.wait(timeout=5)
    assert p.returncode != 0
