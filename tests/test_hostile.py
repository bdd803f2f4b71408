"""The hostile-input corpus (issue 6): one table, one parametrised test.

Every case goes through the real command line inside one shared node and
must end with a non-zero exit, exactly one stderr line starting `Error:`
that names the bad value, and no change of state: the state directories'
files, `ps -a`, `images`, `network ls`, the node's links, iptables and nft
rules, and mounts are the same before and after. Files a case sets up
(a corrupted record, a hostile archive, a CNI file, a plugin's script) are
put back afterwards, so the node can be shared (the corpus stays fast).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest

from harness import MINIDOCKER, REFERENCE_CNI, VENV_BIN, Node
from mdtools import HOSTILE_MEMBERS, _outer, docker_save, member, oci_layout, tar_bytes

NOOP = Path(__file__).resolve().parent / "plugins" / "noop"


class Case:
    """One hostile input. argv: the minidocker arguments ({h} hostile files,
    {keep} the kept container's id); files: path template -> bytes, or a
    function of the file's current bytes; exit: the expected code; words:
    what the error line must contain (the bad value, at least)."""

    def __init__(self, id: str, what: str, argv: list[str], exit: int, words: list[str],
                 files: dict | None = None):
        self.id, self.what, self.argv, self.exit, self.words = id, what, argv, exit, words
        self.files = files or {}


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def _edit_record(**changes):
    """A function of a container.json that changes some of its fields."""
    def edit(old: bytes) -> bytes:
        record = json.loads(old)
        record.update(changes)
        return _json(record)
    return edit


def _conflist(name="hnet", ptype="noop", version="1.0.0", **extra) -> bytes:
    return _json({"cniVersion": version, "name": name, "plugins": [{"type": ptype, **extra}]})


def _noop_script(action: dict, command="ADD") -> bytes:
    """The stand-in plugin's debug file: what it does for `command`."""
    return _json({"plugins": {"noop": {command: action}}})


def _layer_archive(entries) -> bytes:
    return tar_bytes(entries)


def _ok_layer() -> bytes:
    return tar_bytes([member("bin", tarfile.DIRTYPE), member("ok", data=b"ok")])


def _pax_huge_name() -> bytes:
    """A member whose pax header carries a 1 MB name."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a" * 1_000_000)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    return raw.getvalue()


def _pax_deep_name() -> bytes:
    """A 1 MB name of 500k directory levels: never a directory per level."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("d/" * 500_000 + "f")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    return raw.getvalue()


def _pax_bomb() -> bytes:
    """A gzip'ed pax header declaring 256 MiB (of zeros, 250 KB compressed):
    refused before tarfile reads it into memory."""
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = 256 << 20
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunks = [comp.compress(info.tobuf(format=tarfile.USTAR_FORMAT))]
    zeros = bytes(1 << 20)
    chunks += [comp.compress(zeros) for _ in range(256)]
    return b"".join(chunks) + comp.flush()


def _declared_huge() -> bytes:
    """A gzip'ed tar whose member claims 64 GiB and holds a few bytes."""
    info = tarfile.TarInfo("big")
    info.size = 64 << 30
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    return gzip.compress(header + b"x" * 512)


def _gzip_damaged() -> bytes:
    """A gzip'ed layer with bytes flipped in the middle of its stream."""
    blob = bytearray(gzip.compress(tar_bytes([member("noise", data=b"0123456789abcdef" * 65536)])))
    for i in range(len(blob) // 2, len(blob) // 2 + 16):
        blob[i] ^= 0xFF
    return bytes(blob)


def _many_through_links(n: int) -> bytes:
    links = [member(f"l{i}", tarfile.SYMTYPE, linkname="/tmp") for i in range(n)]
    return tar_bytes(links + [member(f"l{i}/x", data=b"x") for i in range(n)])


def _save_link_out() -> bytes:
    """A docker save whose layer member is a symlink out of the archive."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("l/layer.tar")
        info.type, info.linkname = tarfile.SYMTYPE, "../../etc/passwd"
        tar.addfile(info)
    return raw.getvalue()


def _diffid_mismatch() -> bytes:
    good = _save([_ok_layer()])
    files = {}
    with tarfile.open(fileobj=io.BytesIO(good)) as tar:
        for m in tar.getmembers():
            files[m.name] = tar.extractfile(m).read()
    for name, data in files.items():
        if name.endswith(".json") and name != "manifest.json":
            cfg = json.loads(data)
            cfg["rootfs"]["diff_ids"] = ["sha256:" + "1" * 64]
            files[name] = _json(cfg)
    return _outer(files)


def _hostile_layer(entries) -> bytes:
    return tar_bytes([member("ok", data=b"ok")] + entries)


def _save(layers, tags=("evil:1",), config=None) -> bytes:
    return docker_save(layers, config or {"Cmd": ["sh"]}, list(tags))


def _manifest(entry) -> bytes:
    return _outer({"manifest.json": _json(entry), "c.json": b"{}", "l/layer.tar": _ok_layer()})


def _oci_index(index) -> bytes:
    return _outer({"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": _json(index)})


def _nested_index(depth: int) -> bytes:
    """OCI indexes nested deeper than allowed, each pointing at the next."""
    files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}'}
    inner = _json({"schemaVersion": 2, "manifests": []})
    for _ in range(depth):
        digest = hashlib.sha256(inner).hexdigest()
        files[f"blobs/sha256/{digest}"] = inner
        desc = {"mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": "sha256:" + digest, "size": len(inner)}
        inner = _json({"schemaVersion": 2, "manifests": [desc]})
    files["index.json"] = inner
    return _outer(files)



H = "{h}"
RUN = ["run", "--rm", "--network", "none"]
KEEP = "{keep}/container.json"

CASES: list[Case] = [
    # --- CLI values --------------------------------------------------------------
    Case("port-range", "host port above 65535", ["run", "--rm", "-p", "70000:80", "busybox", "true"], 125, ["70000"]),
    Case("port-zero", "container port 0", ["run", "--rm", "-p", "80:0", "busybox", "true"], 125, ["'80:0'"]),
    Case("port-word", "port that is a word", ["run", "--rm", "-p", "web:80", "busybox", "true"], 125, ["web:80"]),
    Case("port-proto", "protocol sctp", ["run", "--rm", "-p", "8080:80/sctp", "busybox", "true"], 125, ["sctp"]),
    Case("port-empty", "empty -p", ["run", "--rm", "-p", "", "busybox", "true"], 125, ["-p ''"]),
    Case("port-reversed", "range end below start", ["run", "--rm", "-p", "9000-8000:80", "busybox", "true"], 125, ["9000-8000"]),
    Case("port-ranges-mismatch", "ranges of different sizes", ["run", "--rm", "-p", "8000-8003:80-81", "busybox", "true"], 125, ["8000-8003"]),
    Case("port-bad-ip", "host IP that is not one", ["run", "--rm", "-p", "1.2.3.4.5:80:80", "busybox", "true"], 125, ["1.2.3.4.5"]),
    Case("port-negative", "negative port", ["run", "--rm", "-p=-1:80", "busybox", "true"], 125, ["-1:80"]),
    Case("name-short", "one-character name", [*RUN, "--name", "a", "busybox", "true"], 125, ["'a'"]),
    Case("name-slash", "name with a slash", [*RUN, "--name", "a/b", "busybox", "true"], 125, ["a/b"]),
    Case("name-newline", "name with a trailing newline", [*RUN, "--name", "ab\n", "busybox", "true"], 125, ["ab\\n"]),
    Case("name-space", "name with a space", [*RUN, "--name", "a b", "busybox", "true"], 125, ["a b"]),
    Case("name-taken", "name of an existing container", [*RUN, "--name", "keep", "busybox", "true"], 125, ["keep"]),
    Case("env-empty-key", "-e =value", [*RUN, "-e", "=x", "busybox", "true"], 125, ["'=x'"]),
    Case("env-space-key", "-e key with a space", [*RUN, "-e", "A B=1", "busybox", "true"], 125, ["A B=1"]),
    Case("env-newline-key", "-e key ending in a newline", [*RUN, "-e", "A\n", "busybox", "true"], 125, ["A\\n"]),
    Case("env-file-missing", "--env-file that does not exist", [*RUN, "--env-file", "{h}/nope", "busybox", "true"], 125, ["nope"]),
    Case("env-file-dir", "--env-file that is a directory", [*RUN, "--env-file", "{h}", "busybox", "true"], 125, ["Is a directory"]),
    Case("env-file-binary", "--env-file that is not UTF-8", [*RUN, "--env-file", "{h}/env", "busybox", "true"], 125,
         ["env", "UTF-8"], files={"{h}/env": b"\xff\xfe=\x80\n"}),
    Case("env-file-bad-line", "--env-file with a bad line", [*RUN, "--env-file", "{h}/env", "busybox", "true"], 125,
         ["'BAD KEY=1'"], files={"{h}/env": b"OK=1\nBAD KEY=1\n"}),
    Case("workdir-relative", "relative -w", [*RUN, "-w", "rel/dir", "busybox", "true"], 125, ["rel/dir"]),
    Case("hostname-long", "64-character hostname", [*RUN, "--hostname", "h" * 64, "busybox", "true"], 125, ["h" * 64]),
    Case("hostname-chars", "hostname with '_' and '!'", [*RUN, "--hostname", "bad_host!", "busybox", "true"], 125, ["bad_host!"]),
    Case("runtime-unknown", "--runtime crun", [*RUN, "--runtime", "crun", "busybox", "true"], 125, ["crun"]),
    Case("network-unknown", "--network that does not exist", ["run", "--rm", "--network", "nosuchnet", "busybox", "true"], 125, ["nosuchnet"]),
    Case("network-container", "--network container:<missing>", ["run", "--rm", "--network", "container:ghost", "busybox", "true"], 125, ["ghost"]),
    Case("ip-bad", "--ip 999.1.1.1", ["run", "--rm", "--network", "net1", "--ip", "999.1.1.1", "busybox", "true"], 125, ["999.1.1.1"]),
    Case("ip-outside", "--ip outside the network's subnet", ["run", "--rm", "--network", "net1", "--ip", "10.99.0.5", "busybox", "true"], 125, ["10.99.0.5"]),
    Case("ip6-bad", "--ip6 garbage", ["run", "--rm", "--network", "net1", "--ip6", "fd00::zz", "busybox", "true"], 125, ["fd00::zz"]),
    Case("dns-bad", "--dns that is not an address", ["run", "--rm", "--dns", "dns.example", "busybox", "true"], 125, ["dns.example"]),
    Case("add-host-noip", "--add-host without an address", ["run", "--rm", "--add-host", "db", "busybox", "true"], 125, ["'db'"]),
    Case("add-host-badip", "--add-host with a bad address", ["run", "--rm", "--add-host", "db:300.0.0.1", "busybox", "true"], 125, ["300.0.0.1"]),
    Case("mac-bad", "--mac-address garbage", ["run", "--rm", "--mac-address", "zz:zz", "busybox", "true"], 125, ["zz:zz"]),
    Case("mac-multicast", "--mac-address multicast", ["run", "--rm", "--mac-address", "01:00:5e:00:00:01", "busybox", "true"], 125, ["01:00:5e:00:00:01"]),
    Case("alias-default", "--network-alias on the default bridge", ["run", "--rm", "--network-alias", "x", "busybox", "true"], 125, ["--network-alias"]),
    Case("image-upper", "image reference in upper case", [*RUN, "BusyBox", "true"], 125, ["BusyBox"]),
    Case("image-unknown", "image not in the store", [*RUN, "nosuchimage:1", "true"], 125, ["nosuchimage:1"]),
    Case("image-dotdot", "image reference with ..", [*RUN, "../../etc", "true"], 125, ["../../etc"]),
    Case("stop-negative", "stop -t -2 (-1 waits for ever, as Docker)", ["stop", "-t", "-2", "keep"], 2, ["-2"]),
    Case("rm-unknown", "rm of a missing container", ["rm", "ghost"], 1, ["ghost"]),
    Case("rm-dotdot", "rm of a path-like id", ["rm", "../images"], 1, ["../images"]),
    Case("inspect-unknown", "inspect a missing container", ["inspect", "ghost"], 1, ["ghost"]),
    Case("logs-unknown", "logs of a missing container", ["logs", "ghost"], 1, ["ghost"]),
    Case("exec-stopped", "exec in a stopped container", ["exec", "keep", "true"], 1, ["keep"]),
    Case("start-unknown", "start a missing container", ["start", "ghost"], 1, ["ghost"]),
    Case("port-unpublished", "port not published", ["port", "keep", "99999"], 1, ["99999"]),
    Case("rmi-unknown", "rmi a missing image", ["rmi", "ghost:1"], 1, ["ghost:1"]),
    Case("rmi-in-use", "rmi of the kept container's image", ["rmi", "busybox"], 1, ["busybox"]),
    Case("import-missing", "import a missing file", ["import", "{h}/none.tar", "x:1"], 1, ["none.tar"]),
    Case("import-bad-ref", "import under a bad reference", ["import", "{h}/ok.tar", "Bad:Ref"], 1, ["Bad:Ref"],
         files={"{h}/ok.tar": _ok_layer()}),
    Case("load-missing", "load a missing file", ["load", "-i", "{h}/none.tar"], 1, ["none.tar"]),
    # --- network options -----------------------------------------------------------
    Case("net-prefix", "subnet /33", ["network", "create", "--subnet", "10.0.0.0/33", "n1"], 1, ["10.0.0.0/33"]),
    Case("net-subnet-word", "subnet that is a word", ["network", "create", "--subnet", "lan", "n1"], 1, ["'lan'"]),
    Case("net-host-bits", "subnet with host bits set", ["network", "create", "--subnet", "10.5.0.1/24", "n1"], 1, ["10.5.0.1/24"]),
    Case("net-loopback", "loopback subnet", ["network", "create", "--subnet", "127.0.0.0/8", "n1"], 1, ["127.0.0.0/8"]),
    Case("net-multicast", "multicast subnet", ["network", "create", "--subnet", "224.1.0.0/24", "n1"], 1, ["224.1.0.0/24"]),
    Case("net-everything", "subnet 0.0.0.0/0", ["network", "create", "--subnet", "0.0.0.0/0", "n1"], 1, ["0.0.0.0/0"]),
    Case("net-gw-outside", "gateway outside the subnet", ["network", "create", "--subnet", "10.5.0.0/24", "--gateway", "10.6.0.1", "n1"], 1, ["10.6.0.1"]),
    Case("net-gw-alone", "gateway without subnet", ["network", "create", "--gateway", "10.6.0.1", "n1"], 1, ["--gateway"]),
    Case("net-gw-broadcast", "gateway = broadcast", ["network", "create", "--subnet", "10.5.0.0/24", "--gateway", "10.5.0.255", "n1"], 1, ["10.5.0.255"]),
    Case("net-range-outside", "ip-range outside the subnet", ["network", "create", "--subnet", "10.5.0.0/24", "--ip-range", "10.9.0.0/28", "n1"], 1, ["10.9.0.0/28"]),
    Case("net-overlap", "subnet overlapping net1", ["network", "create", "--subnet", "10.77.0.0/25", "n1"], 1, ["10.77.0.0/25"]),
    Case("net-v6-prefix", "IPv6 prefix /200", ["network", "create", "--ipv6", "--subnet", "fd00::/200", "n1"], 1, ["fd00::/200"]),
    Case("net-driver", "driver overlay", ["network", "create", "-d", "overlay", "n1"], 1, ["overlay"]),
    Case("net-opt-nokv", "-o without =", ["network", "create", "-o", "nokv", "n1"], 1, ["nokv"]),
    Case("net-opt-unknown", "unknown -o key", ["network", "create", "-o", "x.y=1", "n1"], 1, ["x.y"]),
    Case("net-mtu-word", "mtu abc", ["network", "create", "-o", "com.docker.network.driver.mtu=abc", "n1"], 1, ["abc"]),
    Case("net-mtu-huge", "mtu 99999999", ["network", "create", "-o", "com.docker.network.driver.mtu=99999999", "n1"], 1, ["99999999"]),
    Case("net-bridge-long", "bridge name of 16 characters", ["network", "create", "-o", "com.docker.network.bridge.name=abcdefghijklmnop", "n1"], 1, ["abcdefghijklmnop"]),
    Case("net-bridge-slash", "bridge name with a slash", ["network", "create", "-o", "com.docker.network.bridge.name=a/b", "n1"], 1, ["a/b"]),
    Case("net-icc", "enable_icc maybe", ["network", "create", "-o", "com.docker.network.bridge.enable_icc=maybe", "n1"], 1, ["maybe"]),
    Case("net-name-space", "network name with a space", ["network", "create", "bad name"], 1, ["bad name"]),
    Case("net-name-newline", "network name with a newline", ["network", "create", "n1\n"], 1, ["n1\\n"]),
    Case("net-name-long", "network name of 300 characters", ["network", "create", "n" * 300], 1, ["nnnnnnnnnn"]),
    Case("net-name-reserved", "network name bridge", ["network", "create", "bridge"], 1, ["bridge"]),
    Case("net-name-taken", "network name net1 again", ["network", "create", "net1"], 1, ["net1"]),
    Case("net-name-cni", "network name of a CNI file", ["network", "create", "hnet"], 1, ["hnet"]),
    Case("net-rm-builtin", "network rm bridge", ["network", "rm", "bridge"], 1, ["bridge"]),
    Case("net-rm-unknown", "network rm of a missing one", ["network", "rm", "ghostnet"], 1, ["ghostnet"]),
    Case("net-rm-cni", "network rm of a CNI file network", ["network", "rm", "hnet"], 1, ["hnet"]),
    Case("net-connect-unknown", "connect to a missing network", ["network", "connect", "ghostnet", "keep"], 1, ["ghostnet"]),
    Case("net-connect-ghost", "connect a missing container", ["network", "connect", "net1", "ghost"], 1, ["ghost"]),
    Case("net-inspect-unknown", "inspect a missing network", ["network", "inspect", "ghostnet"], 1, ["ghostnet"]),
    # --- CNI configuration files -----------------------------------------------------
    Case("cni-not-json", "config that is not JSON", ["cni", "validate", "--no-plugins", "{h}/x.conflist"], 1,
         ["x.conflist", "parsing"], files={"{h}/x.conflist": b"{not json"}),
    Case("cni-array", "config that is a JSON array", ["cni", "validate", "--no-plugins", "{h}/x.conflist"], 1,
         ["x.conflist", "not a JSON object"], files={"{h}/x.conflist": b"[]"}),
    Case("cni-binary", "config that is not UTF-8", ["cni", "validate", "--no-plugins", "{h}/x.conflist"], 1,
         ["x.conflist"], files={"{h}/x.conflist": b"\xff\xfe\x00{"}),
    Case("cni-nesting", "config nested 100000 deep", ["cni", "validate", "--no-plugins", "{h}/x.conflist"], 1,
         ["x.conflist"], files={"{h}/x.conflist": b"[" * 100_000}),
    Case("cni-no-name", "config without a name", ["cni", "validate", "--no-plugins", "{h}/x.conflist"], 1,
         ["x.conflist", "name"], files={"{h}/x.conflist": _json({"cniVersion": "1.0.0", "plugins": [{"type": "noop"}]})}),
    Case("cni-bad-name", "network name with a space", ["cni", "validate", "--no-plugins", "{h}/x.conflist"], 1,
         ["a b"], files={"{h}/x.conflist": _conflist(name="a b")}),
    Case("cni-no-plugins", "empty plugins", ["cni", "validate", "--no-plugins", "{h}/x.conflist"], 1,
         ["plugins"], files={"{h}/x.conflist": _json({"cniVersion": "1.0.0", "name": "x", "plugins": []})}),
    Case("cni-plugin-list", "a plugin that is a list", ["cni", "validate", "--no-plugins", "{h}/x.conflist"], 1,
         ["plugins[0]"], files={"{h}/x.conflist": _json({"cniVersion": "1.0.0", "name": "x", "plugins": [[]]})}),
    Case("cni-type-path", "plugin type with a /", ["cni", "validate", "--no-plugins", "{h}/x.conflist"], 1,
         ["../../bin/sh"], files={"{h}/x.conflist": _conflist(ptype="../../bin/sh")}),
    Case("cni-type-abs", "plugin type that is an absolute path", ["cni", "validate", "{h}/x.conflist"], 1,
         ["/bin/sh"], files={"{h}/x.conflist": _conflist(ptype="/bin/sh")}),
    Case("cni-type-number", "plugin type that is a number", ["cni", "validate", "--no-plugins", "{h}/x.conflist"], 1,
         ["type"], files={"{h}/x.conflist": _conflist(ptype=5)}),
    Case("cni-version-word", "cniVersion banana", ["cni", "validate", "--no-plugins", "{h}/x.conflist"], 1,
         ["banana"], files={"{h}/x.conflist": _conflist(version="banana")}),
    Case("cni-version-future", "cniVersion 9.9.9", ["cni", "validate", "--no-plugins", "{h}/x.conflist"], 1,
         ["9.9.9"], files={"{h}/x.conflist": _conflist(version="9.9.9")}),
    Case("cni-disable-check", "disableCheck maybe", ["cni", "validate", "--no-plugins", "{h}/x.conflist"], 1,
         ["maybe"], files={"{h}/x.conflist": _json({"cniVersion": "1.0.0", "name": "x", "disableCheck": "maybe",
                                                    "plugins": [{"type": "noop"}]})}),
    Case("cni-versions-type", "cniVersions not a list", ["cni", "validate", "--no-plugins", "{h}/x.conflist"], 1,
         ["cniVersions"], files={"{h}/x.conflist": _json({"cniVersion": "1.0.0", "name": "x", "cniVersions": "1.0.0",
                                                          "plugins": [{"type": "noop"}]})}),
    Case("cni-missing-plugin", "plugin not on CNI_PATH", ["cni", "validate", "{h}/x.conflist"], 1,
         ["nosuchplugin"], files={"{h}/x.conflist": _conflist(ptype="nosuchplugin")}),
    Case("cni-run-skipped", "run on a network whose file is refused", ["run", "--rm", "--network", "evil", "busybox", "true"], 125,
         ["evil"], files={"{conf}/20-evil.conflist": _conflist(name="evil", ptype="../evil")}),
    Case("cni-args-bad", "cni add with bad CNI_ARGS", ["cni", "add", "hnet", "{h}/netns", "--args", "novalue"], 1,
         ["novalue"], files={"{h}/netns": b""}),
    Case("cni-cap-args", "cni add with CAP_ARGS not an object", ["cni", "add", "hnet", "{h}/netns", "--cap-args", "[1]"], 1,
         ["[1]"], files={"{h}/netns": b""}),
    Case("cni-ifname", "cni add with a bad interface name", ["cni", "add", "hnet", "{h}/netns", "--ifname", "a/b"], 1,
         ["a/b"], files={"{h}/netns": b""}),
    Case("cni-container-id", "cni add with a bad container id", ["cni", "add", "hnet", "{h}/netns", "--container-id", "../x"], 1,
         ["../x"], files={"{h}/netns": b""}),
    # --- plugin outputs (the stand-in plugin, scripted) ------------------------------
    Case("plugin-garbage", "ADD prints garbage", ["run", "--rm", "--network", "hnet", "busybox", "true"], 125,
         ["noop", "invalid result"], files={"{bin}/noop.debug": _noop_script({"stdout": "garbage!"})}),
    Case("plugin-array", "ADD prints a JSON array", ["run", "--rm", "--network", "hnet", "busybox", "true"], 125,
         ["noop", "invalid result"], files={"{bin}/noop.debug": _noop_script({"stdout": "[1, 2]"})}),
    Case("plugin-empty", "ADD prints nothing", ["run", "--rm", "--network", "hnet", "busybox", "true"], 125,
         ["noop"], files={"{bin}/noop.debug": _noop_script({"stdout": ""})}),
    Case("plugin-error", "ADD answers a CNI error", ["run", "--rm", "--network", "hnet", "busybox", "true"], 125,
         ["noop", "no more addresses"], files={"{bin}/noop.debug": _noop_script({"error": {"code": 11, "msg": "no more addresses"}})}),
    Case("plugin-error-lines", "ADD error whose msg spans lines", ["run", "--rm", "--network", "hnet", "busybox", "true"], 125,
         ["noop", "first second"], files={"{bin}/noop.debug": _noop_script({"error": {"code": 7, "msg": "first\nsecond\n\nthird"}})}),
    Case("plugin-bad-error", "ADD fails with a non-JSON stdout", ["run", "--rm", "--network", "hnet", "busybox", "true"], 125,
         ["noop", "oops"], files={"{bin}/noop.debug": _noop_script({"stdout": "oops", "exit": 1})}),
    Case("plugin-stderr", "ADD fails with only stderr", ["run", "--rm", "--network", "hnet", "busybox", "true"], 125,
         ["noop", "went wrong"], files={"{bin}/noop.debug": _noop_script({"stderr": "it\nwent wrong\n", "exit": 3})}),
    Case("plugin-crash", "ADD killed by SIGSEGV", ["run", "--rm", "--network", "hnet", "busybox", "true"], 125,
         ["noop", "SIGSEGV"], files={"{bin}/noop.debug": _noop_script({"signal": "SEGV"})}),
    Case("plugin-ips-type", "ADD result whose ips is a string", ["run", "--rm", "--network", "hnet", "busybox", "true"], 125,
         ["noop"], files={"{bin}/noop.debug": _noop_script({"result": {"cniVersion": "1.0.0", "ips": "10.0.0.2"}})}),
    Case("plugin-ip-bad", "ADD result with a bad address", ["run", "--rm", "--network", "hnet", "busybox", "true"], 125,
         ["noop", "10.0.0.300/24"], files={"{bin}/noop.debug": _noop_script(
             {"result": {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.300/24"}]}})}),
    Case("plugin-version-word", "ADD result with cniVersion banana", ["run", "--rm", "--network", "hnet", "busybox", "true"], 125,
         ["noop", "banana"], files={"{bin}/noop.debug": _noop_script({"result": {"cniVersion": "banana"}})}),
    Case("plugin-huge", "ADD prints 8 MB of garbage", ["run", "--rm", "--network", "hnet", "busybox", "true"], 125,
         ["noop", "invalid result"], files={"{bin}/noop.debug": _noop_script({"stdout": "x" * (8 << 20)})}),
    Case("plugin-slow", "ADD sleeps past the timeout", ["cni", "--timeout", "0.5", "add", "hnet", "{h}/netns"], 1,
         ["noop", "timed out"], files={"{h}/netns": b"", "{bin}/noop.debug": _noop_script({"sleep": 5})}),
    Case("plugin-version-garbage", "VERSION answers garbage", ["cni", "validate", "{conf}/10-hnet.conflist"], 1,
         ["noop", "VERSION"], files={"{bin}/noop.debug": _noop_script({"stdout": "{\"what\": 1}"}, "VERSION")}),
    # --- image archives ------------------------------------------------------------------
    *[Case(f"import-{name}", f"import: {name} member", ["import", "{h}/evil.tar", "evil:1"], 1, ["refusing"],
           files={"{h}/evil.tar": _hostile_layer(entries)}) for name, entries in HOSTILE_MEMBERS.items()],
    Case("import-many-refused", "import: 30 members written through links", ["import", "{h}/evil.tar", "evil:1"], 1,
         ["refusing 30 member(s)", "'l0/x'", "'l19/x'", "and 10 more"], files={"{h}/evil.tar": _many_through_links(30)}),
    Case("import-pax-name", "import: 1 MB name in a pax header", ["import", "{h}/evil.tar", "evil:1"], 1, ["refusing", "aaaa"],
         files={"{h}/evil.tar": _pax_huge_name()}),
    Case("import-pax-deep", "import: 500k-level name in a pax header", ["import", "{h}/evil.tar", "evil:1"], 1, ["refusing", "d/d/"],
         files={"{h}/evil.tar": _pax_deep_name()}),
    Case("import-pax-bomb", "import: gzip'ed pax header of 256 MiB", ["import", "{h}/evil.tgz", "evil:1"], 1,
         ["refusing", "extended header"], files={"{h}/evil.tgz": _pax_bomb()}),
    Case("load-pax-bomb", "load: gzip'ed pax header of 256 MiB", ["load", "-i", "{h}/evil.tgz"], 1,
         ["refusing", "extended header"], files={"{h}/evil.tgz": _pax_bomb()}),
    Case("import-declared-huge", "import: member declaring 64 GiB", ["import", "{h}/evil.tgz", "evil:1"], 1, ["evil.tgz"],
         files={"{h}/evil.tgz": _declared_huge()}),
    Case("import-not-tar", "import: not an archive", ["import", "{h}/evil.tar", "evil:1"], 1, ["evil.tar", "not a tar"],
         files={"{h}/evil.tar": b"hello\n" * 100}),
    Case("import-empty", "import: empty file", ["import", "{h}/evil.tar", "evil:1"], 1, ["evil.tar"],
         files={"{h}/evil.tar": b""}),
    Case("import-truncated-gz", "import: truncated gzip", ["import", "{h}/evil.tgz", "evil:1"], 1, ["evil.tgz"],
         files={"{h}/evil.tgz": gzip.compress(_ok_layer())[:60]}),
    Case("import-gz-crc", "import: gzip with a damaged stream", ["import", "{h}/evil.tgz", "evil:1"], 1, ["evil.tgz"],
         files={"{h}/evil.tgz": _gzip_damaged()}),
    Case("import-dir", "import: a directory", ["import", "{h}", "evil:1"], 1, ["cannot import"]),
    Case("load-layer-dotdot", "load: layer with ..", ["load", "-i", "{h}/evil.tar"], 1, ["refusing", "../evil"],
         files={"{h}/evil.tar": _save([_ok_layer(), _hostile_layer(HOSTILE_MEMBERS["dotdot"])])}),
    Case("load-layer-proc-root", "load: layer writing through /proc/self/root", ["load", "-i", "{h}/evil.tar"], 1,
         ["refusing", "root/tmp/minidocker-hostile", "symlink"],
         files={"{h}/evil.tar": _save([_hostile_layer(HOSTILE_MEMBERS["through-proc-root"])])}),
    Case("load-oci-through-link", "load: OCI layer writing through an absolute link", ["load", "-i", "{h}/evil.tar"], 1,
         ["refusing", "etc2/minidocker-hostile"],
         files={"{h}/evil.tar": oci_layout([_hostile_layer(HOSTILE_MEMBERS["through-abs-symlink"])], {"Cmd": ["sh"]}, "evil:2")}),
    Case("load-link-out", "load: docker save layer member linking out of the archive", ["load", "-i", "{h}/evil.tar"], 1,
         ["refusing archive member", "../../etc/passwd"], files={"{h}/evil.tar": _save_link_out()}),
    Case("load-diffid-mismatch", "load: layer whose diffID is not the config's", ["load", "-i", "{h}/evil.tar"], 1,
         ["diffID"], files={"{h}/evil.tar": _diffid_mismatch()}),
    Case("load-manifest-dict", "load: manifest.json an object", ["load", "-i", "{h}/evil.tar"], 1, ["manifest.json"],
         files={"{h}/evil.tar": _outer({"manifest.json": b"{}"})}),
    Case("load-manifest-types", "load: manifest entry of wrong types", ["load", "-i", "{h}/evil.tar"], 1,
         ['"Config": 5', "Layers"], files={"{h}/evil.tar": _manifest([{"Config": 5, "Layers": "l/layer.tar"}])}),
    Case("load-config-dotdot", "load: Config path with ..", ["load", "-i", "{h}/evil.tar"], 1, ["../c.json"],
         files={"{h}/evil.tar": _manifest([{"Config": "../c.json", "RepoTags": [], "Layers": []}])}),
    Case("load-layer-abs", "load: layer path absolute", ["load", "-i", "{h}/evil.tar"], 1, ["/etc/passwd"],
         files={"{h}/evil.tar": _manifest([{"Config": "c.json", "RepoTags": [], "Layers": ["/etc/passwd"]}])}),
    Case("load-bad-tag", "load: RepoTags with a bad reference", ["load", "-i", "{h}/evil.tar"], 1, ["UPPER:Case"],
         files={"{h}/evil.tar": _save([_ok_layer()], tags=["UPPER:Case"])}),
    Case("load-config-not-json", "load: config blob not JSON", ["load", "-i", "{h}/evil.tar"], 1, ["evil.tar"],
         files={"{h}/evil.tar": _outer({"manifest.json": _json([{"Config": "c.json", "Layers": []}]), "c.json": b"{no"})}),
    Case("load-oci-digest", "load: OCI descriptor with a bad digest", ["load", "-i", "{h}/evil.tar"], 1, ["md5:abc"],
         files={"{h}/evil.tar": _oci_index({"schemaVersion": 2, "manifests": [{"mediaType": "x", "digest": "md5:abc"}]})}),
    Case("load-oci-missing-blob", "load: OCI blob missing", ["load", "-i", "{h}/evil.tar"], 1, ["blobs/sha256/" + "0" * 64],
         files={"{h}/evil.tar": _oci_index({"schemaVersion": 2, "manifests": [{"mediaType": "x", "digest": "sha256:" + "0" * 64}]})}),
    Case("load-oci-nesting", "load: OCI indexes nested 10 deep", ["load", "-i", "{h}/evil.tar"], 1, ["nesting"],
         files={"{h}/evil.tar": _nested_index(10)}),
    Case("load-neither", "load: neither format", ["load", "-i", "{h}/evil.tar"], 1, ["neither"],
         files={"{h}/evil.tar": _outer({"hello": b"hi"})}),
    # --- corrupted state files ------------------------------------------------------------
    Case("state-record-garbage", "container.json not JSON", ["ps", "-a"], 1, ["container.json", "not JSON"],
         files={KEEP: b'{"Id": "'}),
    Case("state-record-empty", "container.json empty", ["rm", "keep"], 1, ["container.json", "not JSON"],
         files={KEEP: b""}),
    Case("state-record-array", "container.json a JSON array", ["inspect", "keep"], 1, ["container.json", "not a JSON object"],
         files={KEEP: b"[1]"}),
    Case("state-record-types", "container.json State a list", ["rm", "-f", "keep"], 1, ["container.json", "State"],
         files={KEEP: _edit_record(State=[])}),
    Case("state-record-name", "container.json Name a number", ["ps", "-a"], 1, ["container.json", "Name"],
         files={KEEP: _edit_record(Name=5)}),
    Case("state-record-id", "container.json Id leaving the state dir", ["rm", "-f", "keep"], 1, ["container.json", "../../images"],
         files={KEEP: _edit_record(Id="../../images")}),
    Case("state-run-corrupt", "run beside a corrupt record", [*RUN, "busybox", "true"], 1, ["container.json"],
         files={KEEP: b"\xff\xfe"}),
    Case("state-repos-garbage", "repositories.json garbage", ["images"], 1, ["repositories.json"],
         files={"{root}/images/repositories.json": b"garbage"}),
    Case("state-repos-list", "repositories.json a list", [*RUN, "busybox", "true"], 1, ["repositories.json"],
         files={"{root}/images/repositories.json": b"[1, 2]"}),
    Case("state-repos-values", "repositories.json ids of wrong type", ["rmi", "busybox"], 1, ["repositories.json"],
         files={"{root}/images/repositories.json": b'{"busybox:latest": 5}'}),
    Case("state-image-json", "image.json garbage", ["images"], 1, ["image.json"],
         files={"{image}/image.json": b"{"}),
    Case("state-network-garbage", "network.json garbage", ["network", "ls"], 1, ["network.json"],
         files={"{net1}/network.json": b"{{{"}),
    Case("state-cni-cache", "CNI cache entry garbage", ["cni", "check", "hnet", "{h}/netns"], 1, ["hnet"],
         files={"{h}/netns": b"", "{cache}/results/hnet-{cnitool}-eth0": b"\x00garbage"}),
]


# --- the shared node ----------------------------------------------------------------

class Env:
    """The shared node and what the cases refer to."""

    def __init__(self, node: Node):
        self.node = node
        self.h = node.root / "hostile"          # outside every state directory
        self.bin = node.root / "bin"            # the stand-in plugin, scripted by bin/noop.debug
        self.h.mkdir()
        self.bin.mkdir()
        shutil.copy(NOOP, self.bin / "noop")
        self.env = node.env(CNI_PATH=f"{self.bin}:{VENV_BIN}:{REFERENCE_CNI}")
        (node.cni_conf / "10-hnet.conflist").write_bytes(_conflist())
        self.md(*RUN, "busybox", "true")
        self.md("run", "--rm", "--network", "hnet", "busybox", "true")  # makes the lazy directories
        self.md("run", "--network", "none", "--name", "keep", "busybox", "true")
        self.keep = json.loads(self.md("inspect", "keep").stdout)[0]["Id"]
        self.md("network", "create", "--subnet", "10.77.0.0/24", "net1")
        net1 = json.loads(self.md("network", "inspect", "--no-debug", "net1").stdout)[0]["Id"]
        image = self.md("images", "-q").stdout.split()[0]
        from minidocker.cli_cni import cnitool_container_id
        self.subst = {
            "{h}": str(self.h), "{bin}": str(self.bin), "{conf}": str(node.cni_conf),
            "{root}": str(node.state_root), "{cache}": str(node.cni_cache),
            "{keep}": str(node.state_root / "containers" / self.keep),
            "{net1}": str(node.state_root / "networks" / net1),
            "{image}": str(next((node.state_root / "images").glob(image + "*"))),
            "{cnitool}": cnitool_container_id(str(self.h / "netns")),
        }

    def md(self, *args, check=True, timeout=60):
        return self.node.run([MINIDOCKER, *args], env=self.env, check=check, timeout=timeout)

    def fill(self, text: str) -> str:
        for key, value in self.subst.items():
            text = text.replace(key, value)
        return text

    def snapshot(self) -> dict:
        """All the state a failed command must leave as it was; the commands
        run at once (they only read)."""
        md = [MINIDOCKER]
        argvs = {"ps": md + ["ps", "-a", "--format", "json"], "images": md + ["images"],
                 "networks": md + ["network", "ls", "--format", "json"],
                 "links": ["ip", "-j", "link", "show"], "iptables": ["iptables-save"],
                 "ip6tables": ["ip6tables-save"], "nft": ["nft", "list", "ruleset"]}
        procs = {k: subprocess.Popen(self.node.cmd(a), env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True) for k, a in argvs.items()}
        out = {}
        for key, proc in procs.items():
            text, _ = proc.communicate(timeout=60)
            out[key] = _stable(key, text)
        out["files"] = self._files()
        out["mounts"] = self.node.mounts()
        return out

    def _files(self) -> list:
        rows = []
        for base in (self.node.state_root, self.node.run_root, self.node.cni_cache):
            for dirpath, dirnames, filenames in os.walk(base):
                for name in sorted(dirnames + filenames):
                    path = os.path.join(dirpath, name)
                    rel = os.path.relpath(path, self.node.root)
                    if "locks" in rel.split("/") or name.endswith(".lock"):
                        continue  # taking a lock is not a change of state
                    if rel.endswith("lib/events.log"):
                        continue  # the journal records attempts too, as Docker's events do
                    st = os.lstat(path)
                    digest = ""
                    if os.path.isfile(path) and not os.path.islink(path) and st.st_size < (1 << 20) \
                            and "/rootfs/" not in path and "/upper/" not in path:
                        with open(path, "rb") as fh:
                            digest = hashlib.sha1(fh.read()).hexdigest()[:12]
                    rows.append((rel, oct(st.st_mode), st.st_size, digest))
        return sorted(rows)


def _stable(key: str, text: str) -> str:
    """Output without what changes by itself (ages, packet counters)."""
    if key == "ps":
        rows = []
        for line in text.splitlines():
            try:
                row = json.loads(line)
                rows.append({k: row[k] for k in ("ID", "Names", "State", "Image", "ExitCode")})
            except (ValueError, KeyError, TypeError):
                rows.append(line)
        return json.dumps(rows)
    if key == "images":
        return "\n".join(" ".join(l.split()[:3]) for l in text.splitlines())
    if key in ("iptables", "ip6tables"):
        return "\n".join(re.sub(r"\[\d+:\d+\]", "", l) for l in text.splitlines() if not l.startswith("#"))
    if key == "links":
        try:
            return json.dumps(sorted((l["ifname"], l.get("operstate")) for l in json.loads(text)))
        except ValueError:
            return text
    return text


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One node for the whole corpus: cases leave no state (that is what
    they check), so nothing needs making twice."""
    node = Node.create(tmp_path_factory.mktemp("hostile") / "node")
    try:
        e = Env(node)
        e.baseline = e.snapshot()
        yield e
        node.run([MINIDOCKER, "rm", "-f", "keep"], env=e.env, check=False)
        node.run([MINIDOCKER, "network", "rm", "net1"], env=e.env, check=False)
        left = node.leftovers()
    finally:
        node.destroy()
    assert not left, f"the corpus left behind in its node: {left}"


def test_corpus_is_large_and_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    assert len(CASES) >= 80, len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(env, case):
    saved = {}
    for template, content in case.files.items():
        path = Path(env.fill(template))
        saved[path] = path.read_bytes() if path.exists() else None
        data = content(saved[path]) if callable(content) else content
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    try:
        before = env.snapshot() if case.files else env.baseline
        proc = env.md(*[env.fill(a) for a in case.argv], check=False, timeout=60)
        after = env.snapshot()
    finally:
        for path, old in saved.items():
            if old is None:
                path.unlink()
            else:
                path.write_bytes(old)
    lines = proc.stderr.splitlines()
    assert proc.returncode == case.exit, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr[-2000:]
    assert "internal error" not in lines[0] and "Traceback" not in proc.stderr, lines[0]
    for word in case.words:
        assert env.fill(word) in lines[0], (word, lines[0][:2000])
    for key in before:
        assert after[key] == before[key], f"{case.id} changed {key}"
    if not case.files:
        assert after == env.baseline
