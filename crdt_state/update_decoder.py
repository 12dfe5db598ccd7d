"""A strict, pure-Python decoder of the Yjs update format v1.

y-websocket clients send this format, and pycrdt's ``get_update()`` / ``event.update`` produce it.
Some updates crash or poison the native library, so an update is decoded here and inspected
(``update_guard``) before pycrdt sees it. The layout, in lib0 encoding (``lib0``):

    update         := struct-section delete-set
    struct-section := count { num-structs client start-clock struct* }
    struct         := info (GC: len | Skip: len | Item: [origin] [right-origin] [parent] content)
    delete-set     := count { client count { clock len } }

Anything malformed raises :class:`MalformedUpdate` with a short reason, anything beyond a limit
too (clocks, Any depth). JSON, Embed and Format contents are kept as raw JSON text: parsing them
(``json.loads``) would recurse.
"""

from __future__ import annotations

from typing import Any, Final

from .lib0 import (
    MAX_SAFE_INTEGER,
    MalformedUpdate,
    read_any,
    read_bytes,
    read_string,
    read_uint,
)
from .update_structs import (
    ANY,
    BINARY,
    DELETED,
    DOC,
    EMBED,
    FORMAT,
    GC,
    JSON,
    KIND_NAMES,
    SKIP,
    STRING,
    TYPE,
    TYPE_XML_ELEMENT,
    TYPE_XML_HOOK,
    TYPE_XML_TEXT,
    DecodedUpdate,
    Section,
    Struct,
    TypeContent,
    utf16_length,
)

__all__ = ["DEFAULT_MAX_ANY_DEPTH", "decode_update"]

DEFAULT_MAX_ANY_DEPTH: Final = 256
"""Deepest lib0 ``Any`` value accepted by default ([] or {} is 1, [[]] is 2...)."""

_BIT_ORIGIN: Final = 0x80
_BIT_RIGHT_ORIGIN: Final = 0x40
_BIT_PARENT_SUB: Final = 0x20

ID = tuple[int, int]


