"""The CNI executor against a scripted stand-in plugin (tests/plugins/noop).

Each test writes the stand-in's debug file (what each plugin answers) and then
asserts what the executor sent (order, environment, request config,
prevResult, capability args), what it answered, and what it cached. The
stand-in does not touch the network, so these tests need no node; the netns
argument is a plain file (the executor only checks that the path exists).
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import threading
import time
from pathlib import Path

import pytest

from cni.conf import NetworkConfigList
from cni.errors import CNIError
from minidocker.network.cni import config as cni_config
from minidocker.network.cni.cache import CacheEntry
from minidocker.network.cni.executor import CNIExecutor, MultiError, RuntimeConf, failure_text
from minidocker.network.cni.invoke import PluginError, PluginNotFound

PLUGINS = Path(__file__).resolve().parent / "plugins"
NOOP = PLUGINS / "noop"


class Stand:
    """A stand-in setup: debug file, call log, executor, netns placeholder."""

    def __init__(self, tmp: Path, monkeypatch, timeout: float = 10.0):
        self.tmp = tmp
        self.debug = tmp / "debug.json"
        self.log = tmp / "calls.jsonl"
        self.netns = tmp / "netns"
        self.netns.write_text("")
        self.cache_dir = tmp / "cache"
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.ex = CNIExecutor(tmp / "net.d", self.cache_dir, [str(self.bin), str(PLUGINS)], timeout=timeout)
        self.script({})
        # GC, STATUS and VERSION carry no CNI_ARGS: the stand-in finds its
        # debug file through the environment the executor passes on.
        monkeypatch.setenv("NOOP_DEBUG", str(self.debug))
        monkeypatch.setenv("MINIDOCKER_CNI_PASSENV", "NOOP_DEBUG")  # plugins get PATH and CNI_* only

    def script(self, plugins: dict, default: dict | None = None) -> None:
        self.debug.write_text(json.dumps({"log": str(self.log), "plugins": plugins, "*": default or {}}))

    def calls(self, command: str | None = None) -> list[dict]:
        if not self.log.exists():
            return []
        out = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [c for c in out if command is None or c["command"] == command]

    def order(self) -> list[tuple[str, str]]:
        return [(c["command"], c["tag"]) for c in self.calls()]

    def reset(self) -> None:
        if self.log.exists():
            self.log.unlink()

    def net(self, *tags, version="1.0.0", caps: dict | None = None, **top) -> NetworkConfigList:
        plugins = []
        for tag in tags:
            p = {"type": "noop", "tag": tag}
            if caps and tag in caps:
                p["capabilities"] = caps[tag]
            plugins.append(p)
        obj = {"cniVersion": version, "name": top.pop("name", "testnet"), "plugins": plugins, **top}
        return NetworkConfigList.from_bytes(json.dumps(obj).encode())

    def rt(self, cid="c1", ifname="eth0", caps=None, args=None) -> RuntimeConf:
        return RuntimeConf(cid, str(self.netns), ifname, [("DEBUG", str(self.debug))] + (args or []),
                           caps or {})

    def cache_file(self, net, cid="c1", ifname="eth0") -> Path:
        return self.cache_dir / "results" / f"{net.name}-{cid}-{ifname}"


@pytest.fixture
def st(tmp_path, monkeypatch):
    return Stand(tmp_path, monkeypatch)


# --- ADD / DEL / CHECK --------------------------------------------------------

def test_add_runs_in_order_with_prevresult_capabilities_and_env(st):
    net = st.net("p1", "p2", "p3", caps={"p2": {"portMappings": True, "bandwidth": False}},
                 extraKey={"kept": 1})
    caps = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 1}, "ips": ["10.0.0.9/24"]}
    res = st.ex.add(net, st.rt(caps=caps, args=[("K", "V")]))
    assert [i.name for i in res.interfaces] == ["p1", "p2", "p3"]
    calls = st.calls()
    assert [(c["command"], c["tag"]) for c in calls] == [("ADD", "p1"), ("ADD", "p2"), ("ADD", "p3")]
    first, second, third = (c["stdin"] for c in calls)
    # R4: cniVersion and name injected; no prevResult on the first ADD
    assert first == {"type": "noop", "tag": "p1", "cniVersion": "1.0.0", "name": "testnet"}
    assert second["prevResult"] == {"cniVersion": "1.0.0", "interfaces": [{"name": "p1"}], "dns": {}}
    assert [i["name"] for i in third["prevResult"]["interfaces"]] == ["p1", "p2"]
    # runtimeConfig only from capabilities the plugin declares true; capabilities stripped
    assert second["runtimeConfig"] == {"portMappings": caps["portMappings"]}
    assert "runtimeConfig" not in first and "runtimeConfig" not in third
    assert "capabilities" not in second
    env = calls[0]["env"]
    assert env == {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": str(st.netns),
                   "CNI_IFNAME": "eth0", "CNI_ARGS": f"DEBUG={st.debug};K=V",
                   "CNI_PATH": f"{st.bin}:{PLUGINS}"}


def test_cache_file_is_libcni_format(st):
    net = st.net("p1", "p2", caps={"p2": {"portMappings": True}})
    caps = {"portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "udp"}]}
    st.ex.add(net, st.rt(caps=caps))
    path = st.cache_file(net)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    obj = json.loads(path.read_bytes())
    assert set(obj) == {"kind", "containerId", "config", "ifName", "networkName", "netns",
                        "cniArgs", "capabilityArgs", "result"}
    assert obj["kind"] == "cniCacheV1" and obj["containerId"] == "c1" and obj["ifName"] == "eth0"
    assert obj["networkName"] == "testnet" and obj["netns"] == str(st.netns)
    assert base64.b64decode(obj["config"]) == net.bytes
    assert obj["cniArgs"] == [["DEBUG", str(st.debug)]]
    assert obj["capabilityArgs"] == caps
    assert obj["result"] == {"cniVersion": "1.0.0", "interfaces": [{"name": "p1"}, {"name": "p2"}],
                             "dns": {}}
    assert [e.container_id for e in st.ex.cache.attachments(network="testnet")] == ["c1"]


def test_del_reverse_with_cached_result_and_capability_args(st):
    net = st.net("p1", "p2", caps={"p2": {"portMappings": True}})
    caps = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    added = st.ex.add(net, st.rt(caps=caps))
    st.reset()
    # DEL without capability args or CNI_ARGS: both come back from the cache
    st.ex.delete(net, RuntimeConf("c1", str(st.netns), "eth0"))
    calls = st.calls()
    assert st.order() == [("DEL", "p2"), ("DEL", "p1")]
    for c in calls:
        assert c["stdin"]["prevResult"] == added.to_dict("1.0.0")
        assert c["env"]["CNI_ARGS"] == f"DEBUG={st.debug}"
    assert calls[0]["stdin"]["runtimeConfig"] == caps
    assert "runtimeConfig" not in calls[1]["stdin"]
    assert not st.cache_file(net).exists()
    # R6: repeated DELs are allowed; without a cache there is no prevResult
    st.reset()
    st.ex.delete(net, st.rt())
    assert st.order() == [("DEL", "p2"), ("DEL", "p1")]
    assert all("prevResult" not in c["stdin"] for c in st.calls())


def test_del_without_netns_and_stop_at_first_error(st):
    net = st.net("p1", "p2", "p3")
    st.ex.add(net, st.rt())
    st.script({"p2": {"DEL": {"error": {"code": 11, "msg": "busy", "details": "try later"}}}})
    st.reset()
    with pytest.raises(PluginError) as exc:
        st.ex.delete(net, RuntimeConf("c1", "", "eth0", [("DEBUG", str(st.debug))]))
    assert exc.value.code == 11 and exc.value.plugin == "noop" and exc.value.command == "DEL"
    assert st.order() == [("DEL", "p3"), ("DEL", "p2")]
    # the netns came from the cache; the entry stays until a DEL succeeds
    assert st.calls()[0]["env"]["CNI_NETNS"] == str(st.netns)
    assert st.cache_file(net).exists()
    st.script({})
    st.ex.delete(net, st.rt())
    assert not st.cache_file(net).exists()


def test_unreadable_cache_is_deleted_and_del_goes_on(st):
    net = st.net("p1")
    path = st.cache_file(net)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    st.ex.delete(net, st.rt())
    assert st.order() == [("DEL", "p1")]
    assert "prevResult" not in st.calls()[0]["stdin"]
    assert not path.exists()


def test_cached_result_is_converted_to_the_configs_version(st):
    """R12: a cached 0.4.0 result is handed to a 1.0.0 list as 1.0.0."""
    net = st.net("p1", version="1.0.0")
    old = {"cniVersion": "0.4.0", "interfaces": [{"name": "eth0"}],
           "ips": [{"version": "4", "interface": 0, "address": "10.1.0.2/24"}]}
    st.ex.cache.write(CacheEntry("c1", "testnet", "eth0", net.bytes, str(st.netns),
                                 [("DEBUG", str(st.debug))], {}, old))
    st.ex.delete(net, st.rt())
    prev = st.calls()[0]["stdin"]["prevResult"]
    assert prev["cniVersion"] == "1.0.0"
    assert prev["ips"] == [{"interface": 0, "address": "10.1.0.2/24"}]


def test_results_without_version_and_older_versions_convert(st):
    net = st.net("p1", "p2", version="1.0.0")
    st.script({"p1": {"ADD": {"result": {"ips": [{"address": "10.2.0.5/16"}]}}}})
    res = st.ex.add(net, st.rt())
    assert st.calls()[1]["stdin"]["prevResult"]["cniVersion"] == "1.0.0"
    assert [ip.address for ip in res.ips] == ["10.2.0.5/16"]
    st.ex.delete(net, st.rt())
    st.reset()
    st.script({"p1": {"ADD": {"result": {"cniVersion": "0.3.1", "interfaces": [{"name": "x"}],
                                         "ips": [{"version": "4", "address": "10.3.0.5/16",
                                                  "interface": 0}]}}}})
    st.ex.add(net, st.rt())
    prev = st.calls()[1]["stdin"]["prevResult"]
    assert prev["cniVersion"] == "1.0.0" and "version" not in prev["ips"][0]
    st.ex.delete(net, st.rt())


def test_version_selection_from_cniversions(st):
    net = st.net("p1", version="0.3.1", cniVersions=["0.4.0", "1.1.0", "9.9.9"])
    assert net.cni_version == "1.1.0"
    st.ex.add(net, st.rt())
    assert st.calls()[0]["stdin"]["cniVersion"] == "1.1.0"
    st.ex.delete(net, st.rt())


def test_check_only_between_add_and_del(st):
    net = st.net("p1", "p2")
    with pytest.raises(CNIError) as exc:
        st.ex.check(net, st.rt())
    assert exc.value.code == 3 and st.calls() == []
    added = st.ex.add(net, st.rt())
    st.reset()
    st.ex.check(net, st.rt())
    assert st.order() == [("CHECK", "p1"), ("CHECK", "p2")]
    assert all(c["stdin"]["prevResult"] == added.to_dict("1.0.0") for c in st.calls())
    st.reset()
    st.script({"p2": {"CHECK": {"error": {"code": 100, "msg": "eth0 is gone"}}}})
    with pytest.raises(PluginError, match="eth0 is gone"):
        st.ex.check(net, st.rt())
    st.ex.delete(net, st.rt())
    st.reset()
    with pytest.raises(CNIError):
        st.ex.check(net, st.rt())
    assert st.calls() == []


def test_check_never_with_disable_check_nor_before_0_4_0(st):
    net = st.net("p1", disableCheck="true")
    st.ex.add(net, st.rt())
    st.reset()
    st.ex.check(net, st.rt())
    assert st.calls() == []
    st.ex.delete(net, st.rt())
    old = st.net("p1", version="0.3.1")
    st.ex.add(old, st.rt())
    st.reset()
    with pytest.raises(CNIError) as exc:
        st.ex.check(old, st.rt())
    assert exc.value.code == 1 and st.calls() == []
    st.ex.delete(old, st.rt())
    # < 0.4.0: no prevResult on DEL, but the cache entry still goes
    assert all("prevResult" not in c["stdin"] for c in st.calls("DEL"))
    assert not st.cache_file(old).exists()


# --- failures of a plugin ---------------------------------------------------------

@pytest.mark.parametrize("code", [1, 2, 3, 4, 5, 6, 7, 11, 50, 51, 100, 142])
def test_error_codes_stop_add_and_trigger_del(st, code):
    net = st.net("p1", "p2", "p3")
    st.script({"p2": {"ADD": {"error": {"code": code, "msg": f"failure {code}", "details": "why"}}}})
    with pytest.raises(PluginError) as exc:
        st.ex.add(net, st.rt())
    err = exc.value
    assert (err.code, err.msg, err.details) == (code, f"failure {code}", "why")
    assert err.plugin == "noop" and err.command == "ADD"
    assert str(err) == f"plugin type='noop' failed (add): failure {code}; why"
    # stopped at p2; then a DEL of the whole list, in reverse
    assert st.order() == [("ADD", "p1"), ("ADD", "p2"), ("DEL", "p3"), ("DEL", "p2"), ("DEL", "p1")]
    assert not st.cache_file(net).exists()


@pytest.mark.parametrize("action,code,text", [
    ({"stdout": "this is not json", "exit": 1}, 6, "error parsing its diagnostic message"),
    ({"stdout": '{"code": "x"}', "exit": 1}, 6, "error parsing its diagnostic message"),
    ({"exit": 1}, 999, "netplugin failed with no error message: exit status 1"),
    ({"stderr": "something broke badly", "exit": 2}, 999, "something broke badly"),
    ({"signal": "SEGV"}, 999, "killed by signal SIGSEGV"),
    ({"signal": "KILL"}, 999, "killed by signal SIGKILL"),
    ({"stdout": "garbage", "exit": 0}, 6, "invalid result"),
    ({"stdout": "", "exit": 0}, 6, "nothing on stdout"),
    ({"stdout": '{"ips": [{"address": "nonsense"}]}', "exit": 0}, 6, "invalid result"),
])
def test_bad_plugin_output(st, action, code, text):
    net = st.net("p1")
    st.script({"p1": {"ADD": action}})
    with pytest.raises(PluginError) as exc:
        st.ex.add(net, st.rt())
    assert exc.value.code == code
    assert text in str(exc.value)
    assert "type='noop'" in str(exc.value)
    assert st.order() == [("ADD", "p1"), ("DEL", "p1")]


def test_stderr_is_not_an_error_when_stdout_has_one(st):
    net = st.net("p1")
    st.script({"p1": {"ADD": {"stderr": "log line\n", "error": {"code": 7, "msg": "bad config"}}}})
    with pytest.raises(PluginError) as exc:
        st.ex.add(net, st.rt())
    assert (exc.value.code, exc.value.msg) == (7, "bad config")
    assert exc.value.stderr == "log line"


def test_timeout_kills_the_process_group_and_dels(tmp_path, monkeypatch):
    st = Stand(tmp_path, monkeypatch, timeout=1.0)
    net = st.net("p1", "p2")
    st.script({"p2": {"ADD": {"child": True, "sleep": 60}}})
    start = time.monotonic()
    with pytest.raises(PluginError) as exc:
        st.ex.add(net, st.rt())
    assert time.monotonic() - start < 4
    assert exc.value.timed_out and "timed out after 1s" in str(exc.value)
    child = int(Path(str(st.log) + ".child").read_text())
    for _ in range(50):
        if not _alive(child):
            break
        time.sleep(0.02)
    assert not _alive(child), "the plugin's child survived the timeout"
    assert st.order() == [("ADD", "p1"), ("ADD", "p2"), ("DEL", "p2"), ("DEL", "p1")]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_missing_plugin_is_an_error(st):
    net = NetworkConfigList.from_dict({"cniVersion": "1.0.0", "name": "n",
                                       "plugins": [{"type": "noop", "tag": "p1"}, {"type": "nosuchplugin"}]})
    with pytest.raises(PluginNotFound) as exc:
        st.ex.add(net, st.rt())
    assert "nosuchplugin" in str(exc.value)
    assert st.order() == [("ADD", "p1"), ("DEL", "p1")]


def test_missing_plugin_is_reported_once(st):
    """The cleanup DEL fails for the same missing binary: said once, as the cause."""
    net = NetworkConfigList.from_dict({"cniVersion": "1.0.0", "name": "n",
                                       "plugins": [{"type": "noop", "tag": "p1"}, {"type": "nosuchplugin"}]})
    with pytest.raises(PluginNotFound) as exc:
        st.ex.add(net, st.rt())
    text = failure_text(exc.value)
    assert text.count("nosuchplugin") == 1 and "\n" not in text, text


def test_a_cleanup_failing_otherwise_comes_after_the_cause(st):
    net = st.net("p1", "p2")
    st.script({"p2": {"ADD": {"error": {"code": 7, "msg": "bad address"}}},
               "p1": {"DEL": {"error": {"code": 11, "msg": "cannot release the lease"}}}})
    with pytest.raises(PluginError) as exc:
        st.ex.add(net, st.rt())
    cause, consequence = failure_text(exc.value).splitlines()
    assert "bad address" in cause and "cleanup" not in cause
    assert "cleanup DEL" in consequence and "cannot release the lease" in consequence


def test_preferred_directories_come_before_the_path(st, tmp_path):
    """A runtime's own plugin is found beside it first; other types still by path."""
    own = tmp_path / "own"
    own.mkdir()
    shutil.copy2(NOOP, own / "noop")
    ex = CNIExecutor(st.tmp / "net.d", st.cache_dir, [str(PLUGINS)], preferred={"noop": [str(own)]})
    net = st.net("p1")
    ex.add(net, st.rt())
    assert [c["argv0"] for c in st.calls("ADD")] == [str(own / "noop")]
    ex = CNIExecutor(st.tmp / "net.d", st.cache_dir, [str(PLUGINS)], preferred={"noop": [str(tmp_path / "none")]})
    ex.delete(net, st.rt())
    assert [c["argv0"] for c in st.calls("DEL")] == [str(NOOP)]


