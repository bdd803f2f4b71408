"""Images from all three sources (built-in busybox, import, load), and the
archives the store must refuse without changing anything."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import tarfile

import pytest

from mdtools import (CONTAINED_CHECKS, CONTAINED_HOST_PATHS, CONTAINED_MEMBERS, HOSTILE_MEMBERS, _outer,
                     busybox_tree, docker_save, image_config, member, oci_layout, one_line_error, tar_bytes,
                     tree_tar)


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


@pytest.mark.parametrize("case", sorted(HOSTILE_MEMBERS))
def test_import_refuses_hostile_archive(node, tmp_path, case):
    node.md("import", _write(tmp_path / "ok.tar", tar_bytes([member("ok", data=b"ok")])), "ok:1")
    before = store_snapshot(node)
    host = _host_state()
    archive = _write(tmp_path / "evil.tar", tar_bytes([member("ok2", data=b"ok")] + HOSTILE_MEMBERS[case]))
    proc = node.md("import", archive, "evil:1", check=False)
    one_line_error(proc, "refusing 1 member")
    bad = [m if isinstance(m, tarfile.TarInfo) else m[0] for m in HOSTILE_MEMBERS[case]][-1]
    assert repr(bad.name) in proc.stderr
    assert store_snapshot(node) == before and _host_state() == host
    assert "evil" not in node.md("images").stdout


def _host_state() -> dict:
    """The host files the hostile members aim at."""
    out = {}
    for path in CONTAINED_HOST_PATHS:
        try:
            out[path] = (os.lstat(path).st_mtime_ns, open(path, "rb").read())
        except OSError as exc:
            out[path] = exc.errno
    return out


@pytest.mark.parametrize("case", sorted(CONTAINED_MEMBERS))
def test_escape_looking_members_are_stored_and_contained(node, tree, tmp_path, case):
    """Links out of the image are stored as they are and resolve inside the
    container's root; a member replacing a link never writes through it."""
    host = _host_state()
    layer = tree_tar(tree) + b""
    extra = tar_bytes(CONTAINED_MEMBERS[case])
    archive = _write(tmp_path / "c.tar", docker_save([layer, extra], {"Cmd": ["sh"]}, ["contained:1"]))
    node.md("load", "-i", archive)
    assert _host_state() == host
    script, expected = CONTAINED_CHECKS[case]
    for runtime in ("builtin", "runc"):
        assert node.md("run", "--rm", "--runtime", runtime, "contained:1", "sh", "-c", script).stdout == expected
    assert _host_state() == host


def test_refusal_names_every_member(node, tmp_path):
    few = [member(f"../evil{i}", data=b"x") for i in range(3)]
    proc = node.md("import", _write(tmp_path / "few.tar", tar_bytes(few)), "evil:1", check=False)
    one_line_error(proc, "refusing 3 member(s)", "'../evil0'", "'../evil1'", "'../evil2'")
    many = [member(f"d{i}", tarfile.SYMTYPE, linkname="/etc") for i in range(25)]
    many += [member(f"d{i}/x", data=b"x") for i in range(25)]
    proc = node.md("import", _write(tmp_path / "many.tar", tar_bytes(many)), "evil:1", check=False)
    one_line_error(proc, "refusing 25 member(s)", "'d0/x'", "'d19/x'", "and 5 more")
    assert "'d20/x'" not in proc.stderr
    assert store_snapshot(node) == []


def _special_nodes(base) -> list[str]:
    """Device nodes under base other than overlay whiteouts (0:0)."""
    import stat
    out = []
    for dirpath, dirnames, filenames in os.walk(base):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) and st.st_rdev != 0:
                out.append(os.path.join(dirpath, name))
    return out


