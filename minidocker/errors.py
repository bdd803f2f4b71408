"""The one exception type users see: a one-line message and an exit code."""
from __future__ import annotations


class MinidockerError(Exception):
    """A user-facing failure. code follows Docker: 125 = could not create or
    start the container, 126 = command cannot be invoked, 127 = not found,
    1 = any other command failed."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


class NotFound(MinidockerError):
    pass


class Conflict(MinidockerError):
    pass
