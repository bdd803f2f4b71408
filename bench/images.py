"""`scripts/bench images`: import, load and pull of a ~100 MB image of
several thousand files, beside `docker import` / `docker load` /
`docker pull` and `podman load` / `podman pull` of the same archives, in one
run; and the disk use of N images sharing one base.

The image is made from the host's own files (/usr/lib, /usr/share, ...: no
network): one layer of about --mb MB, as a rootfs tarball and as a
`docker save` archive. The registry is Debian's docker-registry started in
the bench's throwaway namespace on 127.0.0.1:5000 under a temp dir and
filled with skopeo; everyone pulls from it over plain HTTP (loopback).
Between two timed runs each tool removes the image (untimed), so every run
extracts every layer.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from bench.netns import BenchNetns
from bench.peers import TEMP_BASE, Docker, PeerUnavailable, Podman
from bench.table import median_ms, print_table, time_cmd

SOURCES = ("/usr/lib/x86_64-linux-gnu", "/usr/share/perl", "/usr/lib/python3", "/usr/share/doc",
           "/usr/lib", "/usr/share", "/usr/bin")
MAX_FILE = 512 << 10     # many files, as an OS image has, not a few big ones
REF = "bench/app:1"
PORT = 5000
GOAL = 1.0
SHARED_GOAL = 1.1


def build_tree_tar(dest: Path, megabytes: int) -> tuple[int, int]:
    """A rootfs tar of host files up to `megabytes`; returns (files, bytes)."""
    budget = megabytes << 20
    files = size = 0
    seen: set[str] = set()
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for top in SOURCES:
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames.sort()
                for name in sorted(filenames):
                    path = os.path.join(dirpath, name)
                    if path in seen or size >= budget:
                        continue
                    seen.add(path)
                    try:
                        st = os.lstat(path)
                        if not (tarfile.stat.S_ISREG(st.st_mode) or tarfile.stat.S_ISLNK(st.st_mode)) \
                                or st.st_size > MAX_FILE:
                            continue
                        tar.add(path, arcname=path.lstrip("/"), recursive=False)
                    except OSError:
                        continue
                    files += 1
                    size += st.st_size if tarfile.stat.S_ISREG(st.st_mode) else 0
                if size >= budget:
                    break
            if size >= budget:
                break
    return files, size


def docker_save(dest: Path, layers: list[Path], tags: list[list[str]], tops: list[bytes]) -> None:
    """A `docker save` archive: one image per tag list, each the shared base
    layer (stored once, the repeats as links, as Docker writes it) plus its
    own small top layer."""
    with tarfile.open(dest, "w") as tar:
        def add_bytes(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        base = layers[0]
        digest = _file_digest(base)
        tar.add(str(base), arcname=f"{digest[7:]}/layer.tar")
        manifest = []
        for i, (names, top) in enumerate(zip(tags, tops)):
            top_id = hashlib.sha256(top).hexdigest()
            add_bytes(f"{top_id}/layer.tar", top)
            config = json.dumps({"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
                                 "config": {"Cmd": ["/usr/bin/true"]},
                                 "rootfs": {"type": "layers", "diff_ids": [digest, "sha256:" + top_id]}}).encode()
            cfg_name = hashlib.sha256(config).hexdigest() + ".json"
            add_bytes(cfg_name, config)
            base_name = f"{digest[7:]}/layer.tar"
            if i:   # a repeat (podman 4.3 cannot load these: "blob size mismatch")
                base_name = f"{i:064x}/layer.tar"
                link = tarfile.TarInfo(base_name)
                link.type, link.linkname = tarfile.SYMTYPE, f"../{digest[7:]}/layer.tar"
                tar.addfile(link)
            manifest.append({"Config": cfg_name, "RepoTags": names,
                             "Layers": [base_name, f"{top_id}/layer.tar"]})
        add_bytes("manifest.json", json.dumps(manifest).encode())


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _top(i: int) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = f"image {i}\n".encode()
        info = tarfile.TarInfo(f"etc/image-{i}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def du(path: Path) -> int:
    """Bytes of the regular files under path, a hard-linked file once."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if tarfile.stat.S_ISREG(st.st_mode):
                seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512
    return sum(seen.values())


class _Registry:
    def __init__(self, ns: BenchNetns, tmp: Path):
        (tmp / "data").mkdir(parents=True)
        (tmp / "config.yml").write_text(
            f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {tmp / 'data'}\n"
            f"http:\n  addr: 127.0.0.1:{PORT}\n")
        self.proc = subprocess.Popen(ns.cmd(["docker-registry", "serve", str(tmp / "config.yml")]),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while ns.run(["socat", "-u", "OPEN:/dev/null", f"TCP:127.0.0.1:{PORT}"], check=False).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError("docker-registry did not start")
            time.sleep(0.1)

    def stop(self):
        os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=20)


