"""The spec's error type and well-known codes (0-99 reserved by the spec)."""
from __future__ import annotations

INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
NOT_AVAILABLE_LIMITED = 51
# Plugin-specific codes start at 100.
PLUGIN_FAILURE = 100


class CNIError(Exception):
    """An error as the spec prints it: {cniVersion, code, msg, details}."""

    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code = int(code)
        self.msg = msg
        self.details = details

    def __str__(self) -> str:
        return f"{self.msg}; {self.details}" if self.details else self.msg

    def __repr__(self) -> str:
        return f"CNIError({self.code}, {self.msg!r}, {self.details!r})"

    def to_dict(self, cni_version: str) -> dict:
        out = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "CNIError":
        """Read a plugin's error object; anything malformed is itself an error."""
        if not isinstance(data, dict) or not isinstance(data.get("code"), int):
            raise ValueError(f"not a CNI error object: {data!r}"[:200])
        return cls(data["code"], str(data.get("msg", "")), str(data.get("details", "") or ""))
