"""The image formats' vocabulary, once: media types, digests, and the choice
of this machine's image from a manifest list / OCI index (archives and
registries both need it)."""
from __future__ import annotations

import hashlib
import platform
import re

from minidocker.images.refs import ImageError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
INDEXES = (OCI_INDEX, DOCKER_LIST)
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
LAYER_TYPES = (OCI_LAYER, OCI_LAYER + "+gzip", OCI_LAYER + "+zstd", DOCKER_LAYER,
               "application/vnd.docker.image.rootfs.diff.tar",
               "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
               "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64"}


def machine_arch() -> str:
    return _ARCH.get(platform.machine(), platform.machine())


def checked_digest(digest) -> str:
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ImageError(f"unsupported or malformed digest {str(digest)[:80]!r}: "
                         "expected sha256:<64 hex>")
    return digest


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def verify(data: bytes, digest: str, what: str) -> bytes:
    if digest_of(data) != checked_digest(digest):
        raise ImageError(f"{what} {digest[:19]}... does not match its digest")
    return data


def is_index(desc_or_doc: dict) -> bool:
    media = desc_or_doc.get("mediaType", "")
    return media in INDEXES or (not media and "manifests" in desc_or_doc)


def pick_platform(index: dict, where: str) -> dict:
    """The descriptor of this machine's image in an index (linux, its
    architecture; a descriptor without a platform counts as a match)."""
    arch = machine_arch()
    candidates = []
    for desc in index.get("manifests") or []:
        if not isinstance(desc, dict):
            continue
        plat = desc.get("platform")
        if plat is None or (plat.get("os", "linux") == "linux" and plat.get("architecture") == arch):
            candidates.append(desc)
    if not candidates:
        offered = sorted({f"{(d.get('platform') or {}).get('os')}/{(d.get('platform') or {}).get('architecture')}"
                          for d in index.get("manifests") or [] if isinstance(d, dict)})
        raise ImageError(f"{where}: no image for linux/{arch} (offered: {', '.join(offered) or 'none'})")
    return candidates[0]


def check_layers(manifest: dict, where: str) -> list[dict]:
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not all(isinstance(l, dict) for l in layers):
        raise ImageError(f"{where}: manifest has no list of layers")
    for l in layers:
        checked_digest(l.get("digest"))
        if l.get("mediaType") and l["mediaType"] not in LAYER_TYPES:
            raise ImageError(f"{where}: unsupported layer media type {l['mediaType']!r} "
                             f"(accepted: {', '.join(LAYER_TYPES[:4])})")
    return layers


def diff_ids(config: dict, where: str) -> list[str]:
    ids = (config.get("rootfs") or {}).get("diff_ids") if isinstance(config, dict) else None
    if not isinstance(ids, list):
        raise ImageError(f"{where}: image config has no rootfs.diff_ids")
    return [checked_digest(d) for d in ids]
