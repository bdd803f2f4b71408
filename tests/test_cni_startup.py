"""cni-bridge's start-up: what a plugin exec imports, and the stand-ins for
`json` and `re` on that path behaving exactly as what they replace."""
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cni import env, fastjson, version
from cni_bridge import config
from cni_bridge.firewall import iptables, nftables, owner_comment

REPO = Path(__file__).resolve().parent.parent

# Every module ADD, DEL, CHECK, GC and STATUS load with the built-in IPAM.
PLUGIN_MODULES = ["cni_bridge.plugin", "cni_bridge.config", "cni_bridge.ipam", "cni_bridge.ipam.config",
                  "cni_bridge.ipam.allocator", "cni_bridge.link", "cni_bridge.netlink", "cni_bridge.proc",
                  "cni_bridge.firewall.iptables", "cni_bridge.firewall.nftables", "cni.types"]
# What a plugin exec must not pay for (each costs milliseconds at import).
HEAVY = {"re", "json", "enum", "dataclasses", "inspect", "typing", "subprocess", "threading",
         "ctypes", "base64", "pathlib", "socket", "signal", "tempfile", "shutil"}


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-IS", "-c",
                          f"import sys; sys.path.insert(0, {str(REPO)!r}); {code}; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return set(out.split())


def test_plugin_paths_import_no_heavy_module():
    loaded = _loaded_after("; ".join(f"import {m}" for m in PLUGIN_MODULES))
    assert not loaded & HEAVY, sorted(loaded & HEAVY)


def test_version_imports_only_skel():
    loaded = _loaded_after("import cni_bridge.plugin")
    assert not {m for m in loaded if m.startswith("cni_bridge.") and m != "cni_bridge.plugin"}
    assert "ipaddress" not in loaded and not loaded & HEAVY


def test_launcher_is_isolated_without_site():
    launcher = REPO / ".venv" / "bin" / "cni-bridge"
    first = launcher.read_text().splitlines()[0]
    assert first.startswith("#!") and first.endswith(" -IS"), first
    r = subprocess.run([str(launcher)], env={"CNI_COMMAND": "VERSION"}, input=b"", capture_output=True, timeout=30)
    assert r.returncode == 0 and json.loads(r.stdout)["supportedVersions"][-1] == version.CURRENT


# --- fastjson: json.loads / json.dumps, exactly --------------------------------------
LOADS = ['{}', ' {"a": [1, 2.5, -3e10, true, false, null, "x\\u00e9"]} ', '"s"', '-0', '1.5e400', 'NaN',
         '[Infinity, -Infinity]', '{"dup": 1, "dup": 2}', '\t\r\n[1]\t\r\n', '{"\u00e9": "\U0001f600"}',
         '"\\ud800"', '', ' ', '{', '{"a" 1}', '{"a": 1,}', '[1,]', '{} x', '\ufeff{}', '"\x01"', '[1 2]',
         'tru', '{"a": "\\x"}', '0123', '"open', "{'a': 1}", '\u00a0{}', '[' * 100000]
LOADS_BYTES = [c.encode("utf-8", "surrogatepass") for c in LOADS[:12]] + [
    '{"a": 1}'.encode(enc) for enc in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be",
                                       "utf-8-sig")] + [b"\xff\xfe", b"\x00a", b"a\x00", b"\xc3(", bytearray(b"[1]")]
DUMPS = [{}, [], {"a": 1, "b": [1, 2.5, None, True, False, "\u00e9\n\"\\", float("inf"), -float("inf")]},
         "x", "\u00e9", 1, None, {1: "a", 2.5: "b", True: "c", None: "d"}, (1, 2), [{"z": 1, "a": 2}],
         10 ** 30, -0.0, {(1, 2): 3}, {"a": object()}, {1, 2}, b"x", ["\ud800"]]


def _outcome(fn, value):
    try:
        return "ok", repr(fn(value))
    except Exception as err:  # noqa: BLE001 - compared, type and message
        return type(err).__name__, str(err), getattr(err, "pos", None)


@pytest.mark.parametrize("doc", LOADS + LOADS_BYTES + [None, 1], ids=range(len(LOADS + LOADS_BYTES) + 2))
def test_fastjson_loads_is_json_loads(doc):
    assert _outcome(fastjson.loads, doc) == _outcome(json.loads, doc)


@pytest.mark.parametrize("sort_keys", [False, True])
@pytest.mark.parametrize("separators", [None, (",", ":"), (" ,", " = ")])
def test_fastjson_dumps_is_json_dumps(sort_keys, separators):
    kw = {"separators": separators} if separators else {}
    for obj in DUMPS:
        assert _outcome(lambda o: fastjson.dumps(o, sort_keys=sort_keys, **kw), obj) == \
            _outcome(lambda o: json.dumps(o, sort_keys=sort_keys, **kw), obj), obj
    loop: list = []
    loop.append(loop)
    assert _outcome(fastjson.dumps, loop) == _outcome(json.dumps, loop)


