"""-u, --group-add, the image's User; --label, --label-file; ps --filter and
--format (issue 12). Docker's documented behaviour: `-u` takes USER[:GROUP]
as names from the image's /etc/passwd and /etc/group or as numbers (a uid
without an entry gets gid 0), an unknown name fails the start with 125;
`--group-add` adds supplementary groups; labels are `Config.Labels`; `ps`
filters by label (every one must hold), status and name, and `--format`
fills Go-template fields, `table` adding Docker's headers."""
from __future__ import annotations

import json

import pytest

from mdtools import newcomer

RUNTIMES = ["builtin", "runc"]


@pytest.fixture(params=RUNTIMES)
def runtime(request):
    return request.param


def _id(node, runtime, *opts):
    return node.md("run", "--rm", "--network", "none", "--runtime", runtime, *opts, "busybox",
                   "id").stdout.strip()


def test_user_names_and_numbers(node, runtime):
    assert _id(node, runtime, "-u", "nobody") == "uid=65534(nobody) gid=65534(nogroup)"
    assert _id(node, runtime, "-u", "nobody:root") == "uid=65534(nobody) gid=0(root)"
    assert _id(node, runtime, "-u", "1234") == "uid=1234 gid=0(root)"
    assert _id(node, runtime, "-u", "1234:5678") == "uid=1234 gid=5678"
    out = _id(node, runtime, "-u", "nobody", "--group-add", "root", "--group-add", "4242")
    assert out == "uid=65534(nobody) gid=65534(nogroup) groups=0(root),4242"
    status = node.md("run", "--rm", "--network", "none", "--runtime", runtime, "-u", "1234",
                     "busybox", "grep", "CapEff", "/proc/self/status").stdout
    assert status.split()[1] == "0000000000000000"  # not root: no capabilities, as Docker


def test_unknown_user_or_group(node, runtime):
    for opts, named in ((["-u", "ghost"], "'ghost'"), (["-u", "nobody:ghosts"], "'ghosts'"),
                        (["--group-add", "ghosts"], "'ghosts'")):
        proc = node.md("run", "--rm", "--network", "none", "--runtime", runtime, *opts, "busybox",
                       "true", check=False)
        assert proc.returncode == 125 and named in proc.stderr, proc
    assert node.md("ps", "-aq").stdout == ""
    for bad in ("a:b:c", "99999999999"):
        proc = node.md("run", "--rm", "-u", bad, "busybox", "true", check=False)
        assert proc.returncode == 125 and bad in proc.stderr


def test_labels_and_ps_filters(node, tmp_path):
    (tmp_path / "labels").write_text("# a comment\nteam=core\nempty\n")
    node.md("run", "-d", "--name", "web", "--network", "none", "-l", "app=web", "--label", "tier",
            "--label-file", tmp_path / "labels", "busybox", "sleep", "60")
    node.md("run", "--name", "db", "--network", "none", "-l", "app=db", "busybox", "true")
    try:
        labels = json.loads(node.md("inspect", "web").stdout)[0]["Config"]["Labels"]
        assert labels == {"team": "core", "empty": "", "app": "web", "tier": ""}

        def names(*filters):
            args = [a for f in filters for a in ("--filter", f)]
            return node.md("ps", "-a", *args, "--format", "{{.Names}}").stdout.split()

        assert names("label=app") == ["db", "web"]
        assert names("label=app=web") == ["web"]
        assert names("label=app", "label=tier") == ["web"]       # labels: all must hold
        assert names("status=exited") == ["db"]
        assert names("status=running", "status=exited") == ["db", "web"]  # same key: either
        assert names("name=we") == ["web"]
        assert names("name=^d", "label=app=web") == []
        assert node.md("ps", "--filter", "status=exited", "-q").stdout.strip() \
            == json.loads(node.md("inspect", "db").stdout)[0]["Id"][:12]
        proc = node.md("ps", "--filter", "colour=red", check=False)
        assert proc.returncode == 1 and "'colour=red'" in proc.stderr
        proc = node.md("ps", "--filter", "status=sleeping", check=False)
        assert proc.returncode == 1 and "sleeping" in proc.stderr
    finally:
        node.md("rm", "-f", "web", "db")


def test_ps_format_templates(node):
    cid = node.md("run", "-d", "--name", "fmt", "--network", "none", "-l", "a=1", "-l", "b=2",
                  "busybox", "sleep", "60").stdout.strip()
    try:
        assert node.md("ps", "--format", "{{.ID}}\\t{{.Names}}").stdout == f"{cid[:12]}\tfmt\n"
        assert node.md("ps", "--format", '{{.Label "b"}} {{.Labels}} {{json .Names}}').stdout \
            == '2 a=1,b=2 "fmt"\n'
        table = node.md("ps", "--format", "table {{.ID}}\\t{{.Image}}\\t{{.Names}}").stdout.splitlines()
        # tabwriter columns: the widest cell plus 3 spaces
        assert table == ["CONTAINER ID   IMAGE     NAMES", f"{cid[:12]}   busybox   fmt"]
        assert json.loads(node.md("ps", "--format", "{{json .}}").stdout)["Names"] == "fmt"
        assert json.loads(node.md("ps", "--format", "json").stdout)["ID"] == cid[:12]
        proc = node.md("ps", "--format", "{{.Nope}}", check=False)
        assert proc.returncode == 1 and "'Nope'" in proc.stderr
    finally:
        node.md("rm", "-f", cid)


def test_as_a_newcomer_runs_it(node):
    argv, env = newcomer(node)
    out = node.run([*argv, "run", "--rm", "--network", "none", "-u", "nobody", "-l", "k=v",
                    "busybox", "id", "-u"], env=env).stdout
    assert out == "65534\n"
    assert node.run([*argv, "ps", "-a", "--filter", "label=k", "-q"], env=env).stdout == ""
