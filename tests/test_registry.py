"""`pull`, `push`, `login` and `run` of a registry image against a real
registry: Debian's docker-registry (distribution 2.8) started in the test's
node on its loopback under a temporary directory, filled by skopeo from
archives the test builds (a multi-platform OCI index among them), and the
same registry behind a bearer-token front (tests/token_registry.py) that
answers as Docker Hub does."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mdtools import (busybox_tree, docker_save, image_config, member, tar_bytes,
                     tree_tar, _outer, layer_media_type, one_line_error)

PLAIN, TOKEN = 5000, 5001
TOKEN_SCRIPT = Path(__file__).resolve().parent / "token_registry.py"
USER, PASSWORD = "tester", "s3cret-pass"


class Registry:
    """docker-registry on the node's 127.0.0.1:5000 and the token front on 5001."""

    def __init__(self, node, tmp: Path):
        self.node, self.dir = node, tmp
        (tmp / "data").mkdir(parents=True)
        (tmp / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {tmp / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{PLAIN}\n")
        self.log = tmp / "token.log"
        self.procs = [
            node.popen(["docker-registry", "serve", str(tmp / "config.yml")],
                       stdout=subprocess.DEVNULL, stderr=open(tmp / "registry.err", "w")),
            node.popen([sys.executable, str(TOKEN_SCRIPT), str(TOKEN), str(PLAIN), USER, PASSWORD,
                        str(self.log)], stdout=subprocess.DEVNULL, stderr=open(tmp / "token.err", "w")),
        ]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            up = [node.sh("socat", "-u", "OPEN:/dev/null", f"TCP:127.0.0.1:{p}", check=False).returncode == 0
                  for p in (PLAIN, TOKEN)]
            if all(up):
                return
            time.sleep(0.1)
        raise AssertionError(f"registry did not start: {(tmp / 'registry.err').read_text()}")

    def stop(self):
        for proc in self.procs:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)

    def copy(self, src: str, dest: str, *extra):
        """skopeo copy into the plain registry."""
        self.node.sh("skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false", *extra,
                     src, f"docker://127.0.0.1:{PLAIN}/{dest}", timeout=120)

    def blob_gets(self) -> list[str]:
        if not self.log.exists():
            return []
        return [l.split()[1].rsplit("/", 1)[-1] for l in self.log.read_text().splitlines()
                if l.startswith("GET ") and "/blobs/" in l and l.endswith(" 200")]


@pytest.fixture
def registry(node, tmp_path):
    reg = Registry(node, tmp_path / "registry")
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """A docker save of two images sharing a base layer, and a two-platform
    OCI index (amd64 says amd64, arm64 says arm64)."""
    d = tmp_path_factory.mktemp("regarchives")
    base = gzip.compress(tree_tar(busybox_tree(d / "rootfs")))
    app = tar_bytes([member("app", data=b"app\n")])
    tool = tar_bytes([member("tool", data=b"tool\n")])
    (d / "app.tar").write_bytes(docker_save([base, app], {"Cmd": ["cat", "/app"]}, ["app:1"]))
    (d / "tool.tar").write_bytes(docker_save([base, tool], {"Cmd": ["cat", "/tool"]}, ["tool:1"]))
    (d / "multi.tar").write_bytes(_multi_platform(base))
    return d


def _multi_platform(base: bytes) -> bytes:
    files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}'}

    def blob(data: bytes) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        files[f"blobs/sha256/{digest}"] = data
        return {"digest": "sha256:" + digest, "size": len(data)}

    descs = []
    for arch in ("arm64", "amd64"):
        top = tar_bytes([member("arch", data=arch.encode() + b"\n")])
        cfg = json.loads(image_config({"Cmd": ["cat", "/arch"]}, [base, top]))
        cfg["architecture"] = arch
        cfg = json.dumps(cfg).encode()
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(cfg)},
                               "layers": [{"mediaType": layer_media_type(l), **blob(l)} for l in (base, top)]}).encode()
        descs.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", **blob(manifest),
                      "platform": {"architecture": arch, "os": "linux"}})
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": descs}).encode()
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", **blob(index),
         "annotations": {"org.opencontainers.image.ref.name": "1"}}]}).encode()
    return _outer(files)


def _store(node) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(node.state_root / "images"):
        out += [os.path.relpath(os.path.join(dirpath, n), node.state_root) for n in dirnames + filenames]
    return sorted(p for p in out if "locks" not in p)


