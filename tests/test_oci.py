"""config.json: Docker's defaults, and validity against the OCI runtime-spec
JSON schema, as Debian's golang-github-opencontainers-specs-dev ships it."""
from __future__ import annotations

import json

import pytest

from minidocker.runtime import oci
from mdtools import SCHEMA_DIR, oci_validator


@pytest.fixture(scope="module")
def validator():
    assert (SCHEMA_DIR / "config-schema.json").exists(), f"OCI schema not found in {SCHEMA_DIR}"
    return oci_validator()


def spec(**kw) -> dict:
    args = dict(args=["sh"], env=["PATH=/bin"], cwd="/", user=oci.User(), hostname="h",
                rootfs="/x/rootfs", netns_path="/run/minidocker/netns/abc",
                files={"/etc/hosts": "/x/hosts"})
    args.update(kw)
    return oci.build(**args).to_dict()


def test_builder_defaults():
    s = spec()
    caps = s["process"]["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"] == oci.DEFAULT_CAPS
    assert len(oci.DEFAULT_CAPS) == 14 and "CAP_SYS_ADMIN" not in oci.DEFAULT_CAPS
    assert s["process"]["noNewPrivileges"] is False   # Docker's default
    assert "/proc/kcore" in s["linux"]["maskedPaths"] and "/proc/sys" in s["linux"]["readonlyPaths"]
    kinds = {ns["type"]: ns.get("path") for ns in s["linux"]["namespaces"]}
    assert kinds == {"pid": None, "ipc": None, "uts": None, "mount": None,
                     "network": "/run/minidocker/netns/abc"}
    dests = [m["destination"] for m in s["mounts"]]
    assert dests[:6] == ["/proc", "/dev", "/dev/pts", "/sys", "/dev/mqueue", "/dev/shm"]
    assert "/etc/hosts" in dests and "ro" in s["mounts"][3]["options"]
    assert ": null" not in json.dumps(s)


def test_host_mode_shares_the_network_namespace():
    kinds = [ns["type"] for ns in spec(netns_path=None)["linux"]["namespaces"]]
    assert "network" not in kinds and "pid" in kinds


def test_built_spec_validates(validator):
    for s in (spec(), spec(netns_path=None, user=oci.User(1000, 1000, [5]))):
        errors = sorted(validator.iter_errors(s), key=str)
        assert not errors, errors[0]


def test_validator_bites(validator):
    bad = spec()
    bad["process"]["user"]["uid"] = "root"
    bad["linux"]["namespaces"].append({"type": "nosuchns"})
    assert len(list(validator.iter_errors(bad))) >= 2


@pytest.mark.parametrize("runtime", ["builtin", "runc"])
@pytest.mark.parametrize("network", ["none", "host"])
def test_written_config_validates(node, validator, runtime, network):
    node.md("run", "--name", "cfg", "--network", network, "--runtime", runtime, "-e", "A=1",
            "-w", "/tmp", "busybox", "true")
    cid = json.loads(node.md("inspect", "cfg").stdout)[0]["Id"]
    written = json.loads((node.state_root / "containers" / cid / "config.json").read_text())
    errors = list(validator.iter_errors(written))
    assert not errors, errors[0]
    assert written["process"]["args"] == ["true"] and "A=1" in written["process"]["env"]
    assert written["process"]["cwd"] == "/tmp"
    node.md("rm", "cfg")


def test_resolve_user(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\napp:x:1001:\nextra:x:2000:app\n")
    root = str(tmp_path)
    assert oci.resolve_user(root, "") == oci.User(0, 0)
    assert oci.resolve_user(root, "app") == oci.User(1000, 1001, [2000])
    assert oci.resolve_user(root, "app:root") == oci.User(1000, 0, [2000])
    assert oci.resolve_user(root, "4242:7") == oci.User(4242, 7)
    with pytest.raises(Exception, match="nobody"):
        oci.resolve_user(root, "nobody")