@pytest.mark.parametrize("rt_kw,code", [
    ({"container_id": "bad id!"}, 4), ({"container_id": ""}, 3), ({"ifname": "a" * 16}, 4),
    ({"ifname": "et/h0"}, 4), ({"netns": "/nonexistent/netns"}, 4), ({"netns": ""}, 4),
])
def test_runtime_conf_is_validated_before_any_plugin(st, rt_kw, code):
    rt = st.rt()
    for k, v in rt_kw.items():
        setattr(rt, k, v)
    with pytest.raises(CNIError) as exc:
        st.ex.add(st.net("p1"), rt)
    assert exc.value.code == code
    assert st.calls() == []


def test_text_file_busy_is_retried(st):
    target = st.bin / "busy"
    shutil.copy(NOOP, target)
    fd = os.open(target, os.O_WRONLY)           # a writer holds it: exec gets ETXTBSY
    threading.Timer(0.5, os.close, [fd]).start()
    net = NetworkConfigList.from_dict({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "busy", "tag": "b"}]})
    start = time.monotonic()
    st.ex.add(net, st.rt())
    assert time.monotonic() - start >= 0.4
    assert st.order() == [("ADD", "b")]
    st.ex.delete(net, st.rt())


# --- VERSION probing -----------------------------------------------------------------

