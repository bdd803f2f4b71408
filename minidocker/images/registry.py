"""`pull`, `push` and `login`: the OCI distribution (registry v2) API.

Auth as Docker Hub and GHCR answer it: a 401 with `WWW-Authenticate:
Bearer realm=...,service=...,scope=...` sends us to the realm for a token
(with the stored credentials, if any); `Basic` is answered with them
directly. `localhost`, `127.0.0.0/8` and `::1` registries are plain HTTP, as
Docker allows; every other is HTTPS.

Pull: the manifest (a manifest list / OCI index resolved to this machine's
platform), the config, then every layer not already in the store,
downloaded in parallel and extracted while it arrives (layer.py: decompress
once, digests on the way). Every digest is verified (manifest, config, each
blob's compressed digest and its diffID against the config) before the
transaction commits.

pusher.py pushes through the same Client.
"""
from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from minidocker import paths, state
from minidocker.images import layer, oci, progress, store
from minidocker.images.refs import ImageError, Reference
from minidocker.images.transaction import Transaction

HUB = "registry-1.docker.io"
TIMEOUT = 60
PARALLEL = 3
ACCEPT = ", ".join([oci.OCI_INDEX, oci.DOCKER_LIST, oci.OCI_MANIFEST, oci.DOCKER_MANIFEST])
MAX_MANIFEST = 4 << 20


def _insecure(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:host.index("]")]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# --- credentials -----------------------------------------------------------------

def _auths() -> dict:
    """Our auth file, then Docker's config.json: registry -> base64 user:password."""
    out = {}
    docker = os.path.expanduser("~/.docker/config.json")
    for path in (docker, Path(paths.registry_auth_file())):
        try:
            with open(path) as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            continue
        for host, entry in (data.get("auths") or {}).items() if isinstance(data, dict) else ():
            if isinstance(entry, dict) and isinstance(entry.get("auth"), str):
                key = host.split("://", 1)[-1].rstrip("/")
                out["docker.io" if key.startswith("index.docker.io") else key] = entry["auth"]
    return out


def login(registry: str, username: str, password: str, out=sys.stdout) -> None:
    """Check the credentials against the registry, then store them (0600)."""
    host = registry.split("://", 1)[-1].rstrip("/") or "docker.io"
    secret = base64.b64encode(f"{username}:{password}".encode()).decode()
    client = Client(host, "", creds=secret)
    client.request("GET", "/v2/", scope=None)
    path = Path(paths.registry_auth_file())
    with store.lock():
        data = state.read_json(path, {}) or {}
        data.setdefault("auths", {})[host] = {"auth": secret}
        state.write_json(path, data)
    print("Login Succeeded", file=out)


# --- the HTTP client ---------------------------------------------------------------

class _NoRedirectAuth(urllib.request.HTTPRedirectHandler):
    """Redirects (blob storage, CDNs) keep no Authorization: it is added as
    an unredirected header, which urllib does not copy."""


