"""-v, --mount, --tmpfs, --read-only and `volume ...` (issue 12), both runtimes.

Docker's documented behaviour: `-v /host:/ctr[:ro]` binds a host path
(made as a directory when missing), `-v NAME:/ctr` a named volume made on
first use (filled from the image while empty) and kept after `rm`,
`-v /ctr` an anonymous volume that `rm -v` and `--rm` remove; `--mount`
spells the same with key=value fields (a missing bind source is an error);
`--tmpfs` mounts a tmpfs; `--read-only` makes the root read-only. `volume
ls` prints DRIVER and VOLUME NAME, `volume rm` refuses a volume in use."""
from __future__ import annotations

import json
import os

import pytest

from mdtools import assert_refused, newcomer

RUNTIMES = ["builtin", "runc"]


@pytest.fixture(params=RUNTIMES)
def runtime(request):
    return request.param


def sh(node, runtime, script, *opts, check=True):
    return node.md("run", "--rm", "--network", "none", "--runtime", runtime, *opts, "busybox",
                   "sh", "-c", script, check=check)


def test_bind_rw_and_ro(node, runtime, tmp_path):
    host = tmp_path / "share"
    host.mkdir()
    (host / "in").write_text("from host\n")
    out = sh(node, runtime, "cat /rw/in; echo back > /rw/out; echo x > /ro/y 2>&1 || true",
             "-v", f"{host}:/rw", "-v", f"{host}:/ro:ro").stdout
    assert "from host" in out
    assert (host / "out").read_text() == "back\n"
    assert not (host / "y").exists()


def test_bind_inspect_and_missing_source(node, runtime, tmp_path):
    made = tmp_path / "made" / "here"
    node.md("run", "--name", "bb", "--network", "none", "--runtime", runtime,
            "-v", f"{made}:/d:ro", "busybox", "true")
    assert made.is_dir()  # -v makes a missing host path, as Docker
    mounts = json.loads(node.md("inspect", "bb").stdout)[0]["Mounts"]
    assert [(m["Type"], m["Source"], m["Destination"], m["RW"], m["Mode"]) for m in mounts] \
        == [("bind", str(made), "/d", False, "ro")]
    assert json.loads(node.md("inspect", "bb").stdout)[0]["HostConfig"]["Binds"] == [f"{made}:/d:ro"]
    node.md("rm", "bb")
    proc = node.md("run", "--rm", "--runtime", runtime, "--network", "none", "--mount",
                   f"type=bind,source={tmp_path}/absent,target=/x", "busybox", "true", check=False)
    assert proc.returncode == 125 and "absent" in proc.stderr and "does not exist" in proc.stderr
    assert node.md("ps", "-aq").stdout == ""


def test_symlinked_source_resolves_once_on_the_host(node, runtime, tmp_path):
    """The link the user named is followed on the host when the container
    starts; swapping it afterwards changes nothing inside."""
    real, other = tmp_path / "real", tmp_path / "other"
    for d, text in ((real, "real"), (other, "other")):
        d.mkdir()
        (d / "f").write_text(text)
    link = tmp_path / "link"
    link.symlink_to(real)
    cid = node.md("run", "-d", "--network", "none", "--runtime", runtime, "-v", f"{link}:/m",
                  "busybox", "sleep", "60").stdout.strip()
    try:
        link.unlink()
        link.symlink_to(other)
        assert node.md("exec", cid, "cat", "/m/f").stdout == "real"
    finally:
        node.md("rm", "-f", cid)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    proc = sh(node, runtime, "true", "-v", f"{tmp_path}/dangling:/m", check=False)
    assert proc.returncode == 125 and "nowhere" in proc.stderr


def test_named_volume_persists_and_is_filled_from_the_image(node, runtime):
    sh(node, runtime, "echo kept > /data/file", "-v", "keep:/data")
    assert sh(node, runtime, "cat /data/file", "-v", "keep:/data").stdout == "kept\n"
    vol = json.loads(node.md("volume", "inspect", "keep").stdout)[0]
    assert {k: vol[k] for k in ("Name", "Driver", "Scope")} == \
        {"Name": "keep", "Driver": "local", "Scope": "local"}
    assert vol["Mountpoint"] == str(node.state_root / "volumes" / "keep" / "_data")
    # copy-up: an empty volume mounted on an image directory takes its files
    sh(node, runtime, "true", "-v", "etc:/etc")
    assert os.path.exists(node.state_root / "volumes" / "etc" / "_data" / "passwd")
    node.md("volume", "rm", "keep", "etc")