def _copy_plugin(st, name, action) -> None:
    shutil.copy(NOOP, st.bin / name)
    (st.bin / (name + ".debug")).write_text(json.dumps({"log": str(st.log), "*": {"VERSION": action}}))


def test_version_probe_and_its_cache(st):
    _copy_plugin(st, "old", {"versions": ["0.3.1", "0.4.0"]})
    assert st.ex.version_info("old") == ["0.3.1", "0.4.0"]
    assert st.ex.version_info("old") == ["0.3.1", "0.4.0"]
    probes = st.calls("VERSION")
    assert len(probes) == 1, "the probe is cached per binary"
    env = probes[0]["env"]
    assert env["CNI_NETNS"] == "dummy" and env["CNI_IFNAME"] == "dummy"
    assert probes[0]["stdin"] == {"cniVersion": "1.1.0"}
    # a new binary (new mtime/size) is probed again
    os.utime(st.bin / "old", ns=(1, 1))
    st.ex.version_info("old")
    assert len(st.calls("VERSION")) == 2


def test_version_probe_of_legacy_and_broken_plugins(st):
    _copy_plugin(st, "legacy", {"versions": "legacy"})
    assert st.ex.version_info("legacy") == ["0.1.0"]
    _copy_plugin(st, "broken", {"stdout": "nonsense"})
    with pytest.raises(PluginError) as exc:
        st.ex.version_info("broken")
    assert exc.value.code == 6


