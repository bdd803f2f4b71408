"""`push`: a local image to the registry its reference names. Each layer is
sent as the very tar it came as (its tar-split and its files, gzip'ed), so
the image keeps its id; a layer that cannot be made again (stored before
tar-splits, or a file lost to a later member of the same name) is written
anew from its files (overlay whiteouts back to `.wh.` names) and the pushed
config carries its new diffID. Blobs the registry has are not sent again
(HEAD), then the manifest."""
from __future__ import annotations

import gzip
import json
import sys
import urllib.parse

from minidocker.images import layertar, oci, store
from minidocker.images.refs import ImageError, Reference
from minidocker.images.registry import Client


def push(ref_text: str, out=sys.stdout) -> str:
    """Push a local image to the registry its reference names."""
    image = store.lookup(ref_text)
    ref = Reference(ref_text)
    if not ref.tag or ref.digest:
        raise ImageError(f"cannot push {ref_text!r}: name a tag, not a digest")
    client = Client(ref.registry, ref.remote_path)
    print(f"The push refers to repository [{ref.registry}/{ref.remote_path}]", file=out, flush=True)
    config_blob = store.config_blob(image)
    descs, diff_ids = [], []
    for diff_id in store.layer_ids(image):
        tar = layertar.layer_tar(diff_id)
        blob = gzip.compress(tar, mtime=0)
        diff_ids.append(oci.digest_of(tar))
        desc = {"mediaType": oci.OCI_LAYER + "+gzip", "digest": oci.digest_of(blob), "size": len(blob)}
        print(f"{desc['digest'][7:19]}: {_upload(client, blob, desc['digest'])}", file=out, flush=True)
        descs.append(desc)
    if diff_ids != store.layer_ids(image):   # a layer written anew: its config says so
        config = json.loads(config_blob)
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


def _upload(client: Client, blob: bytes, digest: str) -> str:
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
