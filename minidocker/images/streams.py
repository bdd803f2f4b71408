"""Reading image data in one pass: decompression told by the first bytes
(gzip, zstd, bzip2, xz or plain), digests taken on the way, and a
forward-only reader tarfile can use without seeking or copying.

The input may be a pipe or an HTTP response: nothing here seeks back, and
everything read (including what follows a tar's end marker) goes through
the digests.
"""
from __future__ import annotations

import bz2
import hashlib
import lzma
import tarfile
import zlib

from minidocker.images.refs import ImageError

MAX_EXT_HEADER = 2 << 20
MAX_TRAILER = 64 << 20
CHUNK = 1 << 20


class BoundedTarInfo(tarfile.TarInfo):
    """tarfile's TarInfo refusing extended headers above MAX_EXT_HEADER before
    they are read into memory."""

    def _check_ext(self):
        if self.size > MAX_EXT_HEADER:
            raise ImageError(f"refusing member after {self.name[:60]!r}: extended header of "
                             f"{self.size} bytes (at most {MAX_EXT_HEADER >> 20} MiB)")

    def _proc_pax(self, tarfile):
        self._check_ext()
        return super()._proc_pax(tarfile)

    def _proc_gnulong(self, tarfile):
        self._check_ext()
        return super()._proc_gnulong(tarfile)


class Hashing:
    """A reader that digests what passes through it."""

    def __init__(self, raw):
        self.raw = raw
        self.hash = hashlib.sha256()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hash.update(data)
        self.count += len(data)
        return data

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


class Prefixed:
    """A reader giving back the bytes already peeked, then the rest."""

    def __init__(self, head: bytes, raw):
        self.head, self.raw = head, raw

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n is None or n < 0:
                data, self.head = self.head + self.raw.read(), b""
                return data
            data, self.head = self.head[:n], self.head[n:]
            if len(data) < n:
                data += self.raw.read(n - len(data))
            return data
        return self.raw.read(n)


def peek(raw, n: int = 6) -> bytes:
    head = b""
    while len(head) < n:
        chunk = raw.read(n - len(head))
        if not chunk:
            break
        head += chunk
    return head


class _Gunzip:
    """gzip members one after the other, inflated in steps of at most
    4 CHUNKs of output into a buffer that small reads (tar headers) are
    served from; zlib checks each member's CRC and length at its end."""

    def __init__(self, src):
        self.src = src
        self.z = None            # None between members
        self.pending = b""       # input not yet given to zlib
        self.buf = b""
        self.off = 0
        self.eof = False

    def _fill(self) -> bool:
        """Inflate the next step into buf; False at the end of the stream."""
        while not self.eof:
            raw, self.pending = self.pending or self.src.read(CHUNK), b""
            if not raw:
                if self.z is None:
                    self.eof = True
                    return False
                data = self.z.flush()
                if not self.z.eof:
                    raise EOFError("compressed stream ended before its end marker")
                self.z, self.eof = None, True
            else:
                if self.z is None:
                    raw = raw.lstrip(b"\x00")    # zero padding after the last member
                    if not raw:
                        continue
                    self.z = zlib.decompressobj(31)
                data = self.z.decompress(raw, 4 * CHUNK)
                self.pending = self.z.unconsumed_tail
                if self.z.eof:
                    self.pending, self.z = self.z.unused_data, None
            if data:
                self.buf, self.off = data, 0
                return True
        return False

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = 1 << 62
        if self.off >= len(self.buf) and not self._fill():
            return b""
        data = self.buf[self.off:self.off + n] if self.off or n < len(self.buf) else self.buf
        self.off += len(data)
        return data