def test_anonymous_volumes(node, runtime):
    node.md("run", "--name", "aa", "--network", "none", "--runtime", runtime, "-v", "/anon",
            "busybox", "sh", "-c", "echo x > /anon/f")
    name = json.loads(node.md("inspect", "aa").stdout)[0]["Mounts"][0]["Name"]
    assert len(name) == 64 and node.md("volume", "ls", "-q").stdout.split() == [name]
    node.md("rm", "aa")
    assert node.md("volume", "ls", "-q").stdout.split() == [name]  # rm without -v keeps it
    node.md("run", "--name", "bb", "--network", "none", "--runtime", runtime, "-v", "/anon",
            "busybox", "true")
    node.md("rm", "-v", "bb")
    assert node.md("volume", "ls", "-q").stdout.split() == [name]
    sh(node, runtime, "true", "-v", "/gone")  # --rm takes its anonymous volume along
    assert node.md("volume", "ls", "-q").stdout.split() == [name]
    node.md("volume", "rm", name)


def test_tmpfs_and_read_only_root(node, runtime):
    out = sh(node, runtime, "grep -E ' /(scratch|t2) ' /proc/mounts; touch /scratch/ok && "
             "echo scratch-ok; touch /etc/x 2>&1 || true",
             "--read-only", "--tmpfs", "/scratch:size=1m,mode=700",
             "--mount", "type=tmpfs,target=/t2,tmpfs-size=2m").stdout
    lines = {l.split()[1]: l.split()[3].split(",") for l in out.splitlines() if l.startswith("tmpfs")}
    assert {"nosuid", "nodev", "noexec", "size=1024k", "mode=700"} <= set(lines["/scratch"])
    assert "size=2048k" in lines["/t2"]
    assert "scratch-ok" in out and "Read-only file system" in out


def test_volume_commands(node):
    assert node.md("volume", "create", "v1").stdout == "v1\n"
    assert node.md("volume", "create", "v1").stdout == "v1\n"  # idempotent, as Docker
    anon = node.md("volume", "create").stdout.strip()
    ls = node.md("volume", "ls").stdout.splitlines()
    assert ls[0].split() == ["DRIVER", "VOLUME", "NAME"]
    assert sorted(l.split()[1] for l in ls[1:]) == sorted(["v1", anon])
    node.md("run", "--name", "user", "--network", "none", "-v", "v1:/d", "busybox", "true")
    proc = node.md("volume", "rm", "v1", check=False)
    assert proc.returncode == 1 and "in use" in proc.stderr
    cid = json.loads(node.md("inspect", "user").stdout)[0]["Id"]
    assert cid[:12] in proc.stderr
    out = node.md("volume", "prune", "-f").stdout
    assert out.splitlines()[:2] == ["Deleted Volumes:", anon] and "Total reclaimed space" in out
    node.md("rm", "user")
    node.md("volume", "rm", "v1")
    assert node.md("volume", "ls", "-q").stdout == ""
    proc = node.md("volume", "rm", "v1", check=False)
    assert proc.returncode == 1 and "no such volume" in proc.stderr
    proc = node.md("volume", "prune", check=False, input="")
    assert proc.returncode == 1 and "-f" in proc.stderr


@pytest.mark.parametrize("opts, named", [
    (["-v", "a/b:/x"], "'a/b'"),
    (["-v", "/tmp:rel"], "'rel'"),
    (["-v", "/tmp:/x:bogus"], "'bogus'"),
    (["-v", "/tmp:/"], "'/'"),
    (["-v", "/tmp:/x", "-v", "vv:/x"], "'/x'"),
    (["--mount", "type=nfs,target=/x"], "'nfs'"),
    (["--mount", "type=bind,source=/tmp"], "target="),
    (["--mount", "type=volume,target=/x,colour=red"], "colour"),
    (["--tmpfs", "/x:bogus"], "'bogus'"),
    (["--tmpfs", "rel"], "'rel'"),
])
def test_bad_mounts_are_refused(node, opts, named):
    assert_refused(node, ["run", "--rm", *opts, "busybox", "true"], named)
    assert node.md("volume", "ls", "-q").stdout == ""


def test_as_a_newcomer_runs_it(node, tmp_path):
    """README usage under `env -i`."""
    argv, env = newcomer(node)
    node.run([*argv, "run", "--rm", "--network", "none", "-v", f"{tmp_path}:/host",
              "-v", "notes:/notes", "busybox", "sh", "-c", "echo hi > /host/f; echo n > /notes/n"],
             env=env)
    assert (tmp_path / "f").read_text() == "hi\n"
    assert node.run([*argv, "volume", "ls", "-q"], env=env).stdout == "notes\n"
    node.run([*argv, "volume", "rm", "notes"], env=env)
