"""Image references as Docker parses them, and the images' error type: the
vocabulary every images module shares (no I/O, no other project import but
the error base)."""
from __future__ import annotations

from minidocker.errors import MinidockerError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
PATH_RE = rf"{_COMPONENT}(?:/{_COMPONENT})*\Z"
DOMAIN_RE = (r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)"
             r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]{1,5})?\Z")
TAG_RE = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z"
DIGEST_RE = r"sha256:[0-9a-f]{64}\Z"
DOCKER_HUB = "docker.io"
_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_TAG = _LOWER | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ_.-")


def plainly_valid(domain: str, path: str, tag: str, digest: str) -> bool:
    """True for the common reference the patterns above surely accept (no
    registry or digest, path components of [a-z0-9] only, a plain tag):
    `busybox`, `library/alpine:3.19`, without importing `re` (~5 ms of
    `run`). False means: ask the patterns."""
    return (not domain and not digest and len(tag) <= 128
            and all(part and _LOWER.issuperset(part) for part in path.split("/"))
            and (not tag or (_TAG.issuperset(tag) and tag[0] not in ".-")))


def valid(domain: str, path: str, tag: str, digest: str) -> bool:
    """The parts match Docker's reference grammar."""
    if plainly_valid(domain, path, tag, digest):
        return True
    import re
    return bool(re.match(PATH_RE, path) and (not domain or re.match(DOMAIN_RE, domain))
                and (not tag or re.match(TAG_RE, tag))
                and (not digest or re.match(DIGEST_RE, digest)))


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
        if not valid(domain, path, tag, digest):
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
