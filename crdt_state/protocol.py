"""The y-websocket wire protocol: one message per binary frame.

    frame   = varuint(type) body
    sync    = varuint(step1 | step2 | update) varbytes(state vector or update)
    awareness = varbytes(awareness update)
    query-awareness = (nothing)

Decoding is strict: a frame must hold exactly one well-formed message, or ProtocolError.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import orjson

from .lib0 import MalformedUpdate, read_uint


class MessageType(IntEnum):
    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3


class SyncType(IntEnum):
    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


class ProtocolError(ValueError):
    """A frame that is not a well-formed y-websocket message."""


@dataclass(frozen=True, slots=True)
class Message:
    type: MessageType
    sync_type: SyncType | None
    payload: bytes


# lib0 var-uints carry at most 53 bits (JS safe integers): 8 bytes of 7 bits.


def read_var_uint(buf: bytes, pos: int) -> tuple[int, int]:
    """lib0's var-uint (lib0.read_uint), its errors told as the protocol's."""
    try:
        return read_uint(buf, pos)
    except IndexError:
        raise ProtocolError("truncated message: a length or number is cut off") from None
    except MalformedUpdate:
        raise ProtocolError("malformed message: a number is longer than 53 bits") from None


def read_var_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    length, pos = read_var_uint(buf, pos)
    end = pos + length
    if end > len(buf):
        raise ProtocolError(f"truncated message: {length} bytes announced, {len(buf) - pos} sent")
    return buf[pos:end], end


def read_var_string(buf: bytes, pos: int) -> tuple[str, int]:
    raw, pos = read_var_bytes(buf, pos)
    try:
        return raw.decode("utf-8"), pos
    except UnicodeDecodeError:
        raise ProtocolError("malformed message: a string is not valid UTF-8") from None


def write_var_uint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def write_var_bytes(data: bytes) -> bytes:
    return write_var_uint(len(data)) + data


def decode(frame: bytes) -> Message:
    kind, pos = read_var_uint(frame, 0)
    if kind == MessageType.SYNC:
        sub, pos = read_var_uint(frame, pos)
        if sub not in (SyncType.STEP1, SyncType.STEP2, SyncType.UPDATE):
            raise ProtocolError(f"unknown sync message type {sub}")
        payload, pos = read_var_bytes(frame, pos)
        message = Message(MessageType.SYNC, SyncType(sub), payload)
    elif kind == MessageType.AWARENESS:
        payload, pos = read_var_bytes(frame, pos)
        message = Message(MessageType.AWARENESS, None, payload)
    elif kind == MessageType.QUERY_AWARENESS:
        message = Message(MessageType.QUERY_AWARENESS, None, b"")
    else:
        raise ProtocolError(f"unknown message type {kind}")
    if pos != len(frame):
        raise ProtocolError(f"malformed message: {len(frame) - pos} unexpected trailing bytes")
    return message


def sync_step1(state_vector: bytes) -> bytes:
    return b"\x00\x00" + write_var_bytes(state_vector)


def sync_step2(update: bytes) -> bytes:
    return b"\x00\x01" + write_var_bytes(update)


def sync_update(update: bytes) -> bytes:
    return b"\x00\x02" + write_var_bytes(update)


def awareness_message(awareness_update: bytes) -> bytes:
    return b"\x01" + write_var_bytes(awareness_update)


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    client_id: int
    clock: int
    state: str  # the JSON text as sent; "null" means the client left


def decode_awareness(update: bytes) -> list[AwarenessEntry]:
    count, pos = read_var_uint(update, 0)
    entries = []
    for _ in range(count):
        client_id, pos = read_var_uint(update, pos)
        clock, pos = read_var_uint(update, pos)
        state, pos = read_var_string(update, pos)
        try:
            orjson.loads(state)
        except orjson.JSONDecodeError:
            raise ProtocolError("malformed awareness update: a state is not JSON") from None
        entries.append(AwarenessEntry(client_id, clock, state))
    if pos != len(update):
        raise ProtocolError("malformed awareness update: unexpected trailing bytes")
    return entries


def encode_awareness(entries: list[AwarenessEntry]) -> bytes:
    parts = [write_var_uint(len(entries))]
    for entry in entries:
        parts.append(write_var_uint(entry.client_id))
        parts.append(write_var_uint(entry.clock))
        parts.append(write_var_bytes(entry.state.encode("utf-8")))
    return b"".join(parts)


def decode_state_vector(encoded: bytes) -> dict[int, int]:
    """A Yjs state vector as {client: clock}: its encoding has no fixed order, so two equal
    vectors may differ byte for byte."""
    count, pos = read_var_uint(encoded, 0)
    vector: dict[int, int] = {}
    for _ in range(count):
        client, pos = read_var_uint(encoded, pos)
        vector[client], pos = read_var_uint(encoded, pos)
    return vector
