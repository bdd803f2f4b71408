"""The benches' clean-up of a private state root's cgroup parent: also in
the hierarchies only runc uses (blkio, cpuset, name=systemd, v2), where
`scripts/bench`'s `runc run` rows leave it. Nothing here touches the real
cgroup tree: the sweep is pointed at a scratch directory."""
from __future__ import annotations

import os

from bench import soak
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
