"""The image commands of issue 12: commit, save, history, image inspect,
`inspect` of an image, image prune, and the `image ls/rm/...` aliases.

Compared with what Docker documents: `commit` prints the new image's id
(sha256:...), its image runs with the container's changes (a deleted file
is gone: the upper dir's overlay whiteouts became `.wh.` members); `save`
writes manifest.json, repositories, <id>.json and layer tars, and `load`
into another state root gives the same image ids; `history` prints IMAGE
CREATED CREATED BY SIZE COMMENT, newest first; `image prune` removes only
dangling images (with -a: every image no container uses) and ends with
`Total reclaimed space:`."""
from __future__ import annotations

import json
import re
import tarfile

from mdtools import newcomer, one_line_error


def _image(node, ref, env=None) -> dict:
    return json.loads(node.md("image", "inspect", ref, env=env).stdout)[0]


def _changed(node, name="ch", *opts):
    """A stopped container that added, changed and deleted files (an opaque dir too)."""
    node.md("run", "--name", name, "--network", "none", *opts, "busybox", "sh", "-c",
            "echo new > /root/added; echo changed >> /etc/passwd; rm /etc/group; "
            f"rm -r /home; mkdir -p /home/fresh; echo in > /home/fresh/f; echo {name} > /name")


def _ls(node, image, path):
    return node.md("run", "--rm", "--network", "none", image, "ls", "-a", path, check=False)


def test_commit_runs_with_the_changes(node):
    _changed(node)
    try:
        out = node.md("commit", "-m", "my change", "-a", "me <me@x>", "ch", "mine:v1").stdout
        image_id = out.strip()
        assert image_id.startswith("sha256:") and len(image_id) == 71
        script = ("cat /root/added; tail -n1 /etc/passwd; test -e /etc/group || echo nogroup; "
                  "ls /home; cat /home/fresh/f")
        run = node.md("run", "--rm", "--network", "none", "mine:v1", "sh", "-c", script).stdout
        assert run == "new\nchanged\nnogroup\nfresh\nin\n"
        img = _image(node, "mine:v1")
        base = _image(node, "busybox")
        assert img["Id"] == image_id and img["RepoTags"] == ["mine:v1"]
        assert img["RootFS"]["Layers"][:-1] == base["RootFS"]["Layers"]
        assert len(img["RootFS"]["Layers"]) == len(base["RootFS"]["Layers"]) + 1
        assert img["Comment"] == "my change" and img["Author"] == "me <me@x>"
        assert img["Parent"] == base["Id"]
        # the container's command became the image's (as docker commit)
        assert img["Config"]["Cmd"][0] == "sh"
        # our mount points stay out of the layer
        layer = node.state_root / "images/layers" / img["RootFS"]["Layers"][-1][7:] / "diff"
        assert not (layer / "etc/hosts").exists() and not (layer / "proc").exists()
        # `inspect` finds the image when no container has that name
        assert json.loads(node.md("inspect", "mine:v1").stdout)[0]["Id"] == image_id
        assert json.loads(node.md("inspect", "ch").stdout)[0]["Name"] == "/ch"
        # untagged commit, running container (paused while read)
        node.md("run", "-d", "--name", "live", "--network", "none", "busybox", "sh", "-c",
                "echo up > /up; while true; do sleep 0.1; done")
        try:
            for _ in range(50):
                if node.md("exec", "live", "cat", "/up", check=False).stdout == "up\n":
                    break
            anon = node.md("commit", "live").stdout.strip()
            assert node.md("run", "--rm", "--network", "none", anon, "cat", "/up").stdout == "up\n"
            assert json.loads(node.md("inspect", "live").stdout)[0]["State"]["Status"] == "running"
            assert not json.loads(node.md("inspect", "live").stdout)[0]["State"]["Paused"]
        finally:
            node.md("rm", "-f", "live")
        node.md("rmi", anon)
    finally:
        node.md("rm", "ch")
    node.md("rmi", "mine:v1")


def test_save_load_round_trip_keeps_ids(node, tmp_path):
    _changed(node)
    try:
        node.md("commit", "ch", "mine:v1")
        node.md("tag", "busybox", "other:x")
    finally:
        node.md("rm", "ch")
    ids = {ref: _image(node, ref)["Id"] for ref in ("mine:v1", "busybox:latest")}
    node.md("save", "-o", tmp_path / "two.tar", "mine:v1", "busybox:latest")
    with tarfile.open(tmp_path / "two.tar") as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
        repos = json.load(tar.extractfile("repositories"))
    assert [m["RepoTags"] for m in manifest] == [["mine:v1"], ["busybox:latest"]]
    assert set(repos) == {"mine", "busybox"}
    # the shared busybox layer is in the archive once
    layers = [n for n in names if n.endswith("/layer.tar")]
    assert len(layers) == len(set(layers)) == len(manifest[0]["Layers"])
    assert set(manifest[1]["Layers"]) <= set(manifest[0]["Layers"])
    assert {m["Config"] for m in manifest} == {i[7:] + ".json" for i in ids.values()}
    fresh = node.env(MINIDOCKER_ROOT=tmp_path / "fresh")
    out = node.md("load", "-i", tmp_path / "two.tar", env=fresh).stdout
    assert out == "Loaded image: mine:v1\nLoaded image: busybox:latest\n"
    for ref, image_id in ids.items():
        assert _image(node, ref, env=fresh)["Id"] == image_id
    run = node.md("run", "--rm", "--network", "none", "mine:v1", "cat", "/root/added", env=fresh)
    assert run.stdout == "new\n"
    # to standard output, by id (no tag then, as Docker)
    by_id = node.md("save", ids["mine:v1"][7:19], text=False).stdout
    (tmp_path / "id.tar").write_bytes(by_id)
    with tarfile.open(tmp_path / "id.tar") as tar:
        assert json.load(tar.extractfile("manifest.json"))[0]["RepoTags"] is None
    node.md("rmi", "mine:v1", "other:x")


