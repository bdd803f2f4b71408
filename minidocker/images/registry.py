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

Push: each layer is written back as a tar of its stored files (gzip), the
config's diff_ids are those of these tars; blobs the registry has are not
sent again (HEAD), then the manifest.
"""
from __future__ import annotations

import base64
import io
import ipaddress
import json
import os
import re
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from minidocker import paths, state
from minidocker.images import layer, oci, store
from minidocker.images.store import ImageError, Reference

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
    for path in (docker, paths.registry_auth_file()):
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
    client = _Client(host, "", creds=secret)
    client.request("GET", "/v2/", scope=None)
    path = paths.registry_auth_file()
    with store._lock():
        data = state.read_json(path, {}) or {}
        data.setdefault("auths", {})[host] = {"auth": secret}
        state.write_json(path, data)
    print("Login Succeeded", file=out)


# --- the HTTP client ---------------------------------------------------------------

class _NoRedirectAuth(urllib.request.HTTPRedirectHandler):
    """Redirects (blob storage, CDNs) keep no Authorization: it is added as
    an unredirected header, which urllib does not copy."""


class _Client:
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


# --- progress ---------------------------------------------------------------------

class Progress:
    """Docker's display: one line per layer. On a terminal the lines are
    redrawn in place with a bar; otherwise each state change is one line."""

    def __init__(self, out):
        self.out = out
        self.tty = hasattr(out, "isatty") and out.isatty()
        self.rows: list[str] = []
        self.text: dict[str, str] = {}
        self.lock = threading.Lock()
        self.drawn = 0
        self.last = 0.0

    def add(self, key: str, text: str) -> None:
        with self.lock:
            self.rows.append(key)
            self._set(key, text)

    def set(self, key: str, text: str, force: bool = True) -> None:
        with self.lock:
            self._set(key, text, force)

    def _set(self, key, text, force=True):
        self.text[key] = text
        if not self.tty:
            if force:
                print(f"{key}: {text}", file=self.out, flush=True)
            return
        now = time.monotonic()
        if not force and now - self.last < 0.1:
            return
        self.last = now
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}A")
        for k in self.rows:
            self.out.write(f"\x1b[2K{k}: {self.text[k]}\n")
        self.drawn = len(self.rows)
        self.out.flush()

    def bytes(self, key: str, done: int, total: int) -> None:
        if not self.tty:
            return
        width = 50
        filled = int(width * done / total) if total else 0
        bar = "=" * max(0, filled - 1) + (">" if filled else "") + " " * (width - filled)
        first = not self.text.get(key, "").startswith("Downloading")
        self.set(key, f"Downloading [{bar}] {_human(done)}/{_human(total)}", force=first)


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g}{unit}"
        n /= 1000
    return str(n)


class _Counting:
    def __init__(self, raw, tick):
        self.raw, self.tick, self.n = raw, tick, 0

    def read(self, n=-1):
        data = self.raw.read(n)
        self.n += len(data)
        self.tick(self.n)
        return data


# --- pull --------------------------------------------------------------------------

def pull(ref_text: str, out=sys.stdout) -> dict:
    """Pull [REGISTRY/]NAME[:TAG|@DIGEST] into the store."""
    ref = Reference(ref_text)
    client = _Client(ref.registry, ref.remote_path)
    print(f"{ref.tag or ref.digest}: Pulling from {ref.remote_path}", file=out, flush=True)
    doc, body, digest = client.manifest(ref.digest or ref.tag)
    if oci.is_index(doc):
        desc = oci.pick_platform(doc, f"registry {ref.registry}: {ref.name}")
        doc, body, digest_one = client.manifest(oci.checked_digest(desc.get("digest")))
        if oci.is_index(doc):
            raise ImageError(f"registry {ref.registry}: {ref.name}: an index inside an index")
    if doc.get("schemaVersion") != 2 or "config" not in doc:
        raise ImageError(f"registry {ref.registry}: {ref.name}: unsupported manifest "
                         f"(media type {doc.get('mediaType')!r}; schema 2 manifests are accepted)")
    where = f"registry {ref.registry}: {ref.name}"
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
    fresh = not (paths.image_dir(store.hexid(oci.digest_of(config_blob))) / "image.json").exists()
    progress = Progress(out)
    devices = 0
    with store.Transaction() as tx:
        todo = []
        for desc, diff_id in zip(layers, diff_ids):
            key = desc["digest"][7:19]
            if not tx.wanted(diff_id) or any(d == diff_id for _, d, _ in todo):
                progress.add(key, "Already exists")
            else:
                progress.add(key, "Pulling fs layer")
                todo.append((desc, diff_id, key))

        def fetch(item):
            desc, diff_id, key = item
            scratch = tx.scratch()
            with client.blob(desc["digest"]) as resp:
                total = int(desc.get("size") or resp.headers.get("Content-Length") or 0)
                reader = _Counting(resp, lambda n: progress.bytes(key, n, total))
                res = layer.extract(reader, scratch, f"layer {desc['digest'][:19]}... of {ref.name}")
            if res.compressed != desc["digest"]:
                raise ImageError(f"{where}: blob {desc['digest'][:19]}... does not match its digest")
            if res.diff_id != diff_id:
                raise ImageError(f"{where}: layer {desc['digest'][:19]}... has diffID "
                                 f"{res.diff_id[:19]}..., the config says {diff_id[:19]}...")
            progress.set(key, "Pull complete")
            return res, scratch

        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            results = list(pool.map(fetch, todo))
        for (desc, diff_id, key), (res, scratch) in zip(todo, results):
            tx.add_layer(diff_id, scratch, res.size)
            devices += res.devices
        tags = [ref.tagged] if ref.tag and not ref.digest else []
        image = tx.add_image(config_blob, config, tags, [f"{ref.name}@{digest}"])
        tx.commit()
    print(f"Digest: {digest}", file=out)
    shown = ref.tagged or ref.name + "@" + ref.digest
    if fresh:
        print(f"Status: Downloaded newer image for {shown}", file=out)
    else:
        print(f"Status: Image is up to date for {shown}", file=out)
    from minidocker.images import archive
    archive.warn_devices(devices)
    return image


# --- push --------------------------------------------------------------------------

def _layer_tar(diff_dir: str) -> bytes:
    """A layer's stored files as a tar (overlay whiteouts back to .wh. names),
    in sorted order so the same layer gives the same bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(diff_dir):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, diff_dir)
            for name in sorted(dirnames + filenames):
                path = os.path.join(dirpath, name)
                arc = name if rel_dir == "." else f"{rel_dir}/{name}"
                st = os.lstat(path)
                if (st.st_mode & 0o170000) == 0o020000 and st.st_rdev == 0:
                    info = tarfile.TarInfo(os.path.join(os.path.dirname(arc), layer.WHITEOUT + name))
                    tar.addfile(info)
                    continue
                info = tar.gettarinfo(path, arc)
                info.uname = info.gname = ""
                info.mtime = int(st.st_mtime)
                xattrs = {}
                for key in os.listxattr(path, follow_symlinks=False):
                    value = os.getxattr(path, key, follow_symlinks=False)
                    if key == layer.OPAQUE_XATTR:
                        continue
                    xattrs["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
                info.pax_headers = xattrs
                if info.isreg():
                    with open(path, "rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
                if info.isdir() and layer.OPAQUE_XATTR in os.listxattr(path, follow_symlinks=False):
                    tar.addfile(tarfile.TarInfo(f"{arc}/{layer.OPAQUE}"))
    return raw.getvalue()


def push(ref_text: str, out=sys.stdout) -> str:
    """Push a local image to the registry its reference names."""
    import gzip
    image = store.lookup(ref_text)
    ref = Reference(ref_text)
    if not ref.tag or ref.digest:
        raise ImageError(f"cannot push {ref_text!r}: name a tag, not a digest")
    client = _Client(ref.registry, ref.remote_path)
    print(f"The push refers to repository [{ref.registry}/{ref.remote_path}]", file=out, flush=True)
    with open(paths.image_dir(store.hexid(image["Id"])) / "config.json", "rb") as fh:
        config = json.load(fh)
    descs, diff_ids = [], []
    for diff_id in store.layer_ids(image):
        tar = _layer_tar(str(paths.layer_dir(store.hexid(diff_id)) / "diff"))
        blob = gzip.compress(tar, mtime=0)
        diff_ids.append(oci.digest_of(tar))
        desc = {"mediaType": oci.OCI_LAYER + "+gzip", "digest": oci.digest_of(blob), "size": len(blob)}
        print(f"{desc['digest'][7:19]}: {_upload(client, blob, desc['digest'])}", file=out, flush=True)
        descs.append(desc)
    config.setdefault("rootfs", {})["diff_ids"] = diff_ids
    config_blob = json.dumps(config, separators=(",", ":")).encode()
    _upload(client, config_blob, oci.digest_of(config_blob))
    manifest = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
                           "config": {"mediaType": oci.OCI_CONFIG, "digest": oci.digest_of(config_blob),
                                      "size": len(config_blob)},
                           "layers": descs}, separators=(",", ":")).encode()
    client.request("PUT", f"/v2/{ref.remote_path}/manifests/{ref.tag}", data=manifest,
                   headers={"Content-Type": oci.OCI_MANIFEST}, scope="pull,push", ok=(201, 200))
    digest = oci.digest_of(manifest)
    print(f"{ref.tag}: digest: {digest} size: {len(manifest)}", file=out)
    return digest


def _upload(client: _Client, blob: bytes, digest: str) -> str:
    path = f"/v2/{client.repo}/blobs/{digest}"
    resp = client.request("HEAD", path, scope="pull,push", ok=(200, 404))
    if resp.status == 200:
        return "Layer already exists"
    resp = client.request("POST", f"/v2/{client.repo}/blobs/uploads/", scope="pull,push", ok=(202,))
    location = resp.headers.get("Location") or ""
    if not location:
        raise ImageError(f"registry {client.host}: upload gave no Location")
    if location.startswith("/"):
        location = client.base + location
    sep = "&" if "?" in location else "?"
    client.request("PUT", f"{location}{sep}digest={urllib.parse.quote(digest)}", data=blob,
                   headers={"Content-Type": "application/octet-stream"}, scope="pull,push", ok=(201,))
    return "Pushed"