def test_fastjson_errors_without_json_imported():
    """The C scanner finds JSONDecodeError in sys.modules only: a first
    error in a process that never imported json must still be json's."""
    code = ("from cni import fastjson; import sys\n"
            "for doc in ('{\"a\" 1}', '[1,]', '', '{} x', b'\\xc3('):\n"
            "    try:\n        fastjson.loads(doc)\n"
            "    except ValueError as err:\n        print(type(err).__name__, err)\n")
    out = subprocess.run([sys.executable, "-IS", "-c", f"import sys; sys.path.insert(0, {str(REPO)!r})\n" + code],
                         capture_output=True, text=True, timeout=30, check=True).stdout.splitlines()
    assert out == ["JSONDecodeError Expecting ':' delimiter: line 1 column 6 (char 5)",
                   "JSONDecodeError Expecting value: line 1 column 4 (char 3)",
                   "JSONDecodeError Expecting value: line 1 column 1 (char 0)",
                   "JSONDecodeError Extra data: line 1 column 4 (char 3)",
                   "UnicodeDecodeError 'utf-8' codec can't decode byte 0xc3 in position 0: invalid continuation byte"]


def test_fastjson_ok_without_importing_json():
    loaded = _loaded_after("from cni import fastjson; fastjson.loads(b'{\"a\": [1, 2.5, null]}'); "
                           "fastjson.dumps({'a': [1, 'x']})")
    assert "json" not in loaded and "re" not in loaded


# --- the string checks that replaced regular expressions -------------------------------
TOKENS = ["--comment ", '"', "md/", "x", " ", "\t", "comment ", "-", "a", "\u00a0", "/", '--comment "',
          'comment "', "\n", "1", ".", "0", "\u0661", ":", "f", "G", "_", "@", "@ports", "²"]


def _samples(n=30000):
    rnd = random.Random(15)
    fixed = ["1.0.0", "1.0.0\n", "01.2.3", "\u0661.0.0", "1.0", "1.0.0 ", "a", "a-b.c_d", "-a", "",
             '-A X -m comment --comment "md/net/c/eth0" -j MASQUERADE', '--comment md/x --comment "md/y"',
             'ip saddr 1.2.3.4 masquerade comment "md/n/c/eth0" # handle 7', 'comment "open']
    return fixed + ["".join(rnd.choice(TOKENS) for _ in range(rnd.randint(0, 8))) for _ in range(n)]


def test_string_checks_match_the_regular_expressions_they_replace():
    version_re = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
    name_re = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")
    ipt_re, any_re = re.compile(r'--comment "?(md/[^"\s]*)"?'), re.compile(r'--comment "?([^"\s]+)"?')
    set_re = re.compile(r"@(\w+)")
    for s in _samples():
        m = version_re.match(s)
        assert version._numbers(s) == (tuple(int(g) for g in m.groups()) if m else None), s
        assert env._is_name(s) == bool(name_re.match(s)), s
        for rx, got in ((ipt_re, iptables._comment(s)), (any_re, iptables._comment(s, prefix="")),
                        (set_re, nftables._set_looked_up(s))):
            m = rx.search(s)
            assert got == (m.group(1) if m else None), (rx.pattern, s)
        plain = re.fullmatch(r"[A-Za-z0-9_.@+=-]+", s) is not None
        assert owner_comment("n", "c", s).endswith("/" + s) == plain, s


@pytest.mark.parametrize("mac,ok", [("0a:58:0a:00:00:05", True), ("0A:58:0A:00:00:FF", True),
                                    ("0a:58:0a:00:00:5", False), ("0a:58:0a:00:00:05:", False),
                                    ("0a-58-0a-00-00-05", False), ("za:58:0a:00:00:05", False),
                                    ("0a:58:0a:00:00:05\n", False), ("0a:58:0a:00:00:0\u0665", False)])
def test_mac_check(mac, ok):
    assert config._is_mac(mac) == ok


# --- tools started with their stdin written at once -------------------------------------
def test_proc_writes_stdin_at_start_and_the_rest_in_wait():
    from cni_bridge.proc import Proc
    small = Proc(["cat"], "batch\n")
    assert small.in_fd == -1          # written and closed at start: the tool runs on alone
    assert small.wait() == (0, "batch\n", "")
    big_text = "x" * 300_000 + "\n"   # more than a pipe holds: the rest is written by wait()
    big = Proc(["cat"], big_text)
    assert big.in_fd >= 0
    assert big.wait() == (0, big_text, "")
    early_exit = Proc(["true"], "y" * 300_000)   # a tool that does not read: no hang, no error
    assert early_exit.wait()[0] == 0


def test_in_thread_returns_the_result_or_raises_the_error():
    from cni_bridge.proc import in_thread
    assert in_thread(lambda a, b=0: a + b, 1, b=2)() == 3

    def fails():
        raise OSError(16, "busy")
    join = in_thread(fails)
    with pytest.raises(OSError, match="busy"):
        join()