class Client:
    """One repository on one registry, with its token."""

    def __init__(self, host: str, repo: str, creds: str | None = None):
        self.host = host
        self.repo = repo
        api = HUB if host == "docker.io" else host
        self.base = ("http://" if _insecure(host) else "https://") + api
        self.creds = creds if creds is not None else _auths().get(host)
        self.token: str | None = None
        self.basic = False
        self.lock = threading.Lock()
        self.opener = urllib.request.build_opener(_NoRedirectAuth)

    def request(self, method: str, path: str, headers=None, data=None, scope="pull", ok=(200,)):
        """The response (open, to stream) of method on path; auth as the
        registry asks, once."""
        for attempt in (0, 1):
            req = urllib.request.Request(self.base + path if path.startswith("/") else path,
                                         method=method, data=data, headers=headers or {})
            with self.lock:
                if self.token:
                    req.add_unredirected_header("Authorization", f"Bearer {self.token}")
                elif self.basic and self.creds:
                    req.add_unredirected_header("Authorization", f"Basic {self.creds}")
            try:
                resp = self.opener.open(req, timeout=TIMEOUT)
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 0:
                    self._authenticate(exc.headers.get("WWW-Authenticate", ""), scope)
                    continue
                if exc.code in ok:
                    return exc
                raise ImageError(self._describe(exc, method, path)) from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise ImageError(f"cannot reach registry {self.host} ({self.base}): {reason}") from None
            if resp.status not in ok:
                raise ImageError(f"registry {self.host}: {method} {path} answered {resp.status}")
            return resp
        raise ImageError(f"registry {self.host}: {method} {path}: unauthorized")

    def _describe(self, exc, method, path) -> str:
        try:
            body = json.loads(exc.read(65536) or b"{}")
            errors = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in body.get("errors", []))
        except (ValueError, AttributeError, OSError):
            errors = ""
        what = {401: "unauthorized (see `minidocker login`)", 403: "denied",
                404: "not found"}.get(exc.code, f"HTTP {exc.code}")
        return (f"registry {self.host}: {method} {urllib.parse.unquote(path)}: {what}"
                + (f" ({errors})" if errors else ""))

    def _authenticate(self, challenge: str, scope) -> None:
        scheme, _, params = challenge.partition(" ")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if scheme.lower() == "basic":
            if not self.creds:
                raise ImageError(f"registry {self.host}: authentication required "
                                 "(`minidocker login " + self.host + "`)")
            self.basic = True
            return
        if scheme.lower() != "bearer" or "realm" not in fields:
            raise ImageError(f"registry {self.host}: unsupported authentication {challenge[:80]!r}")
        query = {"service": fields.get("service", "")}
        if scope and self.repo:
            query["scope"] = fields.get("scope") or f"repository:{self.repo}:{scope}"
        url = fields["realm"] + ("&" if "?" in fields["realm"] else "?") + urllib.parse.urlencode(query)
        req = urllib.request.Request(url)
        if self.creds:
            req.add_unredirected_header("Authorization", f"Basic {self.creds}")
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                answer = json.loads(resp.read(1 << 20))
        except urllib.error.HTTPError as exc:
            raise ImageError(f"registry {self.host}: token service {fields['realm']} answered "
                             f"{exc.code} ({'wrong credentials' if exc.code == 401 else exc.reason})") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ImageError(f"registry {self.host}: token service {fields['realm']}: "
                             f"{getattr(exc, 'reason', exc)}") from None
        token = answer.get("token") or answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str):
            raise ImageError(f"registry {self.host}: token service {fields['realm']} gave no token")
        with self.lock:
            self.token = token

    def manifest(self, ref: str) -> tuple[dict, bytes, str]:
        """(document, bytes, digest) of a manifest, verified when ref is a digest."""
        resp = self.request("GET", f"/v2/{self.repo}/manifests/{ref}", headers={"Accept": ACCEPT})
        with resp:
            body = resp.read(MAX_MANIFEST + 1)
            header = resp.headers.get("Docker-Content-Digest")
        if len(body) > MAX_MANIFEST:
            raise ImageError(f"registry {self.host}: manifest {ref} larger than {MAX_MANIFEST >> 20} MiB")
        digest = oci.digest_of(body)
        if ref.startswith("sha256:") and digest != ref:
            raise ImageError(f"registry {self.host}: manifest {ref[:19]}... does not match its digest")
        if header and header.startswith("sha256:") and header != digest:
            raise ImageError(f"registry {self.host}: manifest {ref} does not match the digest "
                             f"the registry gave ({header[:19]}...)")
        try:
            return json.loads(body), body, digest
        except ValueError:
            raise ImageError(f"registry {self.host}: manifest {ref} is not JSON") from None

    def blob(self, digest: str):
        return self.request("GET", f"/v2/{self.repo}/blobs/{oci.checked_digest(digest)}")


# --- pull --------------------------------------------------------------------------

