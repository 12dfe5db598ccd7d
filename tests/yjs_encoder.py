"""Craft Yjs v1 updates by hand, for tests of the update decoder and guard.

Real clients never send most of what this builds (20,000 nested maps, bigints, NaN, XML, a
delete of a server-owned item...): that is the point. Valid shapes apply in pycrdt as expected
(tests/test_update_guard.py checks that).

    b = UpdateBuilder()
    m = b.item(7, 0, TypeRef(TYPE_MAP), parent="$state", parent_sub="filter")
    b.item(7, 1, AnyContent([1]), parent=m, parent_sub="value")
    update = b.encode()
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from crdt_state.lib0 import (
    UNDEFINED,
)
from crdt_state.update_structs import (
    ANY,
    BINARY,
    DELETED,
    DOC,
    EMBED,
    FORMAT,
    GC,
    JSON,
    SKIP,
    STRING,
    TYPE,
    TYPE_MAP,
    TYPE_XML_ELEMENT,
    TYPE_XML_HOOK,
    utf16_length,
)

ID = tuple[int, int]


# --- lib0 primitives ---------------------------------------------------------------------------


def var_uint(value: int) -> bytes:
    if value < 0:
        raise ValueError("var_uint of a negative number")
    out = bytearray()
    while value >= 0x80:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def var_int(value: int) -> bytes:
    negative = value < 0
    value = -value if negative else value
    first = (value & 0x3F) | (0x40 if negative else 0)
    value >>= 6
    if not value:
        return bytes([first])
    out = bytearray([first | 0x80])
    while value >= 0x80:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def var_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return var_uint(len(raw)) + raw


def var_bytes(raw: bytes) -> bytes:
    return var_uint(len(raw)) + raw


class BigInt(int):
    """Encode this integer as a lib0 bigint (int64, tag 122)."""


class Float32(float):
    """Encode this number as a float32 (tag 124)."""


class Float64(float):
    """Encode this number as a float64 (tag 123), even when it is integral."""


@dataclass(frozen=True)
class Raw:
    """Bytes written as they are, in place of an Any value."""

    data: bytes


def any_value(value: Any) -> bytes:
    """lib0 writeAny (recursive: only for shallow values; see nested_any for deep ones)."""
    if value is UNDEFINED:
        return b"\x7f"
    if value is None:
        return b"\x7e"
    if value is True:
        return b"\x78"
    if value is False:
        return b"\x79"
    if isinstance(value, Raw):
        return value.data
    if isinstance(value, BigInt):
        return b"\x7a" + struct.pack(">q", int(value))
    if isinstance(value, int):
        return b"\x7d" + var_int(value)
    if isinstance(value, Float32):
        return b"\x7c" + struct.pack(">f", value)
    if isinstance(value, float):
        if not isinstance(value, Float64) and math.isfinite(value) and value == int(value):
            if abs(value) <= 2**31 - 1:
                return b"\x7d" + var_int(int(value))
        return b"\x7b" + struct.pack(">d", value)
    if isinstance(value, str):
        return b"\x77" + var_string(value)
    if isinstance(value, bytes | bytearray):
        return b"\x74" + var_bytes(bytes(value))
    if isinstance(value, dict):
        out = bytearray(b"\x76" + var_uint(len(value)))
        for key, item in value.items():
            out += var_string(key) + any_value(item)
        return bytes(out)
    if isinstance(value, list | tuple):
        out = bytearray(b"\x75" + var_uint(len(value)))
        for item in value:
            out += any_value(item)
        return bytes(out)
    raise TypeError(f"no lib0 Any encoding for {type(value).__name__}")


def nested_any(depth: int, leaf: Any = 1, *, key: str | None = "k") -> Raw:
    """An Any value nested ``depth`` containers deep (objects with ``key``, or arrays)."""
    if key is None:
        return Raw(b"\x75\x01" * depth + any_value(leaf))
    return Raw((b"\x76\x01" + var_string(key)) * depth + any_value(leaf))


# --- contents ----------------------------------------------------------------------------------


class Content:
    kind: int

    def encode(self) -> bytes:
        raise NotImplementedError

    @property
    def length(self) -> int:
        return 1


@dataclass
class AnyContent(Content):
    values: Sequence[Any]
    kind: int = ANY

    def encode(self) -> bytes:
        return var_uint(len(self.values)) + b"".join(any_value(v) for v in self.values)

    @property
    def length(self) -> int:
        return len(self.values)


@dataclass
class StringContent(Content):
    text: str
    kind: int = STRING

    def encode(self) -> bytes:
        return var_string(self.text)

    @property
    def length(self) -> int:
        return utf16_length(self.text)


@dataclass
class TypeRef(Content):
    ref: int = TYPE_MAP
    name: str | None = None
    kind: int = TYPE

    def encode(self) -> bytes:
        out = var_uint(self.ref)
        if self.ref in (TYPE_XML_ELEMENT, TYPE_XML_HOOK):
            out += var_string(self.name or "p")
        return out


@dataclass
class DeletedContent(Content):
    count: int = 1
    kind: int = DELETED

    def encode(self) -> bytes:
        return var_uint(self.count)

    @property
    def length(self) -> int:
        return self.count


@dataclass
class BinaryContent(Content):
    data: bytes = b"\x00"
    kind: int = BINARY

    def encode(self) -> bytes:
        return var_bytes(self.data)


@dataclass
class JSONContent(Content):
    texts: Sequence[str] = ('"x"',)
    kind: int = JSON

    def encode(self) -> bytes:
        return var_uint(len(self.texts)) + b"".join(var_string(t) for t in self.texts)

    @property
    def length(self) -> int:
        return len(self.texts)


@dataclass
class EmbedContent(Content):
    json_text: str = '{"image":"x.png"}'
    kind: int = EMBED

    def encode(self) -> bytes:
        return var_string(self.json_text)


@dataclass
class FormatContent(Content):
    key: str = "bold"
    json_text: str = "true"
    kind: int = FORMAT

    def encode(self) -> bytes:
        return var_string(self.key) + var_string(self.json_text)


@dataclass
class DocContent(Content):
    guid: str = "sub"
    opts: Any = field(default_factory=dict)
    kind: int = DOC

    def encode(self) -> bytes:
        return var_string(self.guid) + any_value(self.opts)


@dataclass
class RawContent(Content):
    """Any info kind with hand-written content bytes (for malformed updates)."""

    kind: int
    data: bytes
    count: int = 1

    def encode(self) -> bytes:
        return self.data

    @property
    def length(self) -> int:
        return self.count


# --- the update --------------------------------------------------------------------------------


@dataclass
class _Struct:
    clock: int
    length: int
    data: bytes


class UpdateBuilder:
    """Collect structs per client, then ``encode()`` a v1 update.

    Structs of one client must be added in clock order without gaps (use ``skip`` for one);
    ``item`` returns the new item's id so that it can be used as a parent or origin.
    """

    def __init__(self) -> None:
        self.clients: dict[int, list[_Struct]] = {}
        self.deletes: list[tuple[int, int, int]] = []

    def next_clock(self, client: int) -> int:
        structs = self.clients.get(client)
        return structs[-1].clock + structs[-1].length if structs else 0

    def _add(self, client: int, clock: int | None, length: int, data: bytes) -> ID:
        structs = self.clients.setdefault(client, [])
        if clock is None:
            clock = self.next_clock(client)
        elif structs and clock != self.next_clock(client):
            raise ValueError(f"client {client}: clock {clock} is not {self.next_clock(client)}")
        structs.append(_Struct(clock, length, data))
        return (client, clock)

    def item(
        self,
        client: int,
        clock: int | None,
        content: Content,
        *,
        origin: ID | None = None,
        right_origin: ID | None = None,
        parent: str | ID | None = None,
        parent_sub: str | None = None,
        info_extra: int = 0,
    ) -> ID:
        info = (content.kind & 0x1F) | info_extra
        out = bytearray()
        if origin is not None:
            info |= 0x80
            out += var_uint(origin[0]) + var_uint(origin[1])
        if right_origin is not None:
            info |= 0x40
            out += var_uint(right_origin[0]) + var_uint(right_origin[1])
        if parent_sub is not None:
            info |= 0x20
        if origin is None and right_origin is None:
            if isinstance(parent, str):
                out += b"\x01" + var_string(parent)
            elif parent is not None:
                out += b"\x00" + var_uint(parent[0]) + var_uint(parent[1])
            else:
                raise ValueError("an item without origins needs a parent")
            if parent_sub is not None:
                out += var_string(parent_sub)
        out += content.encode()
        return self._add(client, clock, content.length, bytes([info]) + bytes(out))

    def gc(self, client: int, clock: int | None, length: int) -> ID:
        return self._add(client, clock, length, bytes([GC]) + var_uint(length))

    def skip(self, client: int, clock: int | None, length: int) -> ID:
        return self._add(client, clock, length, bytes([SKIP]) + var_uint(length))

    def delete(self, client: int, clock: int, length: int = 1) -> None:
        self.deletes.append((client, clock, length))

    def encode(self, *, trailing: bytes = b"") -> bytes:
        out = bytearray(var_uint(len(self.clients)))
        for client in sorted(self.clients, reverse=True):  # as Yjs writes them
            structs = self.clients[client]
            out += var_uint(len(structs)) + var_uint(client) + var_uint(structs[0].clock)
            for s in structs:
                out += s.data
        by_client: dict[int, list[tuple[int, int]]] = {}
        for client, clock, length in self.deletes:
            by_client.setdefault(client, []).append((clock, length))
        out += var_uint(len(by_client))
        for client, ranges in by_client.items():
            out += var_uint(client) + var_uint(len(ranges))
            for clock, length in ranges:
                out += var_uint(clock) + var_uint(length)
        return bytes(out) + trailing


# --- ready-made shapes -------------------------------------------------------------------------


def nested_maps(
    depth: int,
    *,
    client: int = 1000,
    clock: int = 0,
    parent: str | ID = "$state",
    key: str = "k",
    leaf: Any = None,
    first_key: str | None = None,
) -> bytes:
    """One update creating ``depth`` Y.Maps, each the value of ``key`` in the previous one.

    The first hangs under ``parent`` (a root name or a type id), as its ``first_key`` (default:
    ``key``); with ``leaf`` the deepest map also gets ``key: leaf``.
    """
    b = UpdateBuilder()
    at: str | ID = parent
    for i in range(depth):
        sub = first_key if i == 0 and first_key is not None else key
        at = b.item(client, clock + i, TypeRef(TYPE_MAP), parent=at, parent_sub=sub)
    if leaf is not None:
        b.item(client, None, AnyContent([leaf]), parent=at, parent_sub=key)
    return b.encode()


def set_value(
    value: Any,
    *,
    client: int = 1000,
    clock: int = 0,
    parent: str | ID = "$state",
    key: str = "k",
) -> bytes:
    """One update setting ``parent[key] = value`` (a map entry holding one Any value)."""
    b = UpdateBuilder()
    b.item(client, clock, AnyContent([value]), parent=parent, parent_sub=key)
    return b.encode()


def deletion(client: int, clock: int, length: int = 1) -> bytes:
    """An update that only deletes ``length`` elements from ``(client, clock)``."""
    b = UpdateBuilder()
    b.delete(client, clock, length)
    return b.encode()
