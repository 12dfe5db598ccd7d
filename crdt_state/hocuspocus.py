"""The Hocuspocus wire protocol (`@hocuspocus/provider` 3): many documents over one socket.

Every binary frame is one message about one document, named first:

    frame     = varstring(document name) varuint(type) body
    0 sync    = a y-websocket sync message: varuint(step1 | step2 | update) varbytes(...)
    1 awareness       = varbytes(awareness update)
    2 auth    = varuint(0 token) varstring(token)               client -> server
              | varuint(1 permission denied) varstring(reason)  server -> client
              | varuint(2 authenticated) varstring(scope)       server -> client
    3 query-awareness = (nothing)
    4 sync-reply      = as 0 (a server's reply; the stock provider reads only 0)
    5 stateless       = varstring(payload)
    6 broadcast-stateless = varstring(payload)
    7 close   = (nothing) client -> server | varstring(reason) server -> client
    8 sync-status     = varuint(1 applied | 0 not applied)      server -> client

After the name and type, sync (0, 4), awareness (1) and query-awareness (3) are exactly a
y-websocket frame (protocol.py): they are decoded by it. Pure functions, no I/O; decoding is
strict (one well-formed message per frame, or ProtocolError). `split` reads the name alone:
a frame whose name cannot be read is the socket's error, anything after it the document's.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from .protocol import (
    Message,
    MessageType,
    ProtocolError,
    decode,
    read_var_string,
    read_var_uint,
    write_var_bytes,
    write_var_uint,
)

PATH = "/ws/hocuspocus"
SCOPE_READ_ONLY = "readonly"
SCOPE_READ_WRITE = "read-write"


class FrameType(IntEnum):
    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3
    SYNC_REPLY = 4
    STATELESS = 5
    BROADCAST_STATELESS = 6
    CLOSE = 7
    SYNC_STATUS = 8


class AuthType(IntEnum):
    TOKEN = 0
    PERMISSION_DENIED = 1
    AUTHENTICATED = 2


# Types whose body is a y-websocket message (after the name, the type byte included).
_YJS_TYPES = {
    FrameType.SYNC: MessageType.SYNC,
    FrameType.AWARENESS: MessageType.AWARENESS,
    FrameType.QUERY_AWARENESS: MessageType.QUERY_AWARENESS,
    FrameType.SYNC_REPLY: MessageType.SYNC,
}


@dataclass(frozen=True, slots=True)
class Incoming:
    """One client message about one document: `message` for the y-websocket kinds (sync,
    awareness, query-awareness), `text` for auth (the token) and stateless (the payload)."""

    type: FrameType
    message: Message | None = None
    text: str | None = None


def split(frame: bytes) -> tuple[str, int]:
    """The document a frame is about, and where its type starts (ProtocolError if unreadable)."""
    name, pos = read_var_string(frame, 0)
    if not name:
        raise ProtocolError("a Hocuspocus message names no document")
    return name, pos


def decode_body(frame: bytes, pos: int) -> Incoming:
    """The message after the document name (`pos`, from `split`); ProtocolError if malformed."""
    kind, after = read_var_uint(frame, pos)
    if kind in _YJS_TYPES:
        yjs = _YJS_TYPES[FrameType(kind)]
        # The y-websocket frame is the same bytes with the y-websocket type in front.
        return Incoming(FrameType(kind), decode(write_var_uint(yjs) + frame[after:]))
    if kind == FrameType.AUTH:
        auth, after = read_var_uint(frame, after)
        if auth != AuthType.TOKEN:
            raise ProtocolError(f"a client sends auth messages of type token (0), not {auth}")
        token, after = read_var_string(frame, after)
        _no_trailing(frame, after)
        return Incoming(FrameType.AUTH, text=token)
    if kind in (FrameType.STATELESS, FrameType.BROADCAST_STATELESS):
        payload, after = read_var_string(frame, after)
        _no_trailing(frame, after)
        return Incoming(FrameType(kind), text=payload)
    if kind == FrameType.CLOSE:
        _no_trailing(frame, after)
        return Incoming(FrameType.CLOSE)
    raise ProtocolError(f"unknown Hocuspocus message type {kind} from a client")


def _no_trailing(frame: bytes, pos: int) -> None:
    if pos != len(frame):
        raise ProtocolError(f"malformed message: {len(frame) - pos} unexpected trailing bytes")


# -- what the server sends ---------------------------------------------------------------------


def prefix(document: str) -> bytes:
    """The bytes every message about `document` starts with (its name)."""
    return write_var_bytes(document.encode("utf-8"))


def authenticated(prefix: bytes, read_only: bool) -> bytes:
    scope = SCOPE_READ_ONLY if read_only else SCOPE_READ_WRITE
    return prefix + b"\x02\x02" + write_var_bytes(scope.encode())


def permission_denied(prefix: bytes, reason: str) -> bytes:
    return prefix + b"\x02\x01" + write_var_bytes(reason.encode("utf-8"))


def sync_status(prefix: bytes, applied: bool) -> bytes:
    return prefix + (b"\x08\x01" if applied else b"\x08\x00")


def close(prefix: bytes, reason: str) -> bytes:
    return prefix + b"\x07" + write_var_bytes(reason.encode("utf-8"))
