"""Helpers for the runtime tests: image archives built in the test, the OCI
schema validator, and small waits."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from pathlib import Path

from minidocker import paths

REPO = Path(__file__).resolve().parent.parent
SCHEMA_DIR = Path(paths.oci_schema_dir())
APPLETS = ["sh", "echo", "cat", "ls", "env", "pwd", "id", "sleep", "true", "false", "test", "grep", "tr"]


def busybox_tree(dest: Path) -> Path:
    """A tiny rootfs: the host's static busybox and a few applet links."""
    busybox = shutil.which("busybox")
    (dest / "bin").mkdir(parents=True)
    shutil.copy2(busybox, dest / "bin/busybox")
    for applet in APPLETS:
        os.symlink("busybox", dest / "bin" / applet)
    (dest / "etc").mkdir()
    (dest / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                     "app:x:1000:1000:app:/home/app:/bin/sh\n")
    (dest / "etc/group").write_text("root:x:0:\napp:x:1000:\n")
    for d in ("tmp", "proc", "sys", "dev", "home/app"):
        (dest / d).mkdir(parents=True)
    return dest


def tar_bytes(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]], gz: bool = False) -> bytes:
    """A tar built from explicit members (hostile ones included)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for item in entries:
            info, data = item if isinstance(item, tuple) else (item, None)
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    blob = raw.getvalue()
    return gzip.compress(blob) if gz else blob


def member(name: str, kind=tarfile.REGTYPE, data: bytes | None = None, mode=0o644, linkname="",
           devmajor=0, devminor=0):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    info.devmajor, info.devminor = devmajor, devminor
    info.mtime = int(time.time())
    if kind == tarfile.DIRTYPE:
        info.mode = 0o755
    return (info, data if data is not None else b"") if kind == tarfile.REGTYPE else info


def tree_tar(root: Path, gz: bool = False, extra=()) -> bytes:
    """root's files as a layer, then the extra members (as tar_bytes takes them)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(root.iterdir()):
            tar.add(entry, arcname=entry.name)
        for item in extra:
            info, data = item if isinstance(item, tuple) else (item, None)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(raw.getvalue()) if gz else raw.getvalue()


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def uncompressed(layer: bytes) -> bytes:
    if layer[:2] == b"\x1f\x8b":
        return gzip.decompress(layer)
    if layer[:4] == ZSTD_MAGIC:
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(layer), read_across_frames=True).read()
    return layer


def layer_media_type(layer: bytes) -> str:
    suffix = {b"\x1f\x8b": "+gzip", ZSTD_MAGIC[:2]: "+zstd"}.get(layer[:2], "")
    return "application/vnd.oci.image.layer.v1.tar" + suffix


def image_config(config: dict, layers: list[bytes]) -> bytes:
    return json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(uncompressed(l)).hexdigest() for l in layers]},
    }).encode()


def _outer(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def docker_save(layers: list[bytes], config: dict, tags: list[str]) -> bytes:
    """A `docker save` archive (manifest.json, <id>.json, <n>/layer.tar)."""
    cfg = image_config(config, layers)
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    files = {cfg_name: cfg}
    names = []
    for i, layer in enumerate(layers):
        name = f"{i:064x}/layer.tar"
        files[name] = layer
        names.append(name)
    files["manifest.json"] = json.dumps([{"Config": cfg_name, "RepoTags": tags, "Layers": names}]).encode()
    files["repositories"] = b"{}"
    return _outer(files)


def oci_layout(layers: list[bytes], config: dict, ref: str, nested: bool = False) -> bytes:
    """An OCI image-layout archive (oci-layout, index.json, blobs/sha256/...)."""
    files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}'}

    def blob(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        files[f"blobs/sha256/{digest}"] = data
        return "sha256:" + digest

    cfg = image_config(config, layers)
    layer_descs = [{"mediaType": layer_media_type(l), "digest": blob(l), "size": len(l)} for l in layers]
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(cfg), "size": len(cfg)},
        "layers": layer_descs}).encode()
    desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": blob(manifest),
            "size": len(manifest), "platform": {"architecture": "amd64", "os": "linux"}}
    if nested:
        inner = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                            "manifests": [desc]}).encode()
        desc = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": blob(inner),
                "size": len(inner)}
    desc["annotations"] = {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1]}
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [desc]}).encode()
    return _outer(files)


def oci_validator():
    """A validator of config.json against the spec's own JSON schema."""
    import jsonschema
    import referencing
    import referencing.jsonschema

    resources = []
    for path in SCHEMA_DIR.glob("*.json"):
        contents = json.loads(path.read_text())
        resources.append((path.as_uri(), referencing.Resource.from_contents(
            contents, default_specification=referencing.jsonschema.DRAFT4)))
    registry = referencing.Registry().with_resources(resources)
    return jsonschema.Draft4Validator({"$ref": (SCHEMA_DIR / "config-schema.json").as_uri()},
                                      registry=registry)