def test_validate_checks_every_plugin_version(st):
    _copy_plugin(st, "old", {"versions": ["0.3.1", "0.4.0"]})
    _copy_plugin(st, "new", {"versions": ["1.0.0", "1.1.0"]})
    good = NetworkConfigList.from_dict({"cniVersion": "1.0.0", "name": "n", "plugins": [
        {"type": "new", "capabilities": {"portMappings": True, "ips": False}}]})
    assert st.ex.validate(good) == ["portMappings"]
    bad = NetworkConfigList.from_dict({"cniVersion": "1.0.0", "name": "n", "plugins": [
        {"type": "old"}, {"type": "new"}, {"type": "missing"}]})
    with pytest.raises(MultiError) as exc:
        st.ex.validate(bad)
    assert len(exc.value.errors) == 2
    assert "'old' does not support config version '1.0.0'" in str(exc.value)
    assert "missing" in str(exc.value)


# --- GC and STATUS ----------------------------------------------------------------------

def test_gc_deletes_stale_attachments_then_calls_plugin_gc(st):
    net = st.net("p1", "p2", version="1.1.0", caps={"p1": {"portMappings": True}})
    other = st.net("p1", version="1.1.0", name="othernet")
    for cid in ("c1", "c2", "c3"):
        st.ex.add(net, st.rt(cid, caps={"portMappings": [{"hostPort": int(cid[1])}]}))
    st.ex.add(other, st.rt("c9"))
    st.reset()
    st.ex.gc(net, [("c1", "eth0")])
    calls = st.calls()
    dels = [(c["env"]["CNI_CONTAINERID"], c["tag"]) for c in calls if c["command"] == "DEL"]
    assert dels == [("c2", "p2"), ("c2", "p1"), ("c3", "p2"), ("c3", "p1")]
    # a full DEL: cached netns, args and capability args
    c3_p1 = [c for c in calls if c["command"] == "DEL" and c["env"]["CNI_CONTAINERID"] == "c3"][1]
    assert c3_p1["stdin"]["runtimeConfig"] == {"portMappings": [{"hostPort": 3}]}
    assert c3_p1["env"]["CNI_NETNS"] == str(st.netns) and "prevResult" in c3_p1["stdin"]
    gcs = [c for c in calls if c["command"] == "GC"]
    assert [c["tag"] for c in gcs] == ["p1", "p2"]
    for c in gcs:
        assert set(c["env"]) == {"CNI_COMMAND", "CNI_PATH"}
        valid = [{"containerID": "c1", "ifname": "eth0"}]
        assert c["stdin"]["cni.dev/valid-attachments"] == valid
        assert c["stdin"]["cni.dev/attachments"] == valid
        assert "runtimeConfig" not in c["stdin"] and "prevResult" not in c["stdin"]
    left = sorted(p.name for p in (st.cache_dir / "results").iterdir())
    assert left == ["othernet-c9-eth0", "testnet-c1-eth0"]
    st.ex.delete(net, st.rt("c1"))
    st.ex.delete(other, st.rt("c9"))


