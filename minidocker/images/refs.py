"""Image references as Docker parses them, and the images' error type: the
vocabulary every images module shares (no I/O, no other project import but
the error base)."""
from __future__ import annotations

import re

from minidocker.errors import MinidockerError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*\Z")
_DOMAIN_RE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]{1,5})?\Z")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}\Z")
DOCKER_HUB = "docker.io"


class ImageError(MinidockerError):
    pass


class Reference:
    """[DOMAIN/]PATH[:TAG][@DIGEST] as Docker parses it: the first component
    is a registry when it has a '.' or a ':' or is `localhost`."""

    def __init__(self, text: str):
        self.text = text
        rest, _, digest = text.partition("@")
        last = rest.rsplit("/", 1)[-1]
        tag = ""
        if ":" in last:
            rest, tag = rest.rsplit(":", 1)
        first, _, tail = rest.partition("/")
        if tail and ("." in first or ":" in first or first == "localhost"):
            domain, path = first, tail
        else:
            domain, path = "", rest
        if domain == DOCKER_HUB or domain == "index.docker.io":
            domain = ""
        if not domain and path.startswith("library/"):
            path = path[len("library/"):]
        if not (_PATH_RE.match(path) and (not domain or _DOMAIN_RE.match(domain))
                and (not tag or _TAG_RE.match(tag)) and (not digest or _DIGEST_RE.match(digest))):
            raise ImageError(f"invalid image reference {text!r}: expected [REGISTRY[:PORT]/]NAME"
                             "[:TAG][@sha256:DIGEST] with a lower-case name", 125)
        self.domain, self.path, self.digest = domain, path, digest
        self.tag = tag or ("" if digest else "latest")

    @property
    def name(self) -> str:
        """The repository as tags name it (no docker.io/library/)."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def tagged(self) -> str:
        return f"{self.name}:{self.tag}" if self.tag else ""

    @property
    def registry(self) -> str:
        return self.domain or DOCKER_HUB

    @property
    def remote_path(self) -> str:
        """The repository on its registry (Docker Hub's official images are library/)."""
        return self.path if self.domain or "/" in self.path else "library/" + self.path


def normalize_ref(ref: str) -> str:
    """NAME[:TAG] -> NAME:TAG, checked against Docker's reference grammar."""
    parsed = Reference(ref)
    if parsed.digest or not parsed.tag:
        raise ImageError(f"invalid tag {ref!r}: a digest cannot be a tag; use NAME[:TAG]", 125)
    return parsed.tagged
