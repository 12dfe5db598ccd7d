"""The one rule for workspace and panel ids, on every face (REST, snapshots, both WebSockets).

An id has 1 to 200 characters and is refused when it is `.` or `..` (path segments with a
meaning of their own: a workspace named `..` would be a folder outside the Git root), blank or
whitespace only, or holds a control character (C0, DEL, C1), a Unicode bidi override or
isolate (U+202A–U+202E, U+2066–U+2069: they make a log line or a listing read differently from
what it holds) or a lone surrogate (no UTF-8 form). A workspace id has no ':' (Redis keys
`state:{ws}:{panel}` must not collide).

Ids arrive percent-encoded in the URL path. `decode_path` reads the raw bytes of the path
(`scope["raw_path"]`) strictly: an escape that is not UTF-8 (`%FF%FE`) is refused instead of
becoming U+FFFD, which would let two different paths name one id.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

MAX_ID_LENGTH = 200
BIDI_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))
# Segments after these prefixes are ids: (prefix, how many ids follow it).
ID_PATHS = (("/api/state/", 2), ("/ws/yjs/", 2), ("/ws/state/", 1))


def _refused(ch: str) -> str | None:
    code = ord(ch)
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return "control characters"
    if ch in BIDI_CONTROLS:
        return "Unicode bidi override or isolate characters (U+202A-U+202E, U+2066-U+2069)"
    if 0xD800 <= code <= 0xDFFF:
        return "lone surrogates (not valid UTF-8)"
    return None


def check_id(name: str, value: str) -> None:
    """ValueError, with why, unless `value` is a valid id (`name`: "workspace" or "panel")."""
    if not 0 < len(value) <= MAX_ID_LENGTH:
        raise ValueError(f"A {name} id has 1 to {MAX_ID_LENGTH} characters.")
    if value in (".", ".."):
        raise ValueError(f"A {name} id cannot be '.' or '..'.")
    if value.isspace():
        raise ValueError(f"A {name} id cannot be blank.")
    if value.isascii() and value.isprintable():
        return  # the usual id: no control character; bidi controls and surrogates are not ASCII
    for ch in value:
        why = _refused(ch)
        if why is not None:
            raise ValueError(f"A {name} id cannot hold {why}.")


def check_workspace_id(value: str) -> None:
    check_id("workspace", value)
    if ":" in value:
        raise ValueError("A workspace id cannot contain ':'.")


def decode_path(scope: MutableMapping[str, Any]) -> str:
    """The request path, decoded strictly from its raw bytes (ValueError if not UTF-8)."""
    raw = scope.get("raw_path")
    if not isinstance(raw, bytes | bytearray):
        return str(scope.get("path", ""))  # a server that keeps no raw path: nothing to check
    raw = bytes(raw).split(b"?", 1)[0]
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(
            "The path is not valid UTF-8 once its %-escapes are decoded; "
            "percent-encode ids as UTF-8."
        ) from None


def check_path_ids(scope: MutableMapping[str, Any]) -> None:
    """Check the ids of an id-carrying path (REST, snapshots, both WebSockets); ValueError."""
    path = decode_path(scope)
    for prefix, count in ID_PATHS:
        if path.startswith(prefix):
            segments = path[len(prefix) :].split("/")
            check_workspace_id(segments[0])
            if count > 1 and len(segments) > 1:
                check_id("panel", segments[1])
            return
