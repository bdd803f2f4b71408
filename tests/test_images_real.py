"""Real-world images built from the host's files (no network), with what
every Debian or Alpine image has: a merged /usr with relative links, the
loader reached through an absolute link, /etc/alternatives-style absolute
chains, a setuid binary, a file capability, /dev nodes, hard links, and a
second layer with whiteouts and an opaque directory. Wrapped as a rootfs
tarball, a `docker save` of several images sharing the base layer, and an
OCI archive; each loads and runs bash through the loader link on both
runtimes."""
from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import tarfile

import pytest

from mdtools import image_config, member, oci_layout, tar_bytes

BASH_VERSION = subprocess.run(["bash", "-c", "echo $BASH_VERSION"], capture_output=True,
                              text=True, check=True).stdout
RUNTIMES = ["builtin", "runc"]
# security.capability, VFS_CAP_REVISION_2, effective, permitted CAP_NET_RAW (13)
NET_RAW_XATTR = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)


def _libs(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    return [p for line in out.splitlines() for p in line.split() if p.startswith("/lib/")]


def _copy(src: str, root, dest: str, mode=None):
    path = root / dest.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(os.path.realpath(src), path)
    os.chmod(path, mode if mode is not None else 0o755)
    return path


@pytest.fixture(scope="module")
def base_tar(tmp_path_factory):
    """The base layer: GNU tar of a tree like Debian 12's (--xattrs, as
    Docker keeps them)."""
    root = tmp_path_factory.mktemp("real") / "rootfs"
    for d in ("usr/bin", "usr/lib/x86_64-linux-gnu", "usr/lib64", "etc/alternatives", "dev",
              "tmp", "proc", "sys", "home/app", "opt/keep", "opt/gone"):
        (root / d).mkdir(parents=True)
    os.symlink("usr/bin", root / "bin")                     # merged /usr: relative links
    os.symlink("usr/lib", root / "lib")
    os.symlink("usr/lib64", root / "lib64")
    for binary in ("/usr/bin/bash", "/usr/bin/id", "/usr/bin/cat", "/usr/bin/ls", "/usr/bin/stat",
                   "/usr/bin/readlink", "/usr/bin/grep"):
        _copy(binary, root, binary)
        for lib in _libs(binary):
            _copy(lib, root, "/usr" + lib)
    loader = "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    _copy(loader, root, "/usr" + loader)
    os.symlink(loader, root / "usr/lib64/ld-linux-x86-64.so.2")   # absolute, through /lib
    os.symlink("/etc/alternatives/sh2", root / "usr/bin/sh2")     # absolute chain
    os.symlink("/usr/bin/bash", root / "etc/alternatives/sh2")
    _copy("/usr/bin/id", root, "/usr/bin/id-suid", mode=0o4755)
    capped = _copy("/usr/bin/bash", root, "/usr/bin/bash-cap")
    os.setxattr(capped, "security.capability", NET_RAW_XATTR)
    os.link(root / "usr/bin/bash", root / "usr/bin/bash-hard")
    os.mknod(root / "dev/null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(root / "dev/zero", 0o666 | 0o020000, os.makedev(1, 5))
    os.mknod(root / "dev/loop9", 0o660 | 0o060000, os.makedev(7, 9))
    os.chmod(root / "tmp", 0o1777)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\napp:x:1000:1000::/home/app:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\napp:x:1000:\n")
    (root / "opt/keep/a").write_text("a\n")
    (root / "opt/gone/old").write_text("old\n")
    (root / "opt/gone/older").write_text("older\n")
    out = root.parent / "base.tar"
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-cpf", str(out),
                    "-C", str(root), "."], check=True, timeout=60)
    return out.read_bytes()


def _top_layer() -> bytes:
    """Whiteouts of a file and of a directory, an opaque directory."""
    return tar_bytes([
        member("opt", tarfile.DIRTYPE), member("opt/keep", tarfile.DIRTYPE), member("opt/keep/.wh.a"),
        member("opt/gone", tarfile.DIRTYPE), member("opt/gone/.wh..wh..opq"),
        member("opt/gone/new", data=b"new\n"), member("usr", tarfile.DIRTYPE),
        member("usr/bin", tarfile.DIRTYPE), member("usr/bin/.wh.ls"),
    ])


PROBE = ("echo $BASH_VERSION; sh2 -c 'echo alt $BASH_VERSION'; shopt -s nullglob; a=(/opt/keep/*); echo ${#a[@]}; "
         "cat /opt/gone/*; test -e /usr/bin/ls || echo ls-gone; stat -c %h /usr/bin/bash; "
         "test -c /dev/null && ! test -e /dev/loop9 && echo own-dev")