def test_device_nodes_skipped_with_one_warning(node, tree, tmp_path):
    devices = [member("dev", tarfile.DIRTYPE),
               member("dev/mem", tarfile.CHRTYPE, devmajor=1, devminor=1),
               member("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3),
               member("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0)]
    archive = _write(tmp_path / "dev.tar", tree_tar(tree, extra=devices))
    proc = node.md("import", archive, "devs:1")
    assert proc.stderr.splitlines() == [
        "Warning: skipped 3 device node(s) of the image's layers (a container gets its own /dev)"]
    assert _special_nodes(node.state_root / "images") == []
    # the container's /dev is its own: /dev/null works, /dev/mem and /dev/sda are not there
    out = node.md("run", "--rm", "devs:1", "sh", "-c",
                  "echo x > /dev/null && ls /dev/mem /dev/sda 2>&1; true").stdout
    assert "No such file" in out and out.count("No such file") == 2


def test_setuid_and_xattrs_kept(node, tmp_path):
    import stat
    su = member("su", data=b"#!/bin/sh\n", mode=0o4755)[0]
    su.pax_headers = {"SCHILY.xattr.user.origin": "tar", "SCHILY.xattr.trusted.md": "kept"}
    sg = member("sg", data=b"#!/bin/sh\n", mode=0o2711)
    proc = node.md("import", _write(tmp_path / "s.tar", tar_bytes([(su, b"#!/bin/sh\n"), sg])), "suid:1")
    assert proc.stderr == ""
    diffs = list((node.state_root / "images" / "layers").glob("*/diff"))
    assert len(diffs) == 1
    assert stat.S_IMODE(os.lstat(diffs[0] / "su").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(diffs[0] / "sg").st_mode) == 0o2711
    assert os.getxattr(diffs[0] / "su", "user.origin") == b"tar"
    assert os.getxattr(diffs[0] / "su", "trusted.md") == b"kept"


def test_hard_links_work_and_count_once(node, tree, tmp_path):
    big = b"z" * (3 << 20)
    entries = [member("big", data=big), member("big2", tarfile.LNKTYPE, linkname="big"),
               member("sub", tarfile.DIRTYPE), member("sub/big3", tarfile.LNKTYPE, linkname="big")]
    archive = _write(tmp_path / "h.tar", tree_tar(tree, extra=entries))
    node.md("import", archive, "links:1")
    size = json.loads((next((node.state_root / "images").glob("*/image.json"))).read_text())["Size"]
    assert (3 << 20) < size < (3 << 20) + (4 << 20)   # busybox + one copy of big
    row = [r for r in image_rows(node) if r.startswith("links")][0]
    assert row.split()[-1] in ("4.29MB", "4.3MB", "4.28MB", "4.31MB") or row.split()[-1].endswith("MB")
    out = node.md("run", "--rm", "links:1", "sh", "-c", "stat -c %h /big; cmp /big /sub/big3 && echo same").stdout
    assert out == "3\nsame\n"


def _sharing_save(base_layer, dest, broken_last=False) -> bytes:
    """`docker save a b c` as Docker writes it: a layer repeated across images
    is stored once, the repeats are symlink members to it."""
    files = {}
    entries = []
    for i, (tag, extra_name) in enumerate([("a:1", "fa"), ("b:1", "fb"), ("c:1", "fc")]):
        top = tar_bytes([member(extra_name, data=tag.encode())])
        if broken_last and i == 2:
            top = tar_bytes([member("../escape", data=b"x")])
        cfg = image_config({"Cmd": ["sh", "-c", f"cat /{extra_name}"]}, [base_layer, top])
        import hashlib
        cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
        files[cfg_name] = cfg
        base_name = f"{i:064x}/layer.tar"
        top_name = f"{i + 10:064x}/layer.tar"
        files[top_name] = top
        if i == 0:
            files[base_name] = base_layer
        else:
            files[base_name] = ("symlink", f"../{0:064x}/layer.tar")
        entries.append({"Config": cfg_name, "RepoTags": [tag], "Layers": [base_name, top_name]})
    files["manifest.json"] = json.dumps(entries).encode()
    import io
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            if isinstance(data, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, data[1]
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _layer_dirs(node) -> list[str]:
    return sorted(p.name for p in (node.state_root / "images" / "layers").glob("*"))


def test_layers_shared_once_and_removed_with_their_last_image(node, base_layer, tmp_path):
    archive = _write(tmp_path / "abc.tar", _sharing_save(base_layer, tmp_path))
    out = node.md("load", "-i", archive).stdout
    assert out == "Loaded image: a:1\nLoaded image: b:1\nLoaded image: c:1\n"
    assert len(_layer_dirs(node)) == 4      # one base, three tops
    base_size = len(base_layer)
    du = sum({(st.st_dev, st.st_ino): st.st_size
              for st in map(os.lstat, (node.state_root / "images" / "layers").rglob("*"))
              if st.st_mode & 0o170000 == 0o100000}.values())
    assert du < 1.1 * base_size
    for tag, text in (("a:1", "a:1"), ("b:1", "b:1"), ("c:1", "c:1")):
        assert node.md("run", "--rm", "--runtime", "runc" if tag == "b:1" else "builtin", tag).stdout == text
    node.md("rmi", "a:1", "b:1")
    assert len(_layer_dirs(node)) == 2      # the base stays for c
    assert node.md("run", "--rm", "c:1").stdout == "c:1"
    out = node.md("rmi", "c:1").stdout
    assert out.count("Deleted: sha256:") == 3
    assert _layer_dirs(node) == [] and list((node.state_root / "images" / "l").iterdir()) == []


def test_load_is_atomic_across_images(node, base_layer, tmp_path):
    node.md("import", _write(tmp_path / "ok.tar", base_layer), "base:1")
    before = store_snapshot(node)
    archive = _write(tmp_path / "abc.tar", _sharing_save(base_layer, tmp_path, broken_last=True))
    one_line_error(node.md("load", "-i", archive, check=False), "refusing", "'../escape'")
    assert store_snapshot(node) == before
    assert [r.split()[0] for r in image_rows(node)] == ["base"]


def test_many_and_repeated_layers(node, base_layer, tmp_path):
    """125 layers (Docker's limit) fit in one overlay mount; repeated layers
    (identical empty ones, as Docker writes) are stacked once; 126 are refused."""
    empty = tar_bytes([])
    layers = [base_layer] + [tar_bytes([member(f"f{i}", data=b"%d" % i)]) if i % 2 else empty
                             for i in range(1, 125)]
    archive = _write(tmp_path / "many.tar", docker_save(layers, {"Cmd": ["sh", "-c", "cat /f1 /f123"]}, ["many:1"]))
    node.md("load", "-i", archive)
    assert len(_layer_dirs(node)) == 1 + 1 + 62
    for runtime in ("builtin", "runc"):
        assert node.md("run", "--rm", "--runtime", runtime, "many:1").stdout == "1123"
    before = store_snapshot(node)
    archive = _write(tmp_path / "toomany.tar", docker_save(layers + [empty], {}, ["toomany:1"]))
    one_line_error(node.md("load", "-i", archive, check=False), "126 layers", "at most 125")
    assert store_snapshot(node) == before


def test_scratch_of_a_killed_load_is_swept(node, base_layer, tmp_path):
    """A load killed mid-way leaves images/.tmp-*; the next load, import or
    pull removes it, unless its transaction is alive (holds its flock)."""
    import fcntl
    images = node.state_root / "images"
    images.mkdir(parents=True, exist_ok=True)
    dead = images / ".tmp-dead"
    (dead / "x1/usr/bin").mkdir(parents=True)
    (dead / "x1/usr/bin/half").write_bytes(b"half")
    live = images / ".tmp-live"
    live.mkdir()
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        node.md("import", _write(tmp_path / "ok.tar", base_layer), "ok:1")
        assert not dead.exists() and live.exists()
    finally:
        os.close(fd)
    node.md("rmi", "ok:1")
    node.md("import", _write(tmp_path / "ok.tar", base_layer), "ok:1")
    assert not live.exists()


def test_load_and_import_from_standard_input(node, base_layer, tmp_path):
    layers, config = _layered(base_layer)
    saved = _write(tmp_path / "saved.tar", docker_save(layers, config, ["example/app:1.0"]))
    with open(saved, "rb") as fh:
        assert node.md("load", stdin=fh, text=False).stdout == b"Loaded image: example/app:1.0\n"
    node.md("rmi", "example/app:1.0")
    with open(saved, "rb") as fh:   # a pipe, not a file: nothing can seek
        proc = subprocess.Popen(["cat"], stdin=fh, stdout=subprocess.PIPE)
        assert node.md("load", "-i", "-", stdin=proc.stdout, text=False).stdout == b"Loaded image: example/app:1.0\n"
        proc.wait()
    assert node.md("run", "--rm", "example/app:1.0").stdout == EXPECTED
    gz = _write(tmp_path / "rootfs.tgz", gzip.compress(base_layer))
    with open(gz, "rb") as fh:
        image_id = node.md("import", "-", "piped:1", stdin=fh).stdout.strip()
    assert image_id.startswith("sha256:")
    assert node.md("run", "--rm", "piped:1", "echo", "ok").stdout == "ok\n"
    # the same base layer, from three sources: stored once
    assert len(_layer_dirs(node)) == 3


def test_zstd_and_gzip_layers(node, base_layer, tmp_path):
    """A plain, a zstd (`+zstd`) and a gzip layer in one image, each
    decompressed once while it is read."""
    import zstandard
    layers, config = _layered(base_layer)
    layers[1] = zstandard.ZstdCompressor().compress(layers[1])
    node.md("load", "-i", _write(tmp_path / "z.tar", oci_layout(layers, config, "example/z:1")))
    assert node.md("run", "--rm", "example/z:1").stdout == EXPECTED


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
