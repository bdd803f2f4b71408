"""Where leases live: the `Store` interface, host-local's on-disk format, and
an in-memory store for unit tests.

Disk layout (host-local's, so either plugin can release the other's leases):
`<dataDir>/<network>/<ip>` holding "<containerID>\\r\\n<ifname>", created
exclusively; `last_reserved_ip.<rangeset index>` for round-robin; and a
`lock` file that serialises every change with flock(2).

Beside each lease we write, an empty owner marker `.md~<ip>~<cid>~<ifname>`
(host-local skips it: no lease content), so finding an attachment's leases
costs one directory listing and opening its own leases, however many
containers hold others (host-local opens every lease). A lease without a
marker (host-local wrote it, or the name is too long) is opened as before;
a marker whose lease is gone is dropped.
"""
from __future__ import annotations

import fcntl
import posix   # os's functions without importing os (~1.2 ms): HACKING.md

from cni_bridge.files import is_dir, makedirs

LINE_BREAK = "\r\n"
LAST_PREFIX = "last_reserved_ip."
MARK = ".md~"


class Store:
    """What the allocator needs from a lease store."""

    def __enter__(self):
        self.lock()
        return self

    def __exit__(self, *exc):
        self.unlock()

    def lock(self) -> None: ...
    def unlock(self) -> None: ...
    def reserve(self, cid: str, ifname: str, ip: str, range_id: int) -> bool: ...
    def release(self, ip: str) -> None: ...
    def last_reserved(self, range_id: int) -> str | None: ...
    def leases(self) -> list[tuple[str, str, str]]:
        """[(ip, container id, ifname)]; ifname is "" for legacy leases."""
        ...

    def get_by_id(self, cid: str, ifname: str) -> list[str]:
        return [ip for ip, c, i in self.leases() if c == cid and i in (ifname, "")]

    def release_by_id(self, cid: str, ifname: str) -> list[str]:
        ips = self.get_by_id(cid, ifname)
        for ip in ips:
            self.release(ip)
        return ips


class DiskStore(Store):
    def __init__(self, data_dir: str, network: str):
        self.dir = f"{data_dir}/{network}"
        self.fd = -1

    def lock(self) -> None:
        # Leases are state: 0700 directories and 0600 files (issue 6), the
        # data directory too (makedirs gives intermediate ones the umask's mode).
        for d in (self.dir.rpartition("/")[0], self.dir):
            if not is_dir(d):
                makedirs(d, 0o700)
                posix.chmod(d, 0o700)
        self.fd = posix.open(f"{self.dir}/lock", posix.O_RDWR | posix.O_CREAT | posix.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def unlock(self) -> None:
        if self.fd >= 0:
            posix.close(self.fd)  # closing drops the flock
            self.fd = -1

    def reserve(self, cid: str, ifname: str, ip: str, range_id: int) -> bool:
        try:
            fd = posix.open(f"{self.dir}/{ip}", posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL, 0o600)
        except FileExistsError:
            return False
        try:
            posix.write(fd, (cid.strip() + LINE_BREAK + ifname).encode())
        finally:
            posix.close(fd)
        try:
            posix.close(posix.open(self._marker(ip, cid, ifname), posix.O_WRONLY | posix.O_CREAT | posix.O_CLOEXEC, 0o600))
        except OSError:
            pass  # no marker (a name too long): the lease is found by opening it
        # written over, then cut to length: an O_TRUNC to zero first costs
        # ~0.2 ms on ext4 (freeing the block), measured; the same length
        # (the usual case) changes no block
        fd = posix.open(f"{self.dir}/{LAST_PREFIX}{range_id}", posix.O_WRONLY | posix.O_CREAT | posix.O_CLOEXEC, 0o600)
        try:
            data = ip.encode()
            posix.write(fd, data)
            posix.ftruncate(fd, len(data))
        finally:
            posix.close(fd)
        return True

    def release(self, ip: str) -> None:
        try:
            posix.unlink(f"{self.dir}/{ip}")
        except FileNotFoundError:
            pass
        try:
            names = posix.listdir(self.dir)
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(f"{MARK}{ip}~"):
                self._unlink(name)

    def _marker(self, ip: str, cid: str, ifname: str) -> str:
        return f"{self.dir}/{MARK}{ip}~{cid.strip()}~{ifname}"

    def _unlink(self, name: str) -> None:
        try:
            posix.unlink(f"{self.dir}/{name}")
        except OSError:
            pass

    def _owner(self, ip: str) -> tuple[str, str] | None:
        try:
            with open(f"{self.dir}/{ip}", "rb") as fh:
                data = fh.read().decode(errors="replace").strip()
        except OSError:
            return None
        cid, _, ifname = data.partition(LINE_BREAK)
        return cid.strip(), ifname.strip()

    def get_by_id(self, cid: str, ifname: str) -> list[str]:
        """Leases marked as this attachment's and unmarked leases, each
        checked by its content; stale markers dropped."""
        try:
            names = posix.listdir(self.dir)
        except FileNotFoundError:
            return []
        leases, marked, mine = set(), set(), []
        for name in names:
            if name.startswith(MARK):
                parts = name[len(MARK):].split("~", 2)
                if len(parts) == 3:
                    marked.add(parts[0])
                    if (parts[1], parts[2]) == (cid.strip(), ifname):
                        mine.append((parts[0], name))
            elif name != "lock" and not name.startswith((LAST_PREFIX, ".")):
                leases.add(name)
        out = []
        for ip, marker in mine:
            if ip not in leases:
                self._unlink(marker)  # host-local released it
        for ip in sorted({ip for ip, _ in mine} & leases | (leases - marked)):
            owner = self._owner(ip)
            if owner and owner[0] == cid.strip() and owner[1] in (ifname, ""):
                out.append(ip)
        return out

    def release_by_id(self, cid: str, ifname: str) -> list[str]:
        ips = self.get_by_id(cid, ifname)
        for ip in ips:
            self._unlink(ip)
            self._unlink(self._marker(ip, cid, ifname).rpartition("/")[2])
        return ips

    def last_reserved(self, range_id: int) -> str | None:
        try:
            with open(f"{self.dir}/{LAST_PREFIX}{range_id}") as fh:
                return fh.read().strip() or None
        except OSError:
            return None

    def leases(self) -> list[tuple[str, str, str]]:
        out = []
        try:
            names = posix.listdir(self.dir)
        except FileNotFoundError:
            return out
        for name in names:
            if name == "lock" or name.startswith(LAST_PREFIX) or name.startswith("."):
                continue
            owner = self._owner(name)
            if owner is not None:
                out.append((name, *owner))
        return out

    def has(self, ip: str) -> bool:
        return posix.access(f"{self.dir}/{ip}", posix.F_OK)


class MemoryStore(Store):
    """The same semantics in a dict, for allocator unit tests."""

    def __init__(self):
        self.data: dict[str, tuple[str, str]] = {}
        self.last: dict[int, str] = {}

    def lock(self) -> None:
        pass

    def unlock(self) -> None:
        pass

    def reserve(self, cid, ifname, ip, range_id) -> bool:
        if ip in self.data:
            return False
        self.data[ip] = (cid, ifname)
        self.last[range_id] = ip
        return True

    def release(self, ip) -> None:
        self.data.pop(ip, None)

    def last_reserved(self, range_id):
        return self.last.get(range_id)

    def leases(self):
        return [(ip, c, i) for ip, (c, i) in self.data.items()]

    def has(self, ip: str) -> bool:
        return ip in self.data