def _image(client: Client, ref: Reference) -> tuple:
    """(manifest digest, layer descriptors, config blob, config, diffIDs) of
    ref, an index resolved to this platform, every digest verified."""
    where = f"registry {ref.registry}: {ref.name}"
    doc, _body, digest = client.manifest(ref.digest or ref.tag)
    if oci.is_index(doc):
        desc = oci.pick_platform(doc, where)
        doc, _body, _digest = client.manifest(oci.checked_digest(desc.get("digest")))
        if oci.is_index(doc):
            raise ImageError(f"{where}: an index inside an index")
    if doc.get("schemaVersion") != 2 or "config" not in doc:
        raise ImageError(f"{where}: unsupported manifest (media type {doc.get('mediaType')!r}; "
                         "schema 2 manifests are accepted)")
    layers = oci.check_layers(doc, where)
    config_desc = doc.get("config") or {}
    with client.blob(config_desc.get("digest")) as resp:
        config_blob = oci.verify(resp.read(MAX_MANIFEST + 1), config_desc["digest"], f"{where}: config")
    try:
        config = json.loads(config_blob)
    except ValueError:
        raise ImageError(f"{where}: image config is not JSON") from None
    diff_ids = oci.diff_ids(config, where)
    if len(diff_ids) != len(layers):
        raise ImageError(f"{where}: {len(layers)} layers in the manifest, {len(diff_ids)} diffIDs in the config")
    return digest, layers, config_blob, config, diff_ids


def _fetch(client: Client, tx: Transaction, todo: list, display, where: str) -> int:
    """Download and extract the layers of todo, PARALLEL at a time, each
    checked against its digest and diffID; returns the devices skipped."""
    def fetch(item):
        desc, diff_id, key = item
        scratch = tx.scratch()
        with client.blob(desc["digest"]) as resp:
            total = int(desc.get("size") or resp.headers.get("Content-Length") or 0)
            reader = progress.Counting(resp, lambda n: display.bytes(key, n, total))
            res = layer.extract(reader, scratch, f"layer {desc['digest'][:19]}... of {where}")
        if res.compressed != desc["digest"]:
            raise ImageError(f"{where}: blob {desc['digest'][:19]}... does not match its digest")
        if res.diff_id != diff_id:
            raise ImageError(f"{where}: layer {desc['digest'][:19]}... has diffID "
                             f"{res.diff_id[:19]}..., the config says {diff_id[:19]}...")
        display.set(key, "Pull complete")
        return res, scratch

    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        results = list(pool.map(fetch, todo))
    for (desc, diff_id, key), (res, scratch) in zip(todo, results):
        tx.add_layer(diff_id, scratch, res.size, res.split)
    return sum(res.devices for res, _ in results)


def pull(ref_text: str, out=sys.stdout) -> dict:
    """Pull [REGISTRY/]NAME[:TAG|@DIGEST] into the store."""
    ref = Reference(ref_text)
    client = Client(ref.registry, ref.remote_path)
    print(f"{ref.tag or ref.digest}: Pulling from {ref.remote_path}", file=out, flush=True)
    digest, layers, config_blob, config, diff_ids = _image(client, ref)
    fresh = not os.path.exists(os.path.join(paths.image_dir(store.hexid(oci.digest_of(config_blob))), "image.json"))
    display = progress.Progress(out)
    with Transaction() as tx:
        todo = []
        for desc, diff_id in zip(layers, diff_ids):
            key = desc["digest"][7:19]
            if not tx.wanted(diff_id) or any(d == diff_id for _, d, _ in todo):
                display.add(key, "Already exists")
            else:
                display.add(key, "Pulling fs layer")
                todo.append((desc, diff_id, key))
        devices = _fetch(client, tx, todo, display, f"registry {ref.registry}: {ref.name}")
        tags = [ref.tagged] if ref.tag and not ref.digest else []
        image = tx.add_image(config_blob, config, tags, [f"{ref.name}@{digest}"])
        tx.commit()
    print(f"Digest: {digest}", file=out)
    shown = ref.tagged or ref.name + "@" + ref.digest
    print(f"Status: {'Downloaded newer image' if fresh else 'Image is up to date'} for {shown}", file=out)
    layer.warn_devices(devices)
    return image
