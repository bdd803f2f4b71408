"""The fast `run` parser (runcmd.parse) against click: the same parameters
for every plain invocation, None (click parses) for everything else."""
from __future__ import annotations

import pytest

from minidocker import cli, containers, runcmd

PLAIN = [
    "run busybox",
    "run busybox true",
    "run --rm busybox true",
    "run --rm --network none busybox true",
    "run --rm --network=host busybox true",
    "run --net none busybox",
    "run -d --name web busybox httpd -f -p 8080",
    "run --name=web -i busybox sh",
    "run -e A=1 -e B --env C=3 --env=D= busybox env",
    "run --env-file /x --env-file=/y busybox env",
    "run -w /tmp --hostname h --entrypoint /bin/sh busybox -c 'echo hi'",
    "run --entrypoint= busybox",
    "run --name  busybox true",  # an empty value (two spaces: '' after split(' '))
    "run --runtime runc busybox true",
    "run --rm --rm busybox true",
    "run -d -i busybox",
    "run busybox --rm -e X",  # after the image everything is the command
    "run busybox -- true",
    "run busybox -",
    "run -p 8080:80 -p 53:53/udp -P busybox",
    "run --ip 10.1.0.5 --ip6 fd00::5 --dns 1.1.1.1 --add-host a:1.2.3.4 busybox",
    "run --network-alias web --mac-address 02:42:ac:11:00:02 busybox",
    "run +x",
    "run - busybox",  # "-" is an image name to click too
]

TO_CLICK = [
    "",
    "ps",
    "images",
    "--help",
    "run",
    "run --rm",
    "run --help",
    "run -h",
    "run --bogus busybox",
    "run -x busybox",
    "run -di busybox",
    "run -eA=1 busybox",
    "run -e=A=1 busybox",
    "run -e",
    "run --name",
    "run --name -x busybox",
    "run --rm=1 busybox",
    "run --name a --name b busybox",
    "run -- busybox true",
    "run --netw none busybox",
]


def _argv(line: str) -> list[str]:
    return line.split(" ") if line else []


def _click_params(argv: list[str]) -> dict:
    ctx = cli.run_cmd.make_context("run", argv[1:])
    return dict(ctx.params)


@pytest.mark.parametrize("line", PLAIN)
def test_plain_invocations_parse_as_click_does(line):
    argv = _argv(line)
    fast = runcmd.parse(argv)
    assert fast is not None, f"{line!r} fell back to click"
    assert fast == _click_params(argv)


@pytest.mark.parametrize("line", TO_CLICK)
def test_everything_else_is_left_to_click(line):
    assert runcmd.parse(_argv(line)) is None


def test_completion_is_left_to_click(monkeypatch):
    monkeypatch.setenv(runcmd.COMPLETE_VAR, "bash_complete")
    assert runcmd.parse(["run", "busybox"]) is None


def test_the_click_command_is_built_from_the_table():
    """An option added to run_cmd by hand would be missed by the fast parser."""
    names = {p.name for p in cli.run_cmd.params}
    assert names == {o.dest for o in runcmd.OPTIONS} | {"image", "command"}
    declared = {d for p in cli.run_cmd.params for d in p.opts} - {"image", "command"}
    assert declared == {d for o in runcmd.OPTIONS for d in o.decls}


def test_every_option_reaches_create_options():
    dests = {o.dest for o in runcmd.OPTIONS} - {"detach"}
    assert dests <= set(containers.CreateOptions.DEFAULTS)
    opts = containers.CreateOptions("busybox", **{o.dest: o.empty() for o in runcmd.OPTIONS
                                                  if o.dest != "detach"})
    assert opts.image == "busybox"


# --- the launcher: no `site` until an import needs it ------------------------------------
def _without_site(code: str) -> list[str]:
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parent.parent
    prog = f"import sys; sys.path.insert(0, {str(repo)!r})\nfrom minidocker.entry import SiteOnDemand\n" + code
    return subprocess.run([sys.executable, "-S", "-c", prog], capture_output=True, text=True,
                          timeout=60, check=True).stdout.split()