class TarSplit:
    """What of a tar stream is not file contents (headers, padding, what
    follows the end), compressed, with where each file's contents go: with
    the extracted files it gives back the very same tar, so a layer pushed
    keeps its diffID and its image its id (Docker keeps a "tar-split" for the
    same reason)."""

    def __init__(self):
        self.z = zlib.compressobj(6, zlib.DEFLATED, 31)
        self.chunks: list[bytes] = []
        self.length = 0
        self.files: list[list] = []      # [offset in the rest, member name, size]
        self.skip = (0, 0)

    def file(self, start: int, size: int, name: str) -> None:
        """The member name's contents are at stream offset start, size bytes."""
        self.files.append([self.length, name, size])
        self.skip = (start, start + size)

    def feed(self, pos: int, data: bytes) -> None:
        a, b = self.skip
        if pos + len(data) > a and pos < b:
            data = data[:max(0, a - pos)] + data[max(0, b - pos):]
        if data:
            self.chunks.append(self.z.compress(data))
            self.length += len(data)

    def finish(self) -> bytes:
        """The gzip'ed rest of the stream."""
        self.chunks.append(self.z.flush())
        return b"".join(self.chunks)


class _Forward:
    """A reader tarfile can use in its seeking mode ("r:"): tell(), and
    seek() forward only (by reading), so a pipe needs no seek and tarfile's
    stream mode (which copies its buffer at every header) is not used.
    read(n) returns n bytes unless the input ends."""

    def __init__(self, raw, split: "TarSplit | None" = None):
        self.raw = raw
        self.pos = 0
        self.split = split

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            data = self.raw.read()
        else:
            parts, left = [], n
            while left > 0:
                chunk = self.raw.read(left)
                if not chunk:
                    break
                parts.append(chunk)
                left -= len(chunk)
            data = parts[0] if len(parts) == 1 else b"".join(parts)
        if self.split is not None:
            self.split.feed(self.pos, data)
        self.pos += len(data)
        return data

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        target = pos if whence == 0 else self.pos + pos if whence == 1 else None
        if target is None or target < self.pos:
            raise OSError(f"cannot seek back in a stream (to {pos}, whence {whence}, at {self.pos})")
        while self.pos < target:
            if not self.read(min(target - self.pos, CHUNK)):
                break
        return self.pos


def decompressed(raw):
    """raw's bytes, decompressed by what its first bytes say (raw itself when
    they are plain)."""
    head = peek(raw)
    src = Prefixed(head, raw)
    if head[:2] == b"\x1f\x8b":
        return _Gunzip(src)
    if head[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)
    if head[:3] == b"BZh":
        return bz2.BZ2File(src)
    if head[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(src)
    return src


def open_tar(reader, split: TarSplit | None = None) -> tarfile.TarFile:
    """tarfile over a forward-only reader (see _Forward); its fileobj is
    that reader, to drain after the tar's end."""
    return tarfile.open(fileobj=_Forward(reader, split), mode="r:", tarinfo=BoundedTarInfo)


def why(exc: BaseException) -> str:
    """A tar/decompression failure in a few words."""
    if isinstance(exc, tarfile.ReadError) and ("could not be opened" in str(exc) or "invalid header" in str(exc)
                                               or "bad checksum" in str(exc)):
        return "not a tar archive (plain, gzip, zstd, bzip2 or xz)"
    if isinstance(exc, tarfile.ReadError) and "empty file" in str(exc):
        return "empty file, not a tar archive"
    return " ".join(str(exc).split()) or type(exc).__name__


def drain(stream, label: str, quiet: bool = False) -> None:
    """Read what follows the tar's end marker: the diffID covers it, and
    gzip, zstd, bzip2 and xz check their checksums only at the end, so a
    damaged stream is caught; more than MAX_TRAILER is refused (a bomb after
    the marker is not inflated)."""
    left = MAX_TRAILER
    while left > 0:
        chunk = stream.read(min(left, CHUNK))
        if not chunk:
            return
        left -= len(chunk)
    if not quiet:
        raise ImageError(f"refusing layer {label}: more than {MAX_TRAILER >> 20} MiB of data "
                         "after the end of its archive")
    while stream.read(CHUNK):
        pass