def decode_update(
    data: bytes,
    *,
    max_any_depth: int = DEFAULT_MAX_ANY_DEPTH,
    max_clock: int = MAX_SAFE_INTEGER,
    allow_empty_strings: bool = False,
) -> DecodedUpdate:
    """Decode a Yjs v1 update. Raises :class:`MalformedUpdate` on anything malformed.

    ``max_any_depth``: the deepest Any value accepted (:class:`AnyTooDeep` beyond).
    ``max_clock``: the highest clock accepted anywhere: struct ends, the clocks of origins,
    right origins and parent ids, and the ends of deleted ranges (yrs 0.28 keeps clocks in 32
    bits and truncates larger ones: pass ``2**32 - 1`` for updates meant for pycrdt).
    ``allow_empty_strings``: accept String items of length 0. Yjs never writes them, but yrs
    0.28 does after a split inside a surrogate pair (its ``get_update`` can hold one); every
    other zero-length struct is always refused.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    try:
        sections, pos = _sections(data, max_any_depth, max_clock, allow_empty_strings)
        deletes, pos = _delete_set(data, pos, max_clock)
    except IndexError:
        raise MalformedUpdate("truncated update") from None
    except RecursionError:  # pragma: no cover - nothing recurses; belt and braces
        raise MalformedUpdate("update nests too deeply") from None
    if pos != len(data):
        raise MalformedUpdate(f"{len(data) - pos} trailing bytes after the delete set", pos)
    return DecodedUpdate(sections, deletes)


def _sections(
    data: bytes, max_any_depth: int, max_clock: int, allow_empty_strings: bool
) -> tuple[list[Section], int]:
    """The struct sections (one per client, never two for the same client) and their structs.

    GC and Skip structs are a length; items are read by :func:`_item`.
    """
    size = len(data)
    num_clients, pos = read_uint(data, 0)
    if num_clients * 3 > size - pos:
        raise MalformedUpdate("more client sections announced than bytes", 0)
    sections: list[Section] = []
    seen_clients: set[int] = set()
    for _ in range(num_clients):
        at = pos
        num_structs, pos = read_uint(data, pos)
        client_at = pos
        client, pos = read_uint(data, pos)
        known = data[client_at:pos]
        clock, pos = read_uint(data, pos)
        if num_structs * 2 > size - pos:
            raise MalformedUpdate("more structs announced than bytes", at)
        if clock > max_clock:
            raise MalformedUpdate(f"clock above {max_clock}", at)
        if client in seen_clients:
            raise MalformedUpdate(f"client {client} has two struct sections", at)
        seen_clients.add(client)
        structs: list[Struct] = []
        sections.append(Section(client, clock, structs))
        append = structs.append
        for _ in range(num_structs):
            at = pos
            info = data[pos]
            kind = info & 0x1F
            if kind == GC or kind == SKIP:
                if info != kind:
                    raise MalformedUpdate(f"flag bits set on a {KIND_NAMES[kind]} struct", at)
                length, pos = read_uint(data, pos + 1)
                if not length:
                    raise MalformedUpdate(f"zero-length {KIND_NAMES[kind]} struct", at)
                s = Struct(client, clock, length, kind)
            else:
                s, pos = _item(data, pos + 1, info, client, clock, known, max_any_depth, max_clock)
                length = s.length
                if not length and not (kind == STRING and allow_empty_strings):
                    raise MalformedUpdate(f"zero-length {KIND_NAMES[kind]} item", at)
            clock += length
            if clock > max_clock:
                raise MalformedUpdate(f"clock above {max_clock}", at)
            append(s)
    return sections, pos


def _item(
    data: bytes,
    pos: int,
    info: int,
    client: int,
    clock: int,
    known: bytes,
    max_any_depth: int,
    max_clock: int,
) -> tuple[Struct, int]:
    """An item, after its info byte: its neighbours, or its parent and map key; its content.

    An item names its parent (a root name or the id of the type item it lives in) and its map
    key only when it has neither an origin nor a right origin: it then inherits both from that
    neighbour.
    """
    at = pos - 1
    origin = right = None
    parent: str | ID | None = None
    parent_sub = None
    if info & _BIT_ORIGIN:
        origin, pos = _id(data, pos, known, client)
        if origin[1] > max_clock:
            raise MalformedUpdate(f"origin clock above {max_clock}", at)
    if info & _BIT_RIGHT_ORIGIN:
        right, pos = _id(data, pos, known, client)
        if right[1] > max_clock:
            raise MalformedUpdate(f"right origin clock above {max_clock}", at)
    if not info & (_BIT_ORIGIN | _BIT_RIGHT_ORIGIN):
        parent_info = data[pos]
        if parent_info == 1:
            parent, pos = read_string(data, pos + 1)
        elif parent_info == 0:
            parent_id, pos = _id(data, pos + 1, known, client)
            if parent_id[1] > max_clock:
                raise MalformedUpdate(f"parent id clock above {max_clock}", at)
            parent = parent_id
        else:
            raise MalformedUpdate(f"parent info {parent_info} is neither 0 nor 1", at)
        if info & _BIT_PARENT_SUB:
            parent_sub, pos = read_string(data, pos)
    kind = info & 0x1F
    # The contents of most items (Any values, types) are read here: a call fewer.
    if kind == ANY:
        length = data[pos]
        if length < 0x80:
            pos += 1
        else:
            length, pos = read_uint(data, pos)
        if length > len(data) - pos:
            raise MalformedUpdate("more Any values announced than bytes", at)
        content: Any = []
        nesting = flags = 0
        for _ in range(length):
            value, pos, depth, more = read_any(data, pos, max_any_depth)
            content.append(value)
            if depth > nesting:
                nesting = depth
            flags |= more
    elif kind == TYPE:
        ref = data[pos]
        if ref < 0x80:
            pos += 1
        else:
            ref, pos = read_uint(data, pos)
        if ref == TYPE_XML_ELEMENT or ref == TYPE_XML_HOOK:
            name, pos = read_string(data, pos)
            content = TypeContent(ref, name)
        elif 0 <= ref <= TYPE_XML_TEXT:
            content = TypeContent(ref)
        else:
            raise MalformedUpdate(f"unknown type ref {ref}", at)
        length = 1
        nesting = flags = 0
    else:
        content, length, nesting, flags, pos = _content(data, pos, kind, at, max_any_depth)
    item = Struct(
        client, clock, length, kind, origin, right, parent, parent_sub, content, nesting, flags
    )
    return item, pos


def _content(
    data: bytes, pos: int, kind: int, at: int, max_any_depth: int
) -> tuple[Any, int, int, int, int]:
    """The content of an item of ``kind`` (not Any nor Type):
    ``(content, length, nesting, flags, pos)``."""
    if kind == STRING:
        text, pos = read_string(data, pos)
        return text, (len(text) if text.isascii() else utf16_length(text)), 0, 0, pos
    if kind == DELETED:
        length, pos = read_uint(data, pos)
        return None, length, 0, 0, pos
    if kind == JSON:
        count, pos = read_uint(data, pos)
        if count > len(data) - pos:
            raise MalformedUpdate("more JSON values announced than bytes", at)
        texts = []
        for _ in range(count):
            text, pos = read_string(data, pos)
            texts.append(text)
        return texts, count, 0, 0, pos
    if kind == BINARY:
        raw, pos = read_bytes(data, pos)
        return raw, 1, 0, 0, pos
    if kind == EMBED:
        text, pos = read_string(data, pos)
        return text, 1, 0, 0, pos
    if kind == FORMAT:
        key, pos = read_string(data, pos)
        text, pos = read_string(data, pos)
        return (key, text), 1, 0, 0, pos
    if kind == DOC:
        guid, pos = read_string(data, pos)
        opts, pos, nesting, flags = read_any(data, pos, max_any_depth)
        return (guid, opts), 1, nesting, flags, pos
    raise MalformedUpdate(f"unknown content ref {kind}", at)


def _id(data: bytes, pos: int, known: bytes, known_client: int) -> tuple[ID, int]:
    """An id: client then clock. ``known`` is the encoding of a likely client (the section's):
    client ids are often 7-8 byte var-uints, and comparing bytes is cheaper than decoding."""
    if data.startswith(known, pos):
        client = known_client
        pos += len(known)
    else:
        client = data[pos]
        if client < 0x80:
            pos += 1
        else:
            client, pos = read_uint(data, pos)
    clock = data[pos]
    if clock < 0x80:
        pos += 1
    else:
        clock, pos = read_uint(data, pos)
    return (client, clock), pos


def _delete_set(data: bytes, pos: int, max_clock: int) -> tuple[list[tuple[int, int, int]], int]:
    """The delete set: per client, ``(clock, length)`` ranges."""
    size = len(data)
    deletes: list[tuple[int, int, int]] = []
    num_clients, pos = read_uint(data, pos)
    if num_clients * 2 > size - pos:
        raise MalformedUpdate("more delete-set clients announced than bytes", pos)
    for _ in range(num_clients):
        client, pos = read_uint(data, pos)
        count, pos = read_uint(data, pos)
        if count * 2 > size - pos:
            raise MalformedUpdate("more deletions announced than bytes", pos)
        for _ in range(count):
            clock, pos = read_uint(data, pos)
            length, pos = read_uint(data, pos)
            if clock + length > max_clock:
                raise MalformedUpdate(f"deleted range ends above clock {max_clock}", pos)
            deletes.append((client, clock, length))
    return deletes, pos