def main(argv: list[str]) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="scripts/bench images")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mb", type=int, default=100, help="size of the image's layer")
    ap.add_argument("--shared", type=int, default=3, help="images sharing the base, for disk use")
    args = ap.parse_args(argv)
    md = str(Path(__file__).resolve().parent.parent / ".venv/bin/minidocker")
    tmp = Path(tempfile.mkdtemp(prefix="mdbench-images-", dir=TEMP_BASE))
    notes: list[str] = []
    try:
        rootfs = tmp / "rootfs.tar"
        files, size = build_tree_tar(rootfs, args.mb)
        saved = tmp / "saved.tar"
        docker_save(saved, [rootfs], [[REF]], [_top(0)])
        shared = tmp / "shared.tar"
        docker_save(shared, [rootfs], [[f"bench/s{i}:1"] for i in range(args.shared)],
                    [_top(i) for i in range(args.shared)])
        print(f"image: {files} files, {size / 1e6:.0f} MB in one layer "
              f"(rootfs tar {rootfs.stat().st_size / 1e6:.0f} MB)")
        env = dict(os.environ, MINIDOCKER_ROOT=str(tmp / "md-root"), MINIDOCKER_RUN=str(tmp / "md-run"))
        rows = []
        with BenchNetns() as ns:
            reg = _Registry(ns, tmp / "registry")
            try:
                ns.run(["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false",
                        f"docker-archive:{saved}", f"docker://127.0.0.1:{PORT}/{REF}"], timeout=600)
                remote = f"127.0.0.1:{PORT}/{REF}"

                def md_rm(ref):
                    return lambda: subprocess.run([md, "rmi", ref], env=env, capture_output=True, timeout=120)

                ours = {
                    "import rootfs.tar": time_cmd([md, "import", str(rootfs), REF], args.runs, env=env,
                                                  setup=md_rm(REF), timeout=600),
                    "load -i saved.tar": time_cmd([md, "load", "-i", str(saved)], args.runs, env=env,
                                                  setup=md_rm(REF), timeout=600),
                }
                disk_one = du(tmp / "md-root/images")
                md_rm(REF)()
                ours["pull (local registry)"] = time_cmd(ns.cmd([md, "pull", remote]), args.runs, env=env,
                                                         setup=md_rm(remote), timeout=600)
                ours = {k: median_ms(v) for k, v in ours.items()}
                md_rm(remote)()
                subprocess.run([md, "load", "-i", str(shared)], env=env, capture_output=True,
                               timeout=600, check=True)
                disk_n = du(tmp / "md-root/images")
                theirs = _peers(ns, rootfs, saved, remote, args.runs, notes)
            finally:
                reg.stop()
        for op, ms in ours.items():
            peer_rows = [(op, ms, peer, pms) for (pop, peer), pms in theirs.items() if pop == op]
            rows += peer_rows or [(op, ms, "(no peer ran)", None)]
        print_table(f"images: medians of {args.runs} (each run from an empty store)", rows)
        for note in notes:
            print(f"note: {note}")
        for op in ours:
            docker = theirs.get((op, "docker"))
            if docker:
                ratio = ours[op] / docker
                print(f"goal: {op} <= {GOAL}x docker: {ratio:.2f}x -> {'met' if ratio <= GOAL else 'MISSED'}")
        ratio = disk_n / disk_one
        print(f"disk: {args.shared} images sharing the base use {disk_n / 1e6:.0f} MB, one image "
              f"{disk_one / 1e6:.0f} MB: {ratio:.2f}x (goal <= {SHARED_GOAL}x) -> "
              f"{'met' if ratio <= SHARED_GOAL else 'MISSED'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _peers(ns, rootfs: Path, saved: Path, remote: str, runs: int, notes: list[str]) -> dict:
    out = {}
    for cls in (Docker, Podman):
        try:
            with cls(ns) as peer:
                base = peer.cmd([])

                def rm(_ref, peer=peer):   # every tag of the image: no layer may be left
                    return lambda: (peer.run(["rmi", "-f", REF], check=False),
                                    peer.run(["rmi", "-f", remote], check=False))
                ops = {"import rootfs.tar": (["import", str(rootfs), REF], REF),
                       "load -i saved.tar": (["load", "-i", str(saved)], REF),
                       "pull (local registry)": (["pull", *(["--tls-verify=false"] if cls is Podman else []),
                                                  remote], remote)}
                for op, (cmd, ref) in ops.items():
                    samples = time_cmd(base + cmd, runs, env=peer.env, setup=rm(ref), timeout=600)
                    out[(op, cls.name)] = median_ms(samples)
        except (PeerUnavailable, RuntimeError) as exc:
            notes.append(f"{cls.name}: skipped ({str(exc)[:200]})")
    return out
