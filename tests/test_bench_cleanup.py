"""The benches' clean-up of a private state root's cgroup parent: also in
the hierarchies only runc uses (blkio, cpuset, name=systemd, v2), where
`scripts/bench`'s `runc run` rows leave it. Nothing here touches the real
cgroup tree: the sweep is pointed at a scratch directory."""
from __future__ import annotations

import os
import subprocess

from bench import netns, soak
from minidocker import paths


def test_the_parent_goes_from_every_hierarchy(tmp_path, monkeypatch):
    root = tmp_path / "state"
    name = paths.default_cgroup_parent(root)
    mounts = tmp_path / "cgroup"
    for hierarchy in ("blkio", "cpuset", "systemd", "unified"):
        os.makedirs(mounts / hierarchy / name / "leftover-child")
    os.makedirs(mounts / "blkio" / "minidocker-someone-else")
    monkeypatch.setattr(soak, "CGROUP_MOUNTS", str(mounts))
    assert soak.remove_cgroup_parent(root) == []
    assert sorted(p.name for h in mounts.iterdir() for p in h.iterdir()) == ["minidocker-someone-else"]


def test_a_busy_parent_is_reported_not_raised(tmp_path, monkeypatch):
    root = tmp_path / "state"
    name = paths.default_cgroup_parent(root)
    mounts = tmp_path / "cgroup"
    os.makedirs(mounts / "blkio" / name)
    (mounts / "blkio" / name / "tasks").write_text("123\n")   # rmdir fails: not empty
    monkeypatch.setattr(soak, "CGROUP_MOUNTS", str(mounts))
    problems = soak.remove_cgroup_parent(root)
    assert len(problems) == 1 and problems[0].startswith(str(mounts / "blkio" / name))


def test_unmount_under_says_what_it_found(tmp_path):
    """What a bench finds mounted under its root after the runtime's own
    clean-up is a leak: unmounted, and named so the bench can report it."""
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "none", str(tmp_path / "a")], check=True, timeout=30)
    subprocess.run(["mount", "-t", "tmpfs", "none", str(tmp_path / "a")], check=True, timeout=30)
    assert netns.unmount_under(str(tmp_path)) == [str(tmp_path / "a")]
    assert netns.unmount_under(str(tmp_path)) == []


def test_scale_node_clean_removes_a_container_whose_id_it_never_got(tmp_path):
    """`bench scale`'s node clean-up removes every container of its state
    root, also one whose `run` was cut off before printing its id: killing
    that one's shim instead would leave its overlay and namespace mounts."""
    from bench.scale import Node, Series
    with netns.BenchNetns() as ns:
        node = Node(ns, tmp_path / "n", "iptables", [], Series("t"))
        try:
            node.prepare()
            lost = node.soak.mdrun("run", "-d", "busybox", "sleep", "300")
            assert lost.returncode == 0 and node.ids == []
            assert netns._mounts_under(str(tmp_path / "n"))   # its rootfs and namespace
        finally:
            leaked = node.clean()
        assert leaked == [] and node.soak.shims() == [] and node.soak.container_processes() == []
        assert node.soak.mdrun("ps", "-aq").stdout.strip() == ""
    soak.remove_cgroup_parent(tmp_path / "n" / "lib")