def test_pull_run_and_layers_not_fetched_twice(node, registry, archives):
    registry.copy(f"docker-archive:{archives / 'app.tar'}", "app:1")
    registry.copy(f"docker-archive:{archives / 'tool.tar'}", "team/tool:1")
    proc = node.md("pull", f"127.0.0.1:{PLAIN}/app:1")
    lines = proc.stdout.splitlines()
    assert lines[0] == "1: Pulling from app"
    assert sum(l.endswith(": Pull complete") for l in lines) == 2
    assert lines[-2].startswith("Digest: sha256:")
    assert lines[-1] == f"Status: Downloaded newer image for 127.0.0.1:{PLAIN}/app:1"
    assert node.md("run", "--rm", f"127.0.0.1:{PLAIN}/app:1").stdout == "app\n"
    # the second image shares the base: it is not downloaded again
    lines = node.md("pull", f"127.0.0.1:{PLAIN}/team/tool:1").stdout.splitlines()
    assert sum(l.endswith(": Already exists") for l in lines) == 1
    assert sum(l.endswith(": Pull complete") for l in lines) == 1
    assert len(list((node.state_root / "images/layers").iterdir())) == 3
    # by digest, as `docker pull name@sha256:...`
    digest = [l for l in lines if l.startswith("Digest: ")][0].split()[1]
    node.md("rmi", f"127.0.0.1:{PLAIN}/team/tool:1")
    node.md("pull", f"127.0.0.1:{PLAIN}/team/tool@{digest}")
    assert node.md("run", "--rm", f"127.0.0.1:{PLAIN}/team/tool@{digest}").stdout == "tool\n"
    assert any("<none>" in row for row in node.md("images").stdout.splitlines())


def test_run_pulls_a_missing_image(node, registry, archives):
    registry.copy(f"docker-archive:{archives / 'app.tar'}", "app:1")
    for runtime in ("builtin", "runc"):
        proc = node.md("run", "--rm", "--runtime", runtime, f"127.0.0.1:{PLAIN}/app:1")
        assert proc.stdout == "app\n"
    assert proc.stderr == ""    # the second run finds it
    # an image name without a registry is never pulled
    one_line_error(node.md("run", "--rm", "nosuch:1", check=False), "unknown image 'nosuch:1'")


def test_pull_and_run_as_a_newcomer(node, registry, archives):
    """`env -i` with PATH and the two roots, as the README's set-up leaves a
    user: pull, run, push, load from a pipe."""
    from harness import VENV_BIN
    registry.copy(f"docker-archive:{archives / 'app.tar'}", "app:1")
    env = ["env", "-i", f"PATH={VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
           f"MINIDOCKER_ROOT={node.state_root}", f"MINIDOCKER_RUN={node.run_root}"]

    def md(*args, **kw):
        return subprocess.run(node.cmd([*env, "minidocker", *args]), capture_output=True, text=True,
                              timeout=120, env={}, check=True, **kw)
    assert "Pull complete" in md("pull", f"127.0.0.1:{PLAIN}/app:1").stdout
    assert md("run", "--rm", f"127.0.0.1:{PLAIN}/app:1").stdout == "app\n"
    md("tag", f"127.0.0.1:{PLAIN}/app:1", f"127.0.0.1:{PLAIN}/copy:1")
    assert "digest: sha256:" in md("push", f"127.0.0.1:{PLAIN}/copy:1").stdout
    with open(archives / "tool.tar", "rb") as fh:
        assert md("load", stdin=fh).stdout == "Loaded image: tool:1\n"


def test_multi_platform_index_resolved_to_this_machine(node, registry, archives):
    registry.copy(f"oci-archive:{archives / 'multi.tar'}", "multi:1", "--all")
    node.md("pull", f"localhost:{PLAIN}/multi:1")
    assert node.md("run", "--rm", f"localhost:{PLAIN}/multi:1").stdout == "amd64\n"
    info = node.md("images").stdout
    assert f"localhost:{PLAIN}/multi" in info


def test_token_auth_and_login(node, registry, archives, tmp_path):
    registry.copy(f"docker-archive:{archives / 'app.tar'}", "app:1")
    ref = f"127.0.0.1:{TOKEN}/app:1"
    before = _store(node)
    one_line_error(node.md("pull", ref, check=False), "token service", "401", "wrong credentials")
    one_line_error(node.md("login", "-u", USER, "-p", "wrong", f"127.0.0.1:{TOKEN}", check=False),
                   "wrong credentials")
    assert _store(node) == before
    proc = node.md("login", "-u", USER, "--password-stdin", f"127.0.0.1:{TOKEN}", input=PASSWORD + "\n")
    assert proc.stdout == "Login Succeeded\n"
    auth = node.state_root / "auth.json"
    assert stat.S_IMODE(os.stat(auth).st_mode) == 0o600
    node.md("pull", ref)
    assert node.md("run", "--rm", ref).stdout == "app\n"
    fetched = registry.blob_gets()
    assert len(fetched) == 3   # config + two layers
    # pulled again: the manifest and config are read, no layer is downloaded again
    lines = node.md("pull", ref).stdout.splitlines()
    assert sum(l.endswith(": Already exists") for l in lines) == 2
    assert lines[-1] == f"Status: Image is up to date for {ref}"
    assert len(registry.blob_gets()) == 3 + 1


