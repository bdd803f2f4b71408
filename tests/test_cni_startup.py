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

from cni import env, fastjson, ipaddr, version
from cni_bridge import config
from cni_bridge.firewall import iptsaved, nftables, nftlisting, owner_comment

REPO = Path(__file__).resolve().parent.parent

# Every module ADD, DEL, CHECK, GC and STATUS load with the built-in IPAM.
PLUGIN_MODULES = ["cni_bridge.plugin", "cni_bridge.config", "cni_bridge.ipam", "cni_bridge.ipam.config",
                  "cni_bridge.ipam.allocator", "cni_bridge.link", "cni_bridge.netlink", "cni_bridge.netns",
                  "cni_bridge.proc",
                  "cni_bridge.firewall.iptables", "cni_bridge.firewall.nftables", "cni_bridge.firewall.nftlisting",
                  "cni.types"]
# What a plugin exec must not pay for (each costs milliseconds at import).
HEAVY = {"re", "json", "enum", "dataclasses", "inspect", "typing", "subprocess", "threading",
         "ctypes", "base64", "pathlib", "socket", "signal", "tempfile", "shutil", "ipaddress", "functools", "os"}


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


ELEMENTS = ['10.9.0.2 comment "md/t/c/eth0"', 'tcp . 8080 comment "md/n/c/eth0" : 10.0.0.2 . 80',
            '1.2.3.4 . tcp . 80 : 10.0.0.2 . 80', '"tb0" . 10.9.0.2 . "tb0" comment "md/x"', 'k comment "a : b"',
            'k comment "a" x : y', 'k comment "a', 'k : v comment "c"', 'k comment "a" : ', ' : ', '']
TOKENS_EL = [" comment ", '"', " : ", ":", " ", "x", "md/", "1", ".", "tcp", '"tb0"']


