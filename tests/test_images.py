"""Images from all three sources (built-in busybox, import, load), and the
archives the store must refuse without changing anything."""
from __future__ import annotations

import gzip
import json
import os
import tarfile

import pytest

from mdtools import HOSTILE_MEMBERS, busybox_tree, docker_save, member, oci_layout, tar_bytes, tree_tar


@pytest.fixture(scope="session")
def tree(tmp_path_factory):
    return busybox_tree(tmp_path_factory.mktemp("tree") / "rootfs")


@pytest.fixture(scope="session")
def base_layer(tree):
    return tree_tar(tree)


def store_snapshot(node) -> list[str]:
    """Every file of the image store and container state, lock files aside."""
    out = []
    for base in (node.state_root / "images", node.state_root / "containers"):
        for dirpath, dirnames, filenames in os.walk(base):
            for name in dirnames + filenames:
                out.append(os.path.relpath(os.path.join(dirpath, name), node.state_root))
    return sorted(out)


def image_rows(node) -> list[str]:
    return node.md("images").stdout.splitlines()[1:]


def one_line_error(proc, *needles):
    assert proc.returncode != 0, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def test_builtin_busybox_made_on_first_use_and_rmi(node):
    assert image_rows(node) == []
    assert node.md("run", "--rm", "busybox", "busybox", "echo", "hi").stdout == "hi\n"
    rows = image_rows(node)
    assert len(rows) == 1 and rows[0].split()[:2] == ["busybox", "latest"]
    # an image under a container stays
    node.md("run", "--name", "keep", "busybox", "true")
    one_line_error(node.md("rmi", "busybox", check=False), "used by a container")
    assert len(image_rows(node)) == 1
    node.md("rm", "keep")
    out = node.md("rmi", "busybox").stdout
    assert "Untagged: busybox:latest" in out and "Deleted: sha256:" in out
    assert image_rows(node) == []
    assert not list((node.state_root / "images").glob(".tmp-*"))


def test_busybox_image_has_applets_and_minimal_etc(node):
    out = node.md("run", "--rm", "busybox", "sh", "-c",
                  "ls /bin/sh /usr/bin/wget /sbin/ifconfig >/dev/null && cat /etc/passwd && "
                  "test -d /tmp && test -d /root && echo ok").stdout
    assert out.startswith("root:x:0:0:") and out.endswith("ok\n")


@pytest.mark.parametrize("gz", [False, True], ids=["tar", "tar.gz"])
def test_import_rootfs(node, base_layer, tmp_path, gz):
    archive = tmp_path / ("rootfs.tar.gz" if gz else "rootfs.tar")
    archive.write_bytes(gzip.compress(base_layer) if gz else base_layer)
    image_id = node.md("import", archive, "mini:v1").stdout.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    assert any(r.split()[:2] == ["mini", "v1"] for r in image_rows(node))
    out = node.md("run", "--rm", "mini:v1", "/bin/sh", "-c", "cat /etc/group; echo $PATH").stdout
    assert out == "root:x:0:\napp:x:1000:\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    # an imported rootfs has no Cmd: a command is required
    one_line_error(node.md("run", "--rm", "mini:v1", check=False), "no command specified")
    # by id prefix too
    assert node.md("run", "--rm", image_id[7:19], "echo", "by-id").stdout == "by-id\n"


def _layered(base_layer):
    """Two layers over the base: a whiteout, an opaque directory, config."""
    extra = tar_bytes([
        member("etc/a", data=b"a\n"), member("etc/b", data=b"b\n"),
        member("data", tarfile.DIRTYPE), member("data/old", tarfile.DIRTYPE),
        member("data/old/x", data=b"x\n"), member("data/keep", data=b"keep\n"),
    ])
    top = tar_bytes([
        member("etc/.wh.a"),
        member("data/old", tarfile.DIRTYPE),
        member("data/old/new", data=b"new\n"),
        member("data/old/.wh..wh..opq"),
        member("work", tarfile.DIRTYPE),
    ], gz=True)
    config = {"Env": ["PATH=/bin", "FOO=bar"], "Entrypoint": ["/bin/sh", "-c"],
              "Cmd": ["echo FOO=$FOO; pwd; id -u; ls /data/old; test -e /etc/a || echo a-gone; cat /etc/b /data/keep"],
              "WorkingDir": "/work", "User": "app", "ExposedPorts": {"80/tcp": {}}}
    return [base_layer, extra, top], config


EXPECTED = "FOO=bar\n/work\n1000\nnew\na-gone\nb\nkeep\n"


def test_load_docker_save_applies_layers_and_keeps_config(node, base_layer, tmp_path):
    layers, config = _layered(base_layer)
    archive = tmp_path / "saved.tar"
    archive.write_bytes(docker_save(layers, config, ["example/app:1.0"]))
    assert node.md("load", "-i", archive).stdout == "Loaded image: example/app:1.0\n"
    assert node.md("run", "--rm", "example/app:1.0").stdout == EXPECTED
    # -e overrides the image's Env; the entrypoint stays, the Cmd is replaced
    assert node.md("run", "--rm", "-e", "FOO=baz", "example/app:1.0", "echo $FOO").stdout == "baz\n"
    node.md("run", "--name", "c1", "example/app:1.0")
    info = json.loads(node.md("inspect", "c1").stdout)[0]
    assert info["Config"]["ExposedPorts"] == {"80/tcp": {}}
    assert info["Config"]["User"] == "app" and info["Config"]["WorkingDir"] == "/work"
    assert info["Config"]["Entrypoint"] == ["/bin/sh", "-c"]
    node.md("rm", "c1")