def test_history(node):
    _changed(node)
    try:
        node.md("commit", "-m", "note", "ch", "mine:v1")
    finally:
        node.md("rm", "ch")
    lines = node.md("history", "mine:v1").stdout.splitlines()
    assert lines[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    top = lines[1]
    assert top.startswith(_image(node, "mine:v1")["Id"][7:19]) and top.endswith("note")
    assert "sh -c echo new > /root/added; echo changed >…" in top
    assert len(lines) == 1 + 1 + len(node.md("history", "-q", "busybox").stdout.splitlines())
    raw = node.md("history", "--human=false", "--no-trunc", "mine:v1").stdout.splitlines()
    assert _image(node, "mine:v1")["Id"] in raw[1] and "rm -r /home; mkdir" in raw[1]
    assert "T" in raw[1].split()[1]   # an RFC 3339 date
    layer = _image(node, "mine:v1")["RootFS"]["Layers"][-1][7:]
    size = json.loads((node.state_root / "images/layers" / layer / "layer.json").read_text())["Size"]
    assert re.search(rf" {{3}}{size} +note$", raw[1]), raw[1]
    node.md("rmi", "mine:v1")


def test_image_prune_removes_only_what_it_should(node):
    _changed(node, "ca")
    _changed(node, "cb")
    try:
        node.md("commit", "ca", "keep:1")
        dangling = node.md("commit", "ca").stdout.strip()
        unused = node.md("commit", "cb", "unused:1").stdout.strip()
        node.md("commit", "cb", "used:1")
        node.md("create", "--name", "user", "--network", "none", "used:1")
        out = node.md("image", "prune", "-f").stdout
        assert out.splitlines()[:2] == ["Deleted Images:", f"deleted: {dangling}"]
        assert out.splitlines()[-1].startswith("Total reclaimed space: ")
        assert node.md("image", "inspect", dangling, check=False).returncode == 1
        left = {t for i in json.loads(node.md("image", "inspect", "keep:1", "unused:1", "used:1",
                                              "busybox").stdout) for t in i["RepoTags"]}
        assert left == {"keep:1", "unused:1", "used:1", "busybox:latest"}
        assert node.md("image", "prune", "-f").stdout == "Total reclaimed space: 0B\n"
        # without -f and without a terminal: refused, nothing removed
        node.md("rm", "ca", "cb")
        proc = node.md("image", "prune", "-a", check=False, stdin=None)
        one_line_error(proc, "-f")
        out = node.md("image", "prune", "-a", "-f").stdout
        assert f"deleted: {unused}" in out and "untagged: unused:1" in out
        assert "untagged: keep:1" in out and "used:1" not in out.replace("unused:1", "")
        assert "untagged: busybox:latest" in out   # no container uses it now
        assert out.splitlines()[-1] != "Total reclaimed space: 0B"
        assert node.md("image", "ls", "-q").stdout.strip() == _image(node, "used:1")["Id"][7:19]
    finally:
        for name in ("ca", "cb", "user"):
            node.md("rm", "-f", name, check=False)
    node.md("image", "rm", "used:1")


def test_bad_input_one_line_errors(node, tmp_path):
    for args, named in ((["commit", "nosuch"], "nosuch"),
                        (["commit", "ch", "Bad:Name"], "Bad:Name"),
                        (["save", "-o", tmp_path / "x.tar", "nosuch:1"], "nosuch:1"),
                        (["save", "-o", tmp_path, "busybox"], str(tmp_path)),
                        (["history", "nosuch"], "nosuch"),
                        (["image", "inspect", "nosuch"], "nosuch"),
                        (["inspect", "nosuch"], "nosuch"),
                        (["inspect", "--type", "container", "busybox"], "busybox")):
        if args[0] == "commit" and len(args) == 3:
            _changed(node)
        proc = node.md(*args, check=False)
        assert proc.returncode == 1, (args, proc)
        one_line_error(proc, named)
        if args[0] == "commit" and len(args) == 3:
            node.md("rm", "ch")
    assert not (tmp_path / "x.tar").exists() and list(tmp_path.glob(".save-*")) == []
    # no -o and a terminal for standard output: refused, as Docker
    tty = node.run(["script", "-qec", "minidocker save busybox", "/dev/null"], check=False)
    assert tty.returncode == 1 and "refusing to save to a terminal" in tty.stdout, tty
    assert [i["RepoTags"] for i in json.loads(node.md("image", "inspect", "busybox").stdout)] \
        == [["busybox:latest"]]
    assert node.md("images", "-q").stdout.count("\n") == 1   # no half-made image


def test_as_a_newcomer_commits_and_saves(node, tmp_path):
    argv, env = newcomer(node)
    node.run([*argv, "run", "--name", "nc", "busybox", "sh", "-c", "echo hi > /hi"], env=env)
    image_id = node.run([*argv, "commit", "nc", "hi:1"], env=env).stdout.strip()
    node.run([*argv, "rm", "nc"], env=env)
    node.run([*argv, "save", "-o", str(tmp_path / "hi.tar"), "hi:1"], env=env)
    node.run([*argv, "rmi", "hi:1"], env=env)
    assert node.run([*argv, "load", "-i", str(tmp_path / "hi.tar")], env=env).stdout \
        == "Loaded image: hi:1\n"
    assert json.loads(node.run([*argv, "inspect", "hi:1"], env=env).stdout)[0]["Id"] == image_id
    assert node.run([*argv, "run", "--rm", "hi:1", "cat", "/hi"], env=env).stdout == "hi\n"
    node.run([*argv, "rmi", "hi:1"], env=env)
