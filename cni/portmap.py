"""`PortMapping`: one published port, the one type from `minidocker run -p`
to the firewall rule cni-bridge renders.

The `portMappings` capability (CNI's CONVENTIONS.md) carries it between
runtime and plugin as `{"hostPort", "containerPort", "protocol", "hostIP"}`:
`to_cni()` writes that entry, `from_cni()` reads one back (unchecked: a
plugin validates what it receives). A plain class, not a dataclass: it is
on `run`'s path.
"""
from __future__ import annotations


class PortMapping:
    """container_port, host_port (0: choose a free one), protocol, host_ip
    ("": every address of the host) and host_range ((lo, hi) for
    `-p LO-HI:PORT`: the first free host port of the range)."""

    __slots__ = ("container_port", "host_port", "protocol", "host_ip", "host_range")

    def __init__(self, container_port: int, host_port: int = 0, protocol: str = "tcp",
                 host_ip: str = "", host_range: tuple[int, int] | None = None):
        self.container_port = container_port
        self.host_port = host_port
        self.protocol = protocol
        self.host_ip = host_ip
        self.host_range = host_range

    def _key(self) -> tuple:
        return (self.container_port, self.host_port, self.protocol, self.host_ip, self.host_range)

    def __eq__(self, other) -> bool:
        return isinstance(other, PortMapping) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "PortMapping(%r, %r, %r, %r, %r)" % self._key()

    def __str__(self) -> str:
        ip = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
        host = f"{ip}:{self.host_port}" if ip else str(self.host_port)
        return f"{host}->{self.container_port}/{self.protocol}"

    @property
    def family(self) -> int | None:
        """The address family its host address pins it to (None: both)."""
        return (6 if ":" in self.host_ip else 4) if self.host_ip else None

    def docker_key(self) -> str:
        """Docker's key for the container side: "80/tcp"."""
        return f"{self.container_port}/{self.protocol}"

    def to_cni(self) -> dict:
        """The `portMappings` capability entry."""
        out = {"hostPort": self.host_port, "containerPort": self.container_port,
               "protocol": self.protocol}
        if self.host_ip:
            out["hostIP"] = self.host_ip
        return out

    @classmethod
    def from_cni(cls, entry: dict) -> "PortMapping":
        return cls(entry["containerPort"], entry["hostPort"], entry.get("protocol") or "tcp",
                   entry.get("hostIP") or "")
