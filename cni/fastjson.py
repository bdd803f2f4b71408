"""`loads` and `dumps` with the standard library's exact semantics, without
importing `json`.

Why: `json.decoder` and `json.encoder` import `re` (and with it `enum`,
`functools`, `collections`) and compile their patterns at import, ~5-8 ms of
a plugin exec'd once per container. The parsing and encoding are the
stdlib's own C accelerator `_json` (the scanner and encoder `json` itself
uses), driven here as `json.loads(s)` / `json.dumps(obj)` with default
arguments drive it; only the whitespace skip and the byte-encoding
detection, which `json` does in Python, are written out. Errors are
`json.JSONDecodeError` with `json`'s messages (`json` is imported then:
only a failing call pays for it). Without `_json` (another interpreter) this
is plain `json`.
"""
from __future__ import annotations

import codecs

try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None

if _json is None:  # pragma: no cover
    from json import dumps, loads  # noqa: F401
else:
    _WS = " \t\n\r"
    _INF = float("inf")
    _CONSTANTS = {"-Infinity": -_INF, "Infinity": _INF, "NaN": float("nan")}

    class _Context:
        """What `_json.make_scanner` reads from a JSONDecoder: its defaults."""
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = _CONSTANTS.__getitem__

    _scan = _json.make_scanner(_Context())

    def _error(msg: str, doc: str, pos: int) -> Exception:
        from json import JSONDecodeError
        return JSONDecodeError(msg, doc, pos)

    def _skip_ws(s: str, i: int) -> int:
        n = len(s)
        while i < n and s[i] in _WS:
            i += 1
        return i

    def _detect_encoding(b) -> str:
        """json.detect_encoding: a BOM, or where the NUL bytes are."""
        if b.startswith((codecs.BOM_UTF32_BE, codecs.BOM_UTF32_LE)):
            return "utf-32"
        if b.startswith((codecs.BOM_UTF16_BE, codecs.BOM_UTF16_LE)):
            return "utf-16"
        if b.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if len(b) >= 4:
            if not b[0]:
                return "utf-16-be" if b[1] else "utf-32-be"
            if not b[1]:
                return "utf-16-le" if b[2] or b[3] else "utf-32-le"
        elif len(b) == 2:
            if not b[0]:
                return "utf-16-be"
            if not b[1]:
                return "utf-16-le"
        return "utf-8"

    def loads(s):
        """json.loads(s) with default arguments."""
        if isinstance(s, str):
            if s.startswith("\ufeff"):
                raise _error("Unexpected UTF-8 BOM (decode using utf-8-sig)", s, 0)
        else:
            if not isinstance(s, (bytes, bytearray)):
                raise TypeError(f"the JSON object must be str, bytes or bytearray, "
                                f"not {s.__class__.__name__}")
            s = s.decode(_detect_encoding(s), "surrogatepass")
        try:
            obj, end = _scan(s, _skip_ws(s, 0))
        except StopIteration as err:
            raise _error("Expecting value", s, err.value) from None
        except SystemError:
            # The scanner takes JSONDecodeError from sys.modules["json.decoder"]
            # and fails this way while `json` was never imported: import it
            # and parse again, now to raise json's own error.
            import json.decoder  # noqa: F401
            obj, end = _scan(s, _skip_ws(s, 0))
        end = _skip_ws(s, end)
        if end != len(s):
            raise _error("Extra data", s, end)
        return obj

    def _default(o):
        raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")

    def dumps(obj, *, sort_keys: bool = False, separators: tuple[str, str] = (", ", ": ")) -> str:
        """json.dumps(obj) (ensure_ascii, no indent), with `sort_keys` and
        `separators` (item, key) as json's."""
        if isinstance(obj, str):
            return _json.encode_basestring_ascii(obj)
        encode = _json.make_encoder({}, _default, _json.encode_basestring_ascii, None,
                                    separators[1], separators[0], sort_keys, False, True)
        return "".join(encode(obj, 0))