def one_line_error(proc, *needles):
    """A failed command's one `Error:` line, naming each of needles."""
    assert proc.returncode != 0, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {predicate}")


# Archive members extraction must refuse: each would write outside the
# layer's directory (or is not an image member at all). One table for the
# image tests and the hostile-input corpus; every one is refused by name.
HOSTILE_MEMBERS = {
    "dotdot": [member("../evil", data=b"x")],
    "dotdot-deep": [member("etc/../../evil", data=b"x")],
    "absolute": [member("/tmp/minidocker-hostile", data=b"x")],
    "through-symlink": [member("sub", tarfile.DIRTYPE), member("link", tarfile.SYMTYPE, linkname="sub"),
                        member("link/x", data=b"x")],
    "through-abs-symlink": [member("etc2", tarfile.SYMTYPE, linkname="/tmp"),
                            member("etc2/minidocker-hostile", data=b"x")],
    "through-proc-root": [member("root", tarfile.SYMTYPE, linkname="/proc/self/root"),
                          member("root/tmp/minidocker-hostile", data=b"x")],
    "through-dotdot-chain": [member("a", tarfile.DIRTYPE), member("a/up", tarfile.SYMTYPE, linkname="../../../.."),
                             member("a/up/tmp/minidocker-hostile", data=b"x")],
    "whiteout-through-symlink": [member("t", tarfile.SYMTYPE, linkname="/tmp"),
                                 member("t/.wh.minidocker-keep")],
    "whiteout-dotdot": [member("../.wh.etc")],
    "whiteout-nothing": [member("etc/.wh..")],
    "hardlink-out": [member("passwd", tarfile.LNKTYPE, linkname="../../../etc/passwd")],
    "hardlink-abs": [member("passwd", tarfile.LNKTYPE, linkname="/etc/passwd")],
    "hardlink-missing": [member("x", tarfile.LNKTYPE, linkname="nothere")],
    "hardlink-through-symlink": [member("l", tarfile.SYMTYPE, linkname="/etc"),
                                 member("passwd", tarfile.LNKTYPE, linkname="l/passwd")],
}

# Members that look like escapes but are stored as they are and stay inside
# the image: links resolve in the container's root at run time, and a member
# replacing a link replaces the link, never writes through it. After import,
# each host path named here is unchanged (CONTAINED_HOST_PATHS) and the
# container sees what CONTAINED_CHECKS says.
CONTAINED_MEMBERS = {
    "abs-symlink": [member("etc2", tarfile.SYMTYPE, linkname="/etc")],
    "abs-link-passwd": [member("passwd", tarfile.SYMTYPE, linkname="/etc/passwd")],
    "proc-self-root": [member("hostroot", tarfile.SYMTYPE, linkname="/proc/self/root")],
    "escaping-symlink": [member("a", tarfile.DIRTYPE), member("a/up", tarfile.SYMTYPE, linkname="../../../..")],
    "link-then-file": [member("f", tarfile.SYMTYPE, linkname="/tmp/minidocker-hostile"),
                       member("f", data=b"contained\n")],
    "link-then-dir": [member("d", tarfile.SYMTYPE, linkname="/tmp"), member("d", tarfile.DIRTYPE),
                      member("d/minidocker-hostile", data=b"contained\n")],
}
CONTAINED_CHECKS = {
    "abs-symlink": ("readlink /etc2; test -f /etc2/passwd && echo in-image", "/etc\nin-image\n"),
    "abs-link-passwd": ("readlink /passwd; head -c 5 /passwd", "/etc/passwd\nroot:"),
    "proc-self-root": ("readlink /hostroot; ls /hostroot/bin/busybox", "/proc/self/root\n/hostroot/bin/busybox\n"),
    "escaping-symlink": ("readlink /a/up; ls /a/up/bin/busybox", "../../../..\n/a/up/bin/busybox\n"),
    "link-then-file": ("test -L /f || cat /f", "contained\n"),
    "link-then-dir": ("test -L /d || cat /d/minidocker-hostile", "contained\n"),
}
CONTAINED_HOST_PATHS = ["/tmp/minidocker-hostile", "/etc/passwd", "/tmp/minidocker-keep"]

def newcomer(node) -> tuple[list[str], dict]:
    """How the README has a newcomer run minidocker: `env -i` with PATH,
    MINIDOCKER_ROOT and MINIDOCKER_RUN only. (argv prefix, env for node.run)"""
    from harness import VENV_BIN
    env = {"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
           "MINIDOCKER_ROOT": str(node.state_root), "MINIDOCKER_RUN": str(node.run_root)}
    return ["env", "-i", *[f"{k}={v}" for k, v in env.items()], "minidocker"], env


def assert_refused(node, args: list[str], named: str, code: int = 125) -> None:
    """`minidocker ARGS` fails with code and one `Error:` line naming the bad
    value, and leaves no container behind."""
    proc = node.md(*args, check=False)
    assert proc.returncode == code, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and named in lines[0], proc.stderr
    assert node.md("ps", "-aq").stdout == ""