def test_gc_gathers_all_errors(st):
    net = st.net("p1", "p2", version="1.1.0")
    st.ex.add(net, st.rt("c1"))
    st.ex.add(net, st.rt("c2"))
    st.script({"p2": {"DEL": {"error": {"code": 11, "msg": "del failed"}},
                      "GC": {"error": {"code": 5, "msg": "gc p2 failed"}}},
               "p1": {"GC": {"stderr": "gc p1 crashed", "exit": 3}}})
    st.reset()
    with pytest.raises(MultiError) as exc:
        st.ex.gc(net, [])
    errs = exc.value.errors
    assert len(errs) == 4
    assert "failed to delete stale attachment c1 eth0" in str(errs[0]) and "del failed" in str(errs[0])
    assert "gc p1 crashed" in str(errs[2]) and errs[3].code == 5
    assert [c["tag"] for c in st.calls("GC")] == ["p1", "p2"]
    st.script({})
    st.ex.gc(net, [])
    assert not list((st.cache_dir / "results").iterdir())


def test_gc_disabled_and_before_1_1_0(st):
    off = st.net("p1", version="1.1.0", disableGC=True)
    st.ex.add(off, st.rt())
    st.reset()
    st.ex.gc(off, [])
    assert st.calls() == []
    st.ex.delete(off, st.rt())
    old = st.net("p1", version="1.0.0")
    st.ex.add(old, st.rt())
    st.reset()
    st.ex.gc(old, [])
    assert st.order() == [("DEL", "p1")]       # stale attachments yes, plugin GC no