def test_run_path_imports_nothing_from_site_packages():
    out = _without_site("SiteOnDemand.install()\nfrom minidocker import runcmd, shim, logfile\n"
                        "from minidocker.runtime import builtin\n"
                        "print(SiteOnDemand in sys.meta_path, 'site' in sys.modules)")
    assert out == ["True", "False"]


#: What `run --rm --network none` must not import (HACKING.md, `run` latency): each
#: is milliseconds of every run, most of it in what they import in turn.
NOT_ON_RUN_PATH = ("pathlib", "re", "json", "enum", "ctypes", "signal", "contextlib", "resource",
                   "warnings", "struct", "functools", "collections", "urllib", "ipaddress",
                   "subprocess", "dataclasses", "typing", "logging", "socket", "shutil", "click")


def test_run_path_imports_are_lean():
    out = _without_site("from minidocker import entry, runcmd, shim, teardown, events, logfile, "
                        "shimwait\nfrom minidocker.runtime import builtin, cgroups\n"
                        f"print(' '.join(sorted(set(sys.modules) & set({NOT_ON_RUN_PATH!r}))))")
    assert out == []


def test_site_joins_on_the_first_import_that_needs_it():
    import sys
    out = _without_site("SiteOnDemand.install()\nimport click\n"
                        "print(SiteOnDemand in sys.meta_path, sys.prefix)\n"
                        "try:\n    import no_such_module_anywhere\nexcept ModuleNotFoundError:\n    print('missing')")
    assert out == ["False", sys.prefix, "missing"]


def test_the_launcher_starts_without_site():
    from pathlib import Path
    launcher = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "minidocker"
    first = launcher.read_text().splitlines()[0]
    assert first.startswith("#!") and first.endswith(" -S"), first


# --- string checks standing in for regular expressions on run's path ---------------
REFS = ["busybox", "busybox:latest", "library/alpine:3.19", "a/b/c:_x", "a/b/c:.x", "a/b/c:-x",
        "a" * 300, "busybox:" + "t" * 128, "busybox:" + "t" * 129, "Busybox", "a__b", "a--b:1",
        "a.b", "a_b", "a//b", "/a", "a/", "", "a:", "a:B_.-9", "a:é", "é", "a b", "a\n",
        "localhost/a", "localhost:5000/a/b:c", "reg.io/x@sha256:" + "0" * 64, "x@sha256:abc"]


@pytest.mark.parametrize("ref", REFS)
def test_plain_references_are_checked_as_the_grammar_does(ref):
    import re
    from minidocker.images import refs
    rest, _, digest = ref.partition("@")
    name, _, tag = rest.partition(":")
    domain, path = ("", name) if "/" not in name or "." not in name.split("/")[0] else name.split("/", 1)
    grammar = bool(re.match(refs.PATH_RE, path) and (not domain or re.match(refs.DOMAIN_RE, domain))
                   and (not tag or re.match(refs.TAG_RE, tag))
                   and (not digest or re.match(refs.DIGEST_RE, digest)))
    assert refs.valid(domain, path, tag, digest) == grammar
    assert not refs.plainly_valid(domain, path, tag, digest) or grammar


@pytest.mark.parametrize("line", ["nameserver 127.0.0.53", "  nameserver\t127.0.0.1", "nameserver ::1",
                                  "nameserver ::1%lo", "nameserver 10.0.0.1", "nameserver127.0.0.1",
                                  "nameserver", "nameserver ", "# nameserver 127.0.0.1", "search lan",
                                  "nameserver  \u00a0127.0.0.1", "nameserverx 127.0.0.1", ""])
def test_loopback_resolvers_are_found_as_the_regex_did(line):
    import re
    from minidocker import etcfiles
    assert etcfiles.loopback_resolver(line) == bool(re.match(r"\s*nameserver\s+(127\.|::1)", line))