EXPECTED = f"{BASH_VERSION}alt {BASH_VERSION}0\nnew\nls-gone\n2\nown-dev\n"
USER_PROBE = ("id-suid; grep CapEff /proc/self/status; "
              "bash-cap -c 'while read -r l; do [[ $l == CapEff* ]] && echo \"$l\"; done < /proc/self/status'; "
              "bash -p -c 'id -u'")
USER_EXPECTED = ("uid=1000(app) gid=1000(app) euid=0(root) groups=1000(app)\n"
                 "CapEff:\t0000000000000000\nCapEff:\t0000000000002000\n1000\n")


def _run_all(node, ref: str, user_ref: str | None = None) -> None:
    for runtime in RUNTIMES:
        out = node.md("run", "--rm", "--runtime", runtime, "--entrypoint", "bash", ref, "-c",
                      "echo $BASH_VERSION")
        assert out.stdout == BASH_VERSION, out
        if user_ref:
            assert node.md("run", "--rm", "--runtime", runtime, user_ref, "-c", PROBE).stdout == EXPECTED
            assert node.md("run", "--rm", "--runtime", runtime, user_ref + "-app", "-c",
                           USER_PROBE).stdout == USER_EXPECTED


def test_rootfs_tarball(node, base_tar, tmp_path):
    archive = tmp_path / "rootfs.tar.gz"
    archive.write_bytes(gzip.compress(base_tar))
    proc = node.md("import", archive, "debianish:1")
    assert proc.stderr == ("Warning: skipped 3 device node(s) of the image's layers "
                           "(a container gets its own /dev)\n")
    _run_all(node, "debianish:1")
    for runtime in RUNTIMES:
        out = node.md("run", "--rm", "--runtime", runtime, "debianish:1", "/usr/bin/sh2", "-c",
                      "readlink /lib64/ld-linux-x86-64.so.2; stat -c %a /usr/bin/id-suid")
        assert out.stdout == "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2\n4755\n"


def _docker_save_sharing(base: bytes, top: bytes) -> bytes:
    """Three images on one base, as `docker save` writes them: the base's
    layer.tar once, its repeats as symlink members."""
    import hashlib
    import io
    import json
    images = [("real:1", {"Entrypoint": ["bash"]}, [base, top]),
              ("real:1-app", {"Entrypoint": ["bash"], "User": "app"}, [base, top]),
              ("real:base", {"Cmd": ["bash"]}, [base])]
    raw = io.BytesIO()
    manifest = []
    base_name = hashlib.sha256(base).hexdigest() + "/layer.tar"
    with tarfile.open(fileobj=raw, mode="w") as tar:
        def add(name, data=None, link=None):
            info = tarfile.TarInfo(name)
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        add(base_name, base)
        top_name = hashlib.sha256(top).hexdigest() + "/layer.tar"
        add(top_name, top)
        for i, (tag, config, layers) in enumerate(images):
            cfg = image_config(config, layers)
            cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
            add(cfg_name, cfg)
            names = []
            for j, layer in enumerate(layers):
                name = f"{i:02d}{j:062x}/layer.tar"    # a repeated layer: a link to the first copy
                add(name, link=f"../{(base_name if layer is base else top_name)}")
                names.append(name)
            manifest.append({"Config": cfg_name, "RepoTags": [tag], "Layers": names})
        add("manifest.json", json.dumps(manifest).encode())
    return raw.getvalue()


def test_docker_save_of_images_sharing_a_layer(node, base_tar, tmp_path, monkeypatch):
    archive = tmp_path / "saved.tar"
    archive.write_bytes(_docker_save_sharing(base_tar, _top_layer()))
    proc = node.md("load", "-i", archive)
    assert proc.stdout == "Loaded image: real:1\nLoaded image: real:1-app\nLoaded image: real:base\n"
    assert len(list((node.state_root / "images/layers").iterdir())) == 2
    _run_all(node, "real:base", user_ref="real:1")
    # each layer's tar can be made again byte for byte (what push sends)
    from minidocker.images import layertar
    monkeypatch.setenv("MINIDOCKER_ROOT", str(node.state_root))
    for layer_dir in (node.state_root / "images/layers").iterdir():
        assert layertar.original_tar("sha256:" + layer_dir.name) is not None


def test_oci_archive(node, base_tar, tmp_path):
    archive = tmp_path / "oci.tar"
    layers = [gzip.compress(base_tar), _top_layer()]
    archive.write_bytes(oci_layout(layers, {"Entrypoint": ["bash"]}, "example/real:oci"))
    node.md("load", "-i", archive)
    app = oci_layout(layers, {"Entrypoint": ["bash"], "User": "app"},
                     "example/real:oci-app")
    (tmp_path / "app.tar").write_bytes(app)
    node.md("load", "-i", tmp_path / "app.tar")
    assert len(list((node.state_root / "images/layers").iterdir())) == 2
    _run_all(node, "example/real:oci", user_ref="example/real:oci")
