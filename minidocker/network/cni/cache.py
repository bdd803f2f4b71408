"""The result cache in libcni's format and layout (R18).

`<cache_dir>/results/<network>-<containerID>-<ifname>`, directory 0700, file
0600, one JSON object of kind `cniCacheV1` holding the config list (base64,
as Go encodes []byte), the runtime arguments and the ADD result. cnitool,
containerd and CRI-O read the same files, so the field names and encodings
follow libcni exactly. Capability args are kept because plugins such as
portmap need them again on DEL.
"""
from __future__ import annotations

import binascii
import os

from cni import fastjson as json
from cni.record import Record

# Not `base64` (it imports struct and re) nor `json` nor `pathlib`: ADD and
# DEL write and read one entry here on every bridge `run`. `binascii` is
# base64's own C core: the same bytes.

KIND = "cniCacheV1"


class CacheError(Exception):
    """A cache file that exists but cannot be used (R7: delete and go on)."""


class CacheEntry(Record):
    FACTORIES = {"cni_args": list, "capability_args": dict}
    container_id: str
    network: str
    ifname: str
    config: bytes = b""
    netns: str = ""
    cni_args: list[tuple[str, str]]
    capability_args: dict
    result: dict | None = None

    def to_json(self) -> bytes:
        obj: dict = {"kind": KIND, "containerId": self.container_id,
                     "config": binascii.b2a_base64(self.config, newline=False).decode(),
                     "ifName": self.ifname, "networkName": self.network}
        # omitempty, as libcni's struct tags say
        if self.netns:
            obj["netns"] = self.netns
        if self.cni_args:
            obj["cniArgs"] = [[k, v] for k, v in self.cni_args]
        if self.capability_args:
            obj["capabilityArgs"] = self.capability_args
        if self.result:
            obj["result"] = self.result
        return json.dumps(obj, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "CacheEntry":
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise CacheError(f"not JSON: {exc}") from None
        if not isinstance(obj, dict) or obj.get("kind") != KIND:
            raise CacheError(f"kind is not {KIND}")
        try:
            config = _b64decode(obj.get("config") or "")
            args = [(str(k), str(v)) for k, v in obj.get("cniArgs") or []]
        except (ValueError, TypeError) as exc:
            raise CacheError(f"bad field: {exc}") from None
        caps = obj.get("capabilityArgs") or {}
        result = obj.get("result")
        if not isinstance(caps, dict) or (result is not None and not isinstance(result, dict)):
            raise CacheError("capabilityArgs and result must be objects")
        return cls(container_id=str(obj.get("containerId", "")), network=str(obj.get("networkName", "")),
                   ifname=str(obj.get("ifName", "")), config=config, netns=str(obj.get("netns", "")),
                   cni_args=args, capability_args=caps, result=result)


def _b64decode(text) -> bytes:
    """base64.b64decode(text, validate=True), as Python 3.11's does it."""
    if isinstance(text, str):
        try:
            text = text.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("string argument should contain only ASCII characters") from None
    if not isinstance(text, bytes):
        raise TypeError(f"argument should be a bytes-like object or ASCII string, not {type(text).__name__!r}")
    return binascii.a2b_base64(text, strict_mode=True)


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class ResultCache(Record):
    directory: str

    @property
    def results_dir(self) -> str:
        return os.path.join(self.directory, "results")

    def path(self, network: str, container_id: str, ifname: str) -> str:
        return os.path.join(self.results_dir, f"{network}-{container_id}-{ifname}")

    def write(self, entry: CacheEntry) -> str:
        """Atomically (a reader never sees half a file), mode 0600 in a 0700 dir."""
        d = self.results_dir
        os.makedirs(d, mode=0o700, exist_ok=True)
        final = self.path(entry.network, entry.container_id, entry.ifname)
        tmp = os.path.join(d, f".{os.path.basename(final)}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, entry.to_json())
        finally:
            os.close(fd)
        os.replace(tmp, final)
        return final

    def read(self, network: str, container_id: str, ifname: str) -> CacheEntry | None:
        """None when there is no entry; CacheError when it is unusable."""
        try:
            data = _read_bytes(self.path(network, container_id, ifname))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CacheError(str(exc)) from None
        return CacheEntry.from_json(data)

    def delete(self, network: str, container_id: str, ifname: str) -> None:
        try:
            os.unlink(self.path(network, container_id, ifname))
        except (FileNotFoundError, NotADirectoryError):
            pass

    def attachments(self, container_id: str = "", network: str = "") -> list[CacheEntry]:
        """Valid entries, file names sorted (libcni's GetCachedAttachments)."""
        try:
            names = sorted(os.listdir(self.results_dir))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.startswith("."):
                continue
            if container_id and f"-{container_id}-" not in name:
                continue
            try:
                entry = CacheEntry.from_json(_read_bytes(os.path.join(self.results_dir, name)))
            except (OSError, CacheError):
                continue
            if container_id and entry.container_id != container_id:
                continue
            if network and entry.network != network:
                continue
            if not entry.ifname or not entry.network:
                continue
            out.append(entry)
        return out