def _samples(n=30000):
    rnd = random.Random(15)
    fixed = ["1.0.0", "1.0.0\n", "01.2.3", "\u0661.0.0", "1.0", "1.0.0 ", "a", "a-b.c_d", "-a", "",
             '-A X -m comment --comment "md/net/c/eth0" -j MASQUERADE', '--comment md/x --comment "md/y"',
             'ip saddr 1.2.3.4 masquerade comment "md/n/c/eth0" # handle 7', 'comment "open']
    return (fixed + ["".join(rnd.choice(TOKENS) for _ in range(rnd.randint(0, 8))) for _ in range(n)]
            + ["".join(rnd.choice(TOKENS_EL) for _ in range(rnd.randint(0, 9))) for _ in range(n // 2)])


def test_string_checks_match_the_regular_expressions_they_replace():
    version_re = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
    name_re = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")
    ipt_re, any_re = re.compile(r'--comment "?(md/[^"\s]*)"?'), re.compile(r'--comment "?([^"\s]+)"?')
    set_re = re.compile(r"@(\w+)")
    comment_re = re.compile(r'comment "([^"]*)"')
    element_re = re.compile(r'(.*?)(?: comment "([^"]*)")?(?: : (.*))?')
    for s in _samples() + ELEMENTS:
        m = version_re.match(s)
        assert version._numbers(s) == (tuple(int(g) for g in m.groups()) if m else None), s
        assert env._is_name(s) == bool(name_re.match(s)), s
        for rx, got in ((ipt_re, iptsaved.comment(s)), (any_re, iptsaved.comment(s, prefix="")),
                        (set_re, nftables._set_looked_up(s))):
            m = rx.search(s)
            assert got == (m.group(1) if m else None), (rx.pattern, s)
        plain = re.fullmatch(r"[A-Za-z0-9_.@+=-]+", s) is not None
        assert owner_comment("n", "c", s).endswith("/" + s) == plain, s
        m = comment_re.search(s)
        assert nftlisting.comment_of(s) == (m.group(1) if m else ""), s
        if "\n" not in s:
            m = element_re.fullmatch(s)
            assert nftlisting.element_parts(s) == (m.group(1), m.group(2) or "", m.group(3) or ""), s


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


def test_a_tool_started_early_is_taken_over_or_ended_and_reaped():
    from cni_bridge import proc
    proc.start_early(["cat"])
    spare_pid = proc._SPARES[("cat",)][0]
    taken = proc.Proc(["cat"], "batch\n")
    assert taken.pid == spare_pid and taken.wait() == (0, "batch\n", "")
    assert proc.Proc(["cat"], "again\n").wait() == (0, "again\n", "")   # none left: spawned
    proc.start_early(["cat"])
    unused = proc._SPARES[("cat",)][0]
    proc.drop_spares()
    assert proc._SPARES == {}
    with pytest.raises(ChildProcessError):     # reaped: no zombie left behind
        os.waitpid(unused, os.WNOHANG)
    proc.start_early(["md-no-such-tool"])        # not installed: the Proc that needs it says so
    assert proc._SPARES == {}
    with pytest.raises(proc.CNIError, match="md-no-such-tool not found"):
        proc.Proc(["md-no-such-tool"], "x")


def test_environ_without_os_is_the_decoded_environment():
    code = ("import sys; sys.path.insert(0, %r); from cni.env import environ; e = environ(); "
            "print('os' in sys.modules, e['MD_T'] == 'x\\udcff\\u00e9', e['MD_EMPTY'] == '', 'MD_NONE' in e)"
            % str(REPO))
    env = {"MD_T": "x\udcff\u00e9", "MD_EMPTY": "", "LC_ALL": "C.UTF-8"}
    out = subprocess.run([sys.executable, "-IS", "-c", code], env=env, capture_output=True, text=True,
                         errors="surrogateescape", timeout=30, check=True).stdout.split()
    assert out == ["False", "True", "True", "False"]
    from cni.env import environ
    assert environ() is os.environ   # a process that has os: its live environment


def test_makedirs_is_os_makedirs_exist_ok(tmp_path):
    from cni_bridge.files import makedirs
    old = os.umask(0o022)
    try:
        makedirs(str(tmp_path / "a" / "b" / "c"), 0o700)
        makedirs(str(tmp_path / "a" / "b" / "c"), 0o700)          # there: fine
        assert (tmp_path / "a" / "b" / "c").stat().st_mode & 0o777 == 0o700
        assert (tmp_path / "a").stat().st_mode & 0o777 == 0o755     # parents: 0o777 less the umask
        (tmp_path / "f").write_text("")
        for target in (tmp_path / "f", tmp_path / "f" / "x"):
            with pytest.raises((FileExistsError, NotADirectoryError)) as mine:
                makedirs(str(target))
            with pytest.raises(type(mine.value)):
                os.makedirs(str(target), exist_ok=True)
    finally:
        os.umask(old)


def test_in_thread_returns_the_result_or_raises_the_error():
    from cni_bridge.proc import in_thread
    assert in_thread(lambda a, b=0: a + b, 1, b=2)() == 3

    def fails():
        raise OSError(16, "busy")
    join = in_thread(fails)
    with pytest.raises(OSError, match="busy"):
        join()


# --- ipaddr: ipaddress's answers, for what the plugin parses ---------------------------
ADDRS = ["1.2.3.4", "0.0.0.0", "255.255.255.255", "01.2.3.4", "1.2.3.04", "1.2.3", "256.1.1.1", " 1.2.3.4",
         "1.2.3.4 ", "1.2.3.4.5", "1..2.3", "1.2.3.4\n", "\u0661.2.3.4", "", "x", "::", "::1", "FE80::1",
         "fe80::1:0:0:1", "::ffff:1.2.3.4", "::ffff:01.2.3.4", "::1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "1::2::3",
         "0:0::0:0:0:0:0:0", "1:2:3:4:5:6:1.2.3.4", ":1::", "1:::2", "00000::1", "0000::1", "1:0:0:2:0:0:0:3",
         "1:0:0:2:0:0:3:4", "0:0:1:0:0:0:0:0", "fd00:123::", "2001:db8::8:800:200c:417a", 7, 2 ** 40, -1, None,
         1.5, "169.254.3.4", "169.255.0.1", "febf::1", "fec0::1"]
NETS = ["10.0.0.0/24", "10.0.0.1/24", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/024", "10.0.0.0/+24", "10.0.0.0/ 24",
        "10.0.0.0/255.255.255.0", "10.0.0.0/0.0.0.255", "10.0.0.0/255.0.255.0", "10.0.0.0/0.0.0.0",
        "10.0.0.0/255.255.255.255", "10.0.0.0/24/1", "0.0.0.0/0", "::/0", "fd00:123::/64", "fd00:123::5/64",
        "fd00::/129", "fd00::/ffff::", "1.2.3.4", "fd00::1", "/24", "10.0.0.0/\u0662\u0664", 7, None, "x/8"]


def _ip_outcome(module, fn: str, value, **kw):
    try:
        got = getattr(module, fn)(value, **kw)
    except ValueError:
        return "ValueError"
    net = getattr(got, "network", got if fn == "ip_network" else None)
    ip = getattr(got, "ip", got if fn == "ip_address" else None)
    out = [str(got), got.version]
    if ip is not None:
        out += [int(ip), str(ip), ip.is_link_local, str(ip + 1) if int(ip) + 1 < 1 << ip.max_prefixlen else ""]
    if net is not None:
        out += [str(net), str(net.network_address), str(net.broadcast_address), net.prefixlen,
                net.max_prefixlen]
    return out


@pytest.mark.parametrize("text", ADDRS, ids=range(len(ADDRS)))
def test_ipaddr_address_is_ipaddress(text):
    import ipaddress
    assert _ip_outcome(ipaddr, "ip_address", text) == _ip_outcome(ipaddress, "ip_address", text)


@pytest.mark.parametrize("text", ADDRS + NETS, ids=range(len(ADDRS + NETS)))
def test_ipaddr_networks_and_interfaces_are_ipaddress(text):
    import ipaddress
    assert _ip_outcome(ipaddr, "ip_interface", text) == _ip_outcome(ipaddress, "ip_interface", text)
    for strict in (False, True):
        assert (_ip_outcome(ipaddr, "ip_network", text, strict=strict)
                == _ip_outcome(ipaddress, "ip_network", text, strict=strict))


def test_ipaddr_containment_overlap_and_equality_are_ipaddress():
    import ipaddress
    nets = ["10.0.0.0/8", "10.1.0.0/16", "10.2.0.0/16", "11.0.0.0/8", "0.0.0.0/0", "fd00::/8", "fd00:1::/32"]
    ips = ["10.1.2.3", "11.0.0.1", "fd00:1::5", "fe00::1", "0.0.0.0"]
    for a in nets:
        for b in nets:
            mine, theirs = ipaddr.ip_network(a), ipaddress.ip_network(b)
            if mine.version == theirs.version:
                assert mine.overlaps(ipaddr.ip_network(b)) == ipaddress.ip_network(a).overlaps(theirs), (a, b)
            assert (mine == ipaddr.ip_network(b)) == (a == b)
        for ip in ips:
            want = ipaddress.ip_address(ip).version == ipaddress.ip_network(a).version and \
                ipaddress.ip_address(ip) in ipaddress.ip_network(a)
            assert (ipaddr.ip_address(ip) in ipaddr.ip_network(a)) == want, (ip, a)
    pairs = [("10.0.0.1/24", "10.0.0.1/24"), ("10.0.0.1/24", "10.0.0.1/16"), ("10.0.0.1/24", "10.0.0.2/24"),
             ("fd00::1/64", "fd00::1/64")]
    for a, b in pairs:
        assert (ipaddr.ip_interface(a) == ipaddr.ip_interface(b)) == (ipaddress.ip_interface(a) ==
                                                                       ipaddress.ip_interface(b))
        assert len({ipaddr.ip_interface(a), ipaddr.ip_interface(b)}) == len({ipaddress.ip_interface(a),
                                                                             ipaddress.ip_interface(b)})


def test_ipaddr_refuses_scope_ids_ipaddress_would_take():
    with pytest.raises(ValueError, match="fe80::1%eth0"):
        ipaddr.ip_address("fe80::1%eth0")
