"""Plugin-specific error codes (100+) and shorthands for the spec's codes."""
from __future__ import annotations

from cni.errors import (CNIError, INVALID_ENVIRONMENT, INVALID_NETWORK_CONFIG,  # noqa: F401
                        IO_FAILURE, PLUGIN_FAILURE, UNSUPPORTED_FIELD, TRY_AGAIN_LATER)

# 100: a link, address, route or rule operation failed (or CHECK found it missing).
# 101: no address can be handed out (pool exhausted, requested IP taken,
#      duplicate allocation).
ADDRESS_UNAVAILABLE = 101


def bad_config(msg: str, details: str = "") -> CNIError:
    return CNIError(INVALID_NETWORK_CONFIG, msg, details)


def failure(msg: str, details: str = "") -> CNIError:
    return CNIError(PLUGIN_FAILURE, msg, details)