@pytest.mark.parametrize("nested", [False, True], ids=["manifest", "nested-index"])
def test_load_oci_layout(node, base_layer, tmp_path, nested):
    layers, config = _layered(base_layer)
    archive = tmp_path / "oci.tar"
    archive.write_bytes(oci_layout(layers, config, "example/oci:2", nested=nested))
    assert node.md("load", "--input", archive).stdout == "Loaded image: example/oci:2\n"
    assert node.md("run", "--rm", "--runtime", "runc", "example/oci:2").stdout == EXPECTED


# the kinds import must refuse (the corpus in test_hostile.py runs them all)
IMPORT_REFUSES = ["dotdot", "dotdot-deep", "absolute", "abs-symlink", "escaping-symlink",
                  "through-symlink", "chardev", "blockdev", "hardlink-out", "hardlink-abs"]


@pytest.mark.parametrize("case", IMPORT_REFUSES)
def test_import_refuses_hostile_archive(node, tmp_path, case):
    node.md("import", _write(tmp_path / "ok.tar", tar_bytes([member("ok", data=b"ok")])), "ok:1")
    before = store_snapshot(node)
    archive = _write(tmp_path / "evil.tar", tar_bytes([member("ok2", data=b"ok")] + HOSTILE_MEMBERS[case]))
    proc = node.md("import", archive, "evil:1", check=False)
    one_line_error(proc, "refusing")
    assert store_snapshot(node) == before
    assert not (tmp_path / "evil").exists() and not os.path.exists("/tmp/minidocker-hostile")
    assert "evil" not in node.md("images").stdout


@pytest.mark.parametrize("case", ["dotdot", "abs-symlink", "chardev"])
def test_load_refuses_hostile_layer(node, base_layer, tmp_path, case):
    before = store_snapshot(node)
    layers = [base_layer, tar_bytes(HOSTILE_MEMBERS[case])]
    for i, blob in enumerate([docker_save(layers, {"Cmd": ["sh"]}, ["evil:1"]),
                              oci_layout(layers, {"Cmd": ["sh"]}, "evil:2")]):
        proc = node.md("load", "-i", _write(tmp_path / f"evil{i}.tar", blob), check=False)
        one_line_error(proc, "refusing")
        assert store_snapshot(node) == before


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


CORRUPT = {
    "not-a-tar": b"this is not an archive\n" * 40,
    "truncated-gzip": None,  # filled in below
    "no-manifest": None,
    "missing-layer": None,
    "bad-digest": None,
    "manifest-not-json": None,
    "archive-member-dotdot": None,
}


def _corrupt(case: str, base_layer: bytes) -> bytes:
    import io
    from mdtools import _outer
    if case == "not-a-tar":
        return CORRUPT[case]
    if case == "truncated-gzip":
        return gzip.compress(docker_save([base_layer], {}, ["x:1"]))[:2000]
    if case == "no-manifest":
        return _outer({"hello.txt": b"hi"})
    if case == "missing-layer":
        return _outer({"manifest.json": json.dumps([{"Config": "c.json", "RepoTags": ["x:1"],
                                                     "Layers": ["nope/layer.tar"]}]).encode(),
                       "c.json": b"{}"})
    if case == "bad-digest":
        blob = oci_layout([base_layer], {}, "x:1")
        raw = io.BytesIO()
        with tarfile.open(fileobj=io.BytesIO(blob)) as src, tarfile.open(fileobj=raw, mode="w") as dst:
            for m in src.getmembers():
                data = src.extractfile(m).read()
                if m.name.startswith("blobs/") and len(data) == len(base_layer):
                    data = data[:-1] + b"!"
                dst.addfile(m, io.BytesIO(data))
        return raw.getvalue()
    if case == "manifest-not-json":
        return _outer({"manifest.json": b"[{not json"})
    if case == "archive-member-dotdot":
        return _outer({"../manifest.json": b"[]"})
    raise AssertionError(case)


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_load_refuses_corrupt_archive(node, base_layer, tmp_path, case):
    before = store_snapshot(node)
    proc = node.md("load", "-i", _write(tmp_path / "bad.tar", _corrupt(case, base_layer)), check=False)
    one_line_error(proc)
    assert store_snapshot(node) == before


def test_image_bad_input(node, tmp_path):
    archive = _write(tmp_path / "ok.tar", tar_bytes([member("ok", data=b"ok")]))
    one_line_error(node.md("import", archive, "Not_Valid:tag", check=False), "invalid image reference")
    one_line_error(node.md("import", tmp_path / "missing.tar", "x:1", check=False), "no such file")
    one_line_error(node.md("load", "-i", tmp_path / "missing.tar", check=False), "no such file")
    one_line_error(node.md("rmi", "nosuchimage", check=False), "unknown image")
    proc = node.md("run", "--rm", "nosuchimage", "true", check=False)
    one_line_error(proc, "unknown image 'nosuchimage'")
    assert proc.returncode == 125
    assert store_snapshot(node) == []