def test_status(st):
    net = st.net("p1", "p2", "p3", version="1.1.0")
    assert st.ex.status(net) is True
    assert st.order() == [("STATUS", "p1"), ("STATUS", "p2"), ("STATUS", "p3")]
    assert set(st.calls()[0]["env"]) == {"CNI_COMMAND", "CNI_PATH"}
    st.reset()
    st.script({"p2": {"STATUS": {"error": {"code": 50, "msg": "not ready", "details": "no uplink"}}}})
    with pytest.raises(PluginError) as exc:
        st.ex.status(net)
    assert exc.value.code == 50 and exc.value.command == "STATUS"
    assert st.order() == [("STATUS", "p1"), ("STATUS", "p2")]
    st.reset()
    assert st.ex.status(st.net("p1", version="1.0.0")) is False
    assert st.calls() == []


# --- locks --------------------------------------------------------------------------------

def test_gc_waits_for_a_running_add_and_same_container_ops_serialise(st):
    net = st.net("p1", version="1.1.0")
    st.script({"p1": {"ADD": {"sleep": 0.6}}})
    errors = []

    def add():
        try:
            st.ex.add(net, st.rt("c1"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
    t = threading.Thread(target=add)
    t.start()
    time.sleep(0.2)
    start = time.monotonic()
    st.ex.gc(net, [("c1", "eth0")])
    assert time.monotonic() - start >= 0.25, "GC did not wait for the ADD"
    t.join()
    assert not errors
    assert st.order() == [("ADD", "p1"), ("GC", "p1")]
    # two ADDs of different containers run side by side
    st.reset()
    threads = [threading.Thread(target=st.ex.add, args=(net, st.rt(c))) for c in ("c2", "c3")]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - start < 1.1
    st.script({})
    for c in ("c1", "c2", "c3"):
        st.ex.delete(net, st.rt(c))


# --- configuration directory ----------------------------------------------------------

def _write(d: Path, name: str, obj) -> None:
    (d / name).write_text(obj if isinstance(obj, str) else json.dumps(obj))


def test_config_dir_loading(tmp_path):
    d = tmp_path / "net.d"
    d.mkdir()
    lst = lambda name, t="noop": {"cniVersion": "1.0.0", "name": name, "plugins": [{"type": t}]}
    _write(d, "20-b.conflist", lst("b"))
    _write(d, "10-a.conf", {"cniVersion": "0.4.0", "name": "a", "type": "bridge"})
    _write(d, "30-dup.json", lst("b", "other"))
    _write(d, "Z-upper.json", lst("upper"))            # 'Z' < 'a' in byte order
    _write(d, "40-broken.conflist", "{nope")
    _write(d, "50-badtype.conflist", lst("bt", "../bin/sh"))
    _write(d, "60-noname.conflist", {"cniVersion": "1.0.0", "plugins": [{"type": "x"}]})
    _write(d, "70-ignored.txt", lst("ignored"))
    (d / "sub").mkdir()
    _write(d / "sub", "00-nested.conflist", lst("nested"))
    loaded = cni_config.load_dir(d)
    assert [n.name for n in loaded.networks] == ["a", "b", "upper"]
    assert [Path(n.source).name for n in loaded.networks] == ["10-a.conf", "20-b.conflist", "Z-upper.json"]
    assert loaded.default.name == "a"
    assert loaded.networks[0].plugins == [{"cniVersion": "0.4.0", "name": "a", "type": "bridge"}]
    assert loaded.get("b").plugins[0]["type"] == "noop"     # duplicate: the first wins
    w = "\n".join(loaded.warnings)
    assert "30-dup.json" in w and "already defined" in w
    assert "40-broken.conflist" in w and "error parsing" in w
    assert "50-badtype.conflist" in w and "plugin type" in w
    assert "60-noname.conflist" in w and "network name" in w
    assert len(loaded.warnings) == 4
    with pytest.raises(CNIError, match="no network 'nested'"):
        loaded.get("nested")


def test_executor_network_lookup_follows_the_directory(st):
    d = Path(st.ex.conf_dir)
    d.mkdir()
    _write(d, "10-a.conflist", {"cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "noop"}]})
    first = st.ex.network("a")
    assert st.ex.network("a") is first                 # unchanged directory: not re-read
    _write(d, "10-a.conflist", {"cniVersion": "1.1.0", "name": "a", "plugins": [{"type": "noop"}, {"type": "x"}]})
    assert st.ex.network("a").cni_version == "1.1.0"
    with pytest.raises(CNIError, match="no network 'b'"):
        st.ex.network("b")


def test_python_m_entry_point(tmp_path):
    import subprocess
    import sys
    d = tmp_path / "net.d"
    d.mkdir()
    _write(d, "10-a.conflist", {"cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "noop"}]})
    proc = subprocess.run([sys.executable, "-m", "minidocker.network.cni", "--conf-dir", str(d), "ls"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.splitlines()[1].split()[:3] == ["a", "*", "1.0.0"]
    proc = subprocess.run([sys.executable, "-m", "minidocker.network.cni", "--conf-dir", str(d),
                           "validate", "--no-plugins", str(d / "10-a.conflist")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "valid" in proc.stdout


def test_reads_a_cache_file_written_by_libcni(st):
    """A file as cnitool/containerd write it (Go's field order, HTML escapes,
    base64 config): DEL takes its result, CNI_ARGS and capability args."""
    net = st.net("p1", "p2", caps={"p2": {"portMappings": True}})
    go = ('{"kind":"cniCacheV1","containerId":"c1","config":"' + base64.b64encode(net.bytes).decode()
          + '","ifName":"eth0","networkName":"testnet","netns":"' + str(st.netns) + '",'
          '"cniArgs":[["DEBUG","' + str(st.debug) + '"],["K8S_POD_NAME","a\\u0026b"]],'
          '"capabilityArgs":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]},'
          '"result":{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"aa:bb:cc:dd:ee:ff"}],'
          '"ips":[{"interface":0,"address":"10.22.0.5/16","gateway":"10.22.0.1"}],'
          '"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}}')
    path = st.cache_file(net)
    path.parent.mkdir(parents=True, mode=0o700)
    path.write_text(go)
    entry = st.ex.cached(net, RuntimeConf("c1", "", "eth0"))
    assert entry.cni_args[1] == ("K8S_POD_NAME", "a&b") and entry.config == net.bytes
    st.ex.delete(net, RuntimeConf("c1", str(st.netns), "eth0"))
    calls = st.calls()
    assert [c["tag"] for c in calls] == ["p2", "p1"]
    assert calls[0]["stdin"]["runtimeConfig"]["portMappings"][0]["hostPort"] == 8080
    assert calls[0]["stdin"]["prevResult"]["ips"][0]["address"] == "10.22.0.5/16"
    assert calls[0]["env"]["CNI_ARGS"] == f"DEBUG={st.debug};K8S_POD_NAME=a&b"
    assert not path.exists()
    # and what we write has Go's key order, compact, so byte-level diffs stay small
    st.ex.add(net, st.rt())
    text = path.read_text()
    keys = ["kind", "containerId", "config", "ifName", "networkName", "netns", "cniArgs", "result"]
    assert [text.index(f'"{k}":') for k in keys] == sorted(text.index(f'"{k}":') for k in keys)
    assert ", " not in text and ": " not in text
    st.ex.delete(net, st.rt())


def test_a_cache_that_cannot_be_written_undoes_the_add(st):
    net = st.net("p1", "p2")
    st.cache_dir.mkdir()
    (st.cache_dir / "results").write_text("a file where the directory should be")
    with pytest.raises(CNIError) as exc:
        st.ex.add(net, st.rt())
    assert exc.value.code == 5 and "cached result" in str(exc.value)
    assert st.order() == [("ADD", "p1"), ("ADD", "p2"), ("DEL", "p2"), ("DEL", "p1")]


def test_del_runs_the_cached_config_when_the_directory_s_is_broken(st, tmp_path):
    """A DEL must not fail on a config it cannot read when the ADD cached the
    one it ran: the executor's cached_config, and `cni del` using it."""
    import subprocess
    import sys
    d = tmp_path / "net.d"
    d.mkdir()
    conf = {"cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "noop", "tag": "p1"}]}
    _write(d, "10-a.conflist", conf)
    base = [sys.executable, "-m", "minidocker.network.cni", "--conf-dir", str(d), "--cache-dir",
            str(st.cache_dir), "--cni-path", str(PLUGINS)]
    rt = ["--container-id", "c1", "--args", f"DEBUG={st.debug}"]
    subprocess.run([*base, "add", "a", str(st.netns), *rt], check=True, capture_output=True, timeout=60)
    assert st.ex.cached_config("a", st.rt()).name == "a"
    _write(d, "10-a.conflist", '{"cniVersion": "1.0.0", "name": "a", "plugins": [')   # broken
    proc = subprocess.run([*base, "del", "a", str(st.netns), *rt], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "using the config cached by the ADD" in proc.stderr
    assert st.order() == [("ADD", "p1"), ("DEL", "p1")]
    assert st.ex.cached_config("a", st.rt()) is None
    # nothing cached any more: the broken config is the error, named once
    proc = subprocess.run([*base, "del", "a", str(st.netns), *rt], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr.startswith("Error: ") and len(proc.stderr.splitlines()) == 1
