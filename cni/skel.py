"""Plugin-side command dispatch and error format, written once (Go's skel).

A plugin hands `main` one function per command; `main` reads the environment
and stdin, answers VERSION, checks the config's version, calls the handler and
prints its result in the config's version, or the error as JSON on stdout.
"""
from __future__ import annotations

import sys

from cni import fastjson as json
from cni import version as _v
from cni.conf import decode_json, plugin_version
from cni.env import PluginArgs, environ as process_environ, validate_network_name
from cni.errors import CNIError, INCOMPATIBLE_VERSION

# A handler is called as handler(args: PluginArgs, conf: dict) and returns a
# Result (ADD) or None.

# The lowest config version that allows each command.
MIN_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}
INTERNAL = 999  # libcni's ErrInternal: a plugin bug surfaced as an error


def _emit(obj: dict, out) -> None:
    out.write(json.dumps(obj))
    out.write("\n")
    out.flush()


def dispatch(handlers: dict, environ, stdin: bytes,
             supported: tuple[str, ...] = _v.SUPPORTED) -> tuple[int, dict | None]:
    """Run one command; returns (exit code, object to print or None)."""
    conf_version = _v.CURRENT
    try:
        args = PluginArgs.from_environ(environ, stdin)
        if args.command == "VERSION":
            asked = _v.CURRENT
            if stdin.strip():
                try:
                    asked = decode_json(stdin).get("cniVersion") or _v.CURRENT
                except CNIError:
                    pass
            return 0, {"cniVersion": asked, "supportedVersions": list(supported)}
        conf = decode_json(stdin)
        conf_version = plugin_version(conf)
        if conf_version not in supported:
            raise CNIError(INCOMPATIBLE_VERSION, "incompatible CNI versions",
                           f"config is {conf_version!r}, plugin supports {list(supported)}")
        floor = MIN_VERSION.get(args.command)
        if floor and not _v.at_least(conf_version, floor):
            raise CNIError(INCOMPATIBLE_VERSION,
                           f"config version does not allow {args.command}",
                           f"{args.command} needs cniVersion {floor} or later, config is {conf_version}")
        validate_network_name(conf.get("name", ""))
        handler = handlers.get(args.command)
        if handler is None:
            raise CNIError(4, f"unknown CNI_COMMAND: {args.command}")
        result = handler(args, conf)
        if result is None or args.command != "ADD":
            return 0, None
        return 0, result.to_dict(conf_version)
    except CNIError as err:
        return 1, err.to_dict(conf_version)
    except Exception as exc:  # a bug still answers in the protocol's format
        return 1, CNIError(INTERNAL, f"{type(exc).__name__}: {exc}").to_dict(conf_version)


def main(handlers: dict, supported: tuple[str, ...] = _v.SUPPORTED,
         about: str = "") -> None:
    """Entry point of a plugin executable."""
    environ = process_environ()
    if not environ.get("CNI_COMMAND") and about:
        sys.stderr.write(about + "\n")
        sys.exit(0)
    stdin = b"" if environ.get("CNI_COMMAND") == "VERSION" and sys.stdin.isatty() else sys.stdin.buffer.read()
    code, out = dispatch(handlers, environ, stdin, supported)
    if out is not None:
        _emit(out, sys.stdout)
    sys.exit(code)