def test_push_then_pull_into_a_fresh_store(node, registry, archives, tmp_path):
    node.md("load", "-i", archives / "app.tar")
    ref = f"127.0.0.1:{PLAIN}/pushed:1"
    node.md("tag", "app:1", ref)
    out = node.md("push", ref).stdout
    assert out.splitlines()[0] == f"The push refers to repository [127.0.0.1:{PLAIN}/pushed]"
    assert "1: digest: sha256:" in out
    again = node.md("push", ref).stdout
    assert again.count("Layer already exists") == 2
    local_id = json.loads((next((node.state_root / "images").glob("*/image.json"))).read_text())["Id"]
    node.md("rmi", ref, "app:1")
    assert node.md("run", "--rm", ref).stdout == "app\n"
    # the same tars, the same config: the image keeps its id through the registry
    assert [r.split()[2] for r in node.md("images").stdout.splitlines()[1:]] == [local_id[7:19]]
    inspect = json.loads(node.sh("skopeo", "inspect", "--tls-verify=false", f"docker://{ref}").stdout)
    assert len(inspect["Layers"]) == 2


def test_progress_on_a_terminal(node, registry, archives):
    """On a terminal: one line per layer redrawn in place, with a bar."""
    import pty
    registry.copy(f"docker-archive:{archives / 'app.tar'}", "app:1")
    from harness import MINIDOCKER
    leader, follower = pty.openpty()
    proc = subprocess.Popen(node.cmd([MINIDOCKER, "pull", f"127.0.0.1:{PLAIN}/app:1"]), env=node.env(),
                            stdout=follower, stderr=subprocess.PIPE)
    os.close(follower)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:      # EIO: the terminal's last writer is gone
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
        stderr = proc.communicate(timeout=60)[1]
    text = out.decode()
    assert proc.returncode == 0, stderr
    assert "\x1b[" in text and "Downloading [" in text and "Pull complete" in text, text[-500:]


def test_registry_scheme_and_references():
    from minidocker.images.registry import _insecure
    from minidocker.images.refs import Reference
    assert _insecure("localhost:5000") and _insecure("127.0.0.1") and _insecure("127.9.9.9:80")
    assert _insecure("[::1]:5000")
    assert not _insecure("ghcr.io") and not _insecure("10.0.0.1:5000") and not _insecure("localhost.example")
    r = Reference("docker.io/library/debian:12")
    assert (r.name, r.tag, r.registry, r.remote_path) == ("debian", "12", "docker.io", "library/debian")
    r = Reference("ghcr.io/org/app@sha256:" + "a" * 64)
    assert (r.name, r.tag, r.digest[:8], r.registry) == ("ghcr.io/org/app", "", "sha256:a", "ghcr.io")
    r = Reference("localhost:5000/x")
    assert (r.name, r.tag, r.remote_path) == ("localhost:5000/x", "latest", "x")


def test_pull_refusals_leave_the_store_unchanged(node, registry, archives):
    registry.copy(f"docker-archive:{archives / 'app.tar'}", "app:1")
    before = _store(node)
    one_line_error(node.md("pull", f"127.0.0.1:{PLAIN}/app:nosuchtag", check=False), "not found")
    one_line_error(node.md("pull", f"127.0.0.1:{PLAIN + 7}/app:1", check=False), "cannot reach registry")
    one_line_error(node.md("pull", "127.0.0.1:5000/Bad_Name:1", check=False), "invalid image reference")
    # a layer blob damaged in the registry's storage: its digest no longer matches
    blobs = registry.dir / "data/docker/registry/v2/blobs/sha256"
    biggest = max(blobs.rglob("data"), key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    biggest.write_bytes(bytes(data))
    proc = node.md("pull", f"127.0.0.1:{PLAIN}/app:1", check=False)
    assert proc.returncode != 0 and "Error: " in proc.stderr
    assert "digest" in proc.stderr or "invalid layer" in proc.stderr
    assert _store(node) == before
