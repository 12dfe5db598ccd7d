"""A strict, pure-Python decoder of the Yjs update format v1.

This is what y-websocket clients send and what pycrdt's ``get_update()`` / ``event.update``
produce. It exists so that an update can be inspected (by ``update_guard``) before pycrdt sees
it: some updates crash or poison the native library, so nothing may be trusted to it unread.

Layout (lib0 encoding: var-uint = 7 bits a byte, low bits first, high bit = "more"):

    update      := struct-section delete-set
    struct-section := count { num-structs client start-clock struct* }
    struct      := info (GC: len | Skip: len | Item: [origin] [right-origin] [parent] content)
    delete-set  := count { client count { clock len } }

An item names its parent (a root name or the id of the type item it lives in) and its map key
(``parent_sub``) only when it has neither an origin nor a right origin; otherwise it inherits
both from that neighbour.

Everything malformed raises :class:`MalformedUpdate` with a short reason: truncated data, unknown
content or type refs, invalid UTF-8, counts larger than the remaining bytes could hold (nothing is
ever allocated from an announced count), zero-length structs (see ``allow_empty_strings``), a
client with two struct sections, clocks above ``max_clock``, values nested deeper than
``max_any_depth`` (:class:`AnyTooDeep`), and bytes left after the delete set. Nothing here
recurses: lib0 ``Any`` values are decoded with an explicit stack. JSON, Embed and Format contents
are kept as raw JSON text (never parsed: ``json.loads`` recurses).

Lengths are counted as Yjs counts them: strings in UTF-16 code units, Any and JSON contents in
elements, Deleted contents by their length, everything else 1.
"""

from __future__ import annotations

import math
import struct as _struct
from typing import Any, Final

__all__ = [
    "ANY",
    "BINARY",
    "DEFAULT_MAX_ANY_DEPTH",
    "DELETED",
    "DOC",
    "EMBED",
    "FORMAT",
    "GC",
    "JSON",
    "KIND_NAMES",
    "MAX_SAFE_INTEGER",
    "SKIP",
    "STRING",
    "TYPE",
    "TYPE_ARRAY",
    "TYPE_MAP",
    "TYPE_NAMES",
    "TYPE_TEXT",
    "TYPE_XML_ELEMENT",
    "TYPE_XML_FRAGMENT",
    "TYPE_XML_HOOK",
    "TYPE_XML_TEXT",
    "UNDEFINED",
    "VALUE_BIG_INT",
    "VALUE_BINARY",
    "VALUE_NON_FINITE",
    "VALUE_UNDEFINED",
    "AnyTooDeep",
    "DecodedUpdate",
    "MalformedUpdate",
    "Section",
    "Struct",
    "TypeContent",
    "decode_update",
    "utf16_length",
]

MAX_SAFE_INTEGER: Final = 2**53 - 1
DEFAULT_MAX_ANY_DEPTH: Final = 256
"""Deepest lib0 ``Any`` value accepted by default ([] or {} is 1, [[]] is 2...)."""

# Struct kinds: the low 5 bits of the info byte (content refs), as Yjs numbers them.
GC: Final = 0
DELETED: Final = 1
JSON: Final = 2
BINARY: Final = 3
STRING: Final = 4
EMBED: Final = 5
FORMAT: Final = 6
TYPE: Final = 7
ANY: Final = 8
DOC: Final = 9
SKIP: Final = 10
KIND_NAMES: Final = {
    GC: "GC",
    DELETED: "Deleted",
    JSON: "JSON",
    BINARY: "Binary",
    STRING: "String",
    EMBED: "Embed",
    FORMAT: "Format",
    TYPE: "Type",
    ANY: "Any",
    DOC: "Doc",
    SKIP: "Skip",
}

# Type refs of ContentType.
TYPE_ARRAY: Final = 0
TYPE_MAP: Final = 1
TYPE_TEXT: Final = 2
TYPE_XML_ELEMENT: Final = 3
TYPE_XML_FRAGMENT: Final = 4
TYPE_XML_HOOK: Final = 5
TYPE_XML_TEXT: Final = 6
TYPE_NAMES: Final = {
    TYPE_ARRAY: "Y.Array",
    TYPE_MAP: "Y.Map",
    TYPE_TEXT: "Y.Text",
    TYPE_XML_ELEMENT: "Y.XmlElement",
    TYPE_XML_FRAGMENT: "Y.XmlFragment",
    TYPE_XML_HOOK: "Y.XmlHook",
    TYPE_XML_TEXT: "Y.XmlText",
}

# Facts about Any values, gathered while decoding (Struct.flags).
VALUE_BIG_INT: Final = 1
"""An integer (var-int or lib0 bigint) outside ±(2^53−1)."""
VALUE_NON_FINITE: Final = 2
"""A float that is NaN or ±Infinity."""
VALUE_BINARY: Final = 4
"""A Uint8Array (decoded as ``bytes``)."""
VALUE_UNDEFINED: Final = 8
"""JavaScript ``undefined`` (decoded as :data:`UNDEFINED`)."""

_BIT_ORIGIN: Final = 0x80
_BIT_RIGHT_ORIGIN: Final = 0x40
_BIT_PARENT_SUB: Final = 0x20
_MAX_VAR_BYTES: Final = 10

_unpack_f32 = _struct.Struct(">f").unpack_from
_unpack_f64 = _struct.Struct(">d").unpack_from
_unpack_i64 = _struct.Struct(">q").unpack_from
_isfinite = math.isfinite


class MalformedUpdate(ValueError):
    """The bytes are not a well-formed Yjs v1 update (or exceed a decoding limit)."""

    def __init__(self, reason: str, offset: int | None = None) -> None:
        super().__init__(reason if offset is None else f"{reason} (at byte {offset})")
        self.reason = reason
        self.offset = offset


class AnyTooDeep(MalformedUpdate):
    """An Any value nests deeper than the decoder was told to accept."""


class _Undefined:
    """JavaScript ``undefined`` (lib0 Any tag 127)."""

    __slots__ = ()
    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = _Undefined()


class TypeContent:
    """The content of a Type item: which shared type it creates (and an XML name or key)."""

    __slots__ = ("name", "ref")

    def __init__(self, ref: int, name: str | None = None) -> None:
        self.ref = ref
        self.name = name

    def __repr__(self) -> str:
        suffix = f", {self.name!r}" if self.name is not None else ""
        return f"TypeContent({TYPE_NAMES.get(self.ref, self.ref)}{suffix})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TypeContent) and other.ref == self.ref and other.name == self.name

    def __hash__(self) -> int:
        return hash((self.ref, self.name))


class Struct:
    """One struct of an update: GC, Skip or an Item.

    ``kind`` is the content ref (:data:`GC`, :data:`SKIP`, :data:`ANY`, ...). For items:
    ``origin``/``right_origin`` are ``(client, clock)`` or None; ``parent`` is a root name
    (``str``), a parent type id (``(client, clock)``) or None when the item inherits parent and
    ``parent_sub`` from a neighbour. ``content`` depends on the kind:

    - Deleted: None (``length`` deleted elements); GC and Skip: None
    - JSON: ``list[str]`` (raw JSON texts, not parsed, or ``"undefined"``)
    - Binary: ``bytes``; String: ``str``; Embed: ``str`` (raw JSON)
    - Format: ``(key, raw JSON)``; Type: :class:`TypeContent`; Doc: ``(guid, opts)``
    - Any: ``list`` of values (None, bool, int, float, str, bytes, list, dict, UNDEFINED)

    ``nesting`` is the deepest container nesting among Any/Doc values (0: scalars only) and
    ``flags`` the ``VALUE_*`` facts about them.
    """

    __slots__ = (
        "client",
        "clock",
        "content",
        "flags",
        "kind",
        "length",
        "nesting",
        "origin",
        "parent",
        "parent_sub",
        "right_origin",
    )

    def __init__(
        self,
        client: int,
        clock: int,
        length: int,
        kind: int,
        origin: tuple[int, int] | None = None,
        right_origin: tuple[int, int] | None = None,
        parent: str | tuple[int, int] | None = None,
        parent_sub: str | None = None,
        content: Any = None,
        nesting: int = 0,
        flags: int = 0,
    ) -> None:
        self.client = client
        self.clock = clock
        self.length = length
        self.kind = kind
        self.origin = origin
        self.right_origin = right_origin
        self.parent = parent
        self.parent_sub = parent_sub
        self.content = content
        self.nesting = nesting
        self.flags = flags

    @property
    def id(self) -> tuple[int, int]:
        return (self.client, self.clock)

    @property
    def end(self) -> int:
        """The clock just after this struct."""
        return self.clock + self.length

    @property
    def is_item(self) -> bool:
        return self.kind != GC and self.kind != SKIP

    def __repr__(self) -> str:
        parts = [f"{KIND_NAMES.get(self.kind, self.kind)} ({self.client}, {self.clock})"]
        if self.length != 1:
            parts.append(f"len={self.length}")
        for name in ("origin", "right_origin", "parent", "parent_sub", "content"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value!r}")
        return f"Struct({', '.join(parts)})"


class Section:
    """The structs of one client, in clock order, starting at ``clock``."""

    __slots__ = ("client", "clock", "structs")

    def __init__(self, client: int, clock: int, structs: list[Struct]) -> None:
        self.client = client
        self.clock = clock
        self.structs = structs

    @property
    def end(self) -> int:
        return self.structs[-1].end if self.structs else self.clock

    def __repr__(self) -> str:
        return f"Section(client={self.client}, clock={self.clock}, structs={len(self.structs)})"


class DecodedUpdate:
    """A decoded update: struct sections (one per client) and the delete set.

    ``deletes`` lists ``(client, clock, length)`` in encoded order.
    """

    __slots__ = ("deletes", "sections")

    def __init__(self, sections: list[Section], deletes: list[tuple[int, int, int]]) -> None:
        self.sections = sections
        self.deletes = deletes

    @property
    def structs(self) -> list[Struct]:
        """All structs, section after section."""
        return [s for section in self.sections for s in section.structs]

    @property
    def is_empty(self) -> bool:
        return not self.sections and not self.deletes

    def __repr__(self) -> str:
        return f"DecodedUpdate(sections={self.sections!r}, deletes={self.deletes!r})"


def utf16_length(text: str) -> int:
    """The length of ``text`` in UTF-16 code units (how Yjs counts string lengths)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le")) // 2


# --- primitives --------------------------------------------------------------------------------
# Each reader takes (data, pos) and returns (value, new pos). Reading past the end raises
# IndexError, which decode_update turns into MalformedUpdate("truncated").


def _uint(data: bytes, pos: int) -> tuple[int, int]:
    """A lib0 var-uint (at most 2^53−1, as lib0 enforces)."""
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    b2 = data[pos + 1]
    if b2 < 0x80:
        return (b & 0x7F) | (b2 << 7), pos + 2
    start = pos
    value = (b & 0x7F) | ((b2 & 0x7F) << 7)
    shift = 14
    pos += 2
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if pos - start >= _MAX_VAR_BYTES:
            raise MalformedUpdate("var-uint longer than 10 bytes", start)
    if value > MAX_SAFE_INTEGER:
        raise MalformedUpdate("var-uint above 2^53−1", start)
    return value, pos


def _int(data: bytes, pos: int) -> tuple[int, int]:
    """A lib0 var-int: first byte = more bit, sign bit, 6 value bits; then 7 bits a byte."""
    start = pos
    b = data[pos]
    pos += 1
    value = b & 0x3F
    negative = b & 0x40
    if b & 0x80:
        shift = 6
        while True:
            b = data[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if pos - start >= _MAX_VAR_BYTES:
                raise MalformedUpdate("var-int longer than 10 bytes", start)
    return (-value if negative else value), pos


def _string(data: bytes, pos: int) -> tuple[str, int]:
    n = data[pos]
    if n < 0x80:
        pos += 1
    else:
        n, pos = _uint(data, pos)
    end = pos + n
    if end > len(data):
        raise MalformedUpdate("string runs past the end", pos)
    try:
        return data[pos:end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise MalformedUpdate("invalid UTF-8 in a string", pos) from None


def _bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = _uint(data, pos)
    end = pos + n
    if end > len(data):
        raise MalformedUpdate("byte array runs past the end", pos)
    return data[pos:end], end


def _id(data: bytes, pos: int, known: bytes, known_client: int) -> tuple[tuple[int, int], int]:
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
            client, pos = _uint(data, pos)
    clock = data[pos]
    if clock < 0x80:
        pos += 1
    else:
        clock, pos = _uint(data, pos)
    return (client, clock), pos


# --- lib0 Any ----------------------------------------------------------------------------------


def _any(data: bytes, pos: int, max_depth: int) -> tuple[Any, int, int, int]:
    """One lib0 Any value: (value, pos, nesting, flags)."""
    tag = data[pos]
    pos += 1
    if tag == 119:  # string
        text, pos = _string(data, pos)
        return text, pos, 0, 0
    if tag == 125:  # var-int
        value, pos = _int(data, pos)
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return value, pos, 0, 0
        return value, pos, 0, VALUE_BIG_INT
    if tag == 124 or tag == 123:  # float32 / float64
        if tag == 124:
            if pos + 4 > len(data):
                raise MalformedUpdate("float32 runs past the end", pos)
            number = _unpack_f32(data, pos)[0]
            pos += 4
        else:
            if pos + 8 > len(data):
                raise MalformedUpdate("float64 runs past the end", pos)
            number = _unpack_f64(data, pos)[0]
            pos += 8
        return number, pos, 0, (0 if _isfinite(number) else VALUE_NON_FINITE)
    if tag == 120:
        return True, pos, 0, 0
    if tag == 121:
        return False, pos, 0, 0
    if tag == 126:
        return None, pos, 0, 0
    if tag == 127:
        return UNDEFINED, pos, 0, VALUE_UNDEFINED
    if tag == 122:  # bigint (int64, big-endian)
        if pos + 8 > len(data):
            raise MalformedUpdate("bigint runs past the end", pos)
        value = _unpack_i64(data, pos)[0]
        pos += 8
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return value, pos, 0, 0
        return value, pos, 0, VALUE_BIG_INT
    if tag == 116:  # Uint8Array
        raw, pos = _bytes(data, pos)
        return raw, pos, 0, VALUE_BINARY
    if tag == 117 or tag == 118:
        return _any_nested(data, pos - 1, max_depth)
    raise MalformedUpdate(f"unknown Any tag {tag}", pos - 1)


def _any_nested(data: bytes, pos: int, max_depth: int) -> tuple[Any, int, int, int]:
    """An Any array/object, decoded with an explicit stack (never recursion)."""
    size = len(data)
    # Frames: [container, remaining elements, is object, pending key].
    stack: list[list[Any]] = []
    nesting = 0
    flags = 0
    while True:
        key = None
        if stack and stack[-1][2]:
            key, pos = _string(data, pos)
        tag = data[pos]
        if tag == 117 or tag == 118:
            start = pos
            count, pos = _uint(data, pos + 1)
            depth = len(stack) + 1
            if depth > max_depth:
                raise AnyTooDeep(f"Any value nested deeper than {max_depth} levels", start)
            if depth > nesting:
                nesting = depth
            if tag == 118:
                if count * 2 > size - pos:
                    raise MalformedUpdate("Any object announces more entries than bytes", start)
                container: Any = {}
            else:
                if count > size - pos:
                    raise MalformedUpdate("Any array announces more elements than bytes", start)
                container = []
            if count:
                stack.append([container, count, tag == 118, key])
                continue
            value: Any = container
        else:
            value, pos, _, more = _any(data, pos, 0)  # a scalar: max_depth is never reached
            flags |= more
        # Attach the finished value to its parents, closing those that are now complete.
        while True:
            if not stack:
                return value, pos, nesting, flags
            frame = stack[-1]
            if frame[2]:
                frame[0][key] = value
            else:
                frame[0].append(value)
            frame[1] -= 1
            if frame[1]:
                break
            stack.pop()
            value = frame[0]
            key = frame[3]


# --- the update --------------------------------------------------------------------------------


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
        return _decode(data, max_any_depth, max_clock, allow_empty_strings)
    except IndexError:
        raise MalformedUpdate("truncated update") from None
    except RecursionError:  # pragma: no cover - nothing recurses; belt and braces
        raise MalformedUpdate("update nests too deeply") from None


def _decode(
    data: bytes, max_any_depth: int, max_clock: int, allow_empty_strings: bool
) -> DecodedUpdate:
    size = len(data)
    uint = _uint
    string = _string
    any_value = _any
    new_struct = Struct
    sections: list[Section] = []
    seen_clients: set[int] = set()

    num_clients, pos = uint(data, 0)
    if num_clients * 3 > size - pos:
        raise MalformedUpdate("more client sections announced than bytes", 0)
    for _ in range(num_clients):
        section_at = pos
        num_structs, pos = uint(data, pos)
        client_at = pos
        client, pos = uint(data, pos)
        known = data[client_at:pos]
        clock, pos = uint(data, pos)
        if num_structs * 2 > size - pos:
            raise MalformedUpdate("more structs announced than bytes", section_at)
        if clock > max_clock:
            raise MalformedUpdate(f"clock above {max_clock}", section_at)
        if client in seen_clients:
            raise MalformedUpdate(f"client {client} has two struct sections", section_at)
        seen_clients.add(client)
        structs: list[Struct] = []
        append = structs.append
        section = Section(client, clock, structs)
        for _ in range(num_structs):
            at = pos
            info = data[pos]
            pos += 1
            kind = info & 0x1F
            if kind == GC or kind == SKIP:
                if info != kind:
                    raise MalformedUpdate(f"flag bits set on a {KIND_NAMES[kind]} struct", at)
                length = data[pos]
                if length < 0x80:
                    pos += 1
                else:
                    length, pos = uint(data, pos)
                if not length:
                    raise MalformedUpdate(f"zero-length {KIND_NAMES[kind]} struct", at)
                item = new_struct(client, clock, length, kind)
            else:
                origin = right_origin = None
                parent: str | tuple[int, int] | None = None
                parent_sub = None
                if info & _BIT_ORIGIN:
                    origin, pos = _id(data, pos, known, client)
                    if origin[1] > max_clock:
                        raise MalformedUpdate(f"origin clock above {max_clock}", at)
                if info & _BIT_RIGHT_ORIGIN:
                    right_origin, pos = _id(data, pos, known, client)
                    if right_origin[1] > max_clock:
                        raise MalformedUpdate(f"right origin clock above {max_clock}", at)
                if not info & (_BIT_ORIGIN | _BIT_RIGHT_ORIGIN):
                    parent_info = data[pos]
                    pos += 1
                    if parent_info == 1:
                        parent, pos = string(data, pos)
                    elif parent_info == 0:
                        parent_id, pos = _id(data, pos, known, client)
                        if parent_id[1] > max_clock:
                            raise MalformedUpdate(f"parent id clock above {max_clock}", at)
                        parent = parent_id
                    else:
                        raise MalformedUpdate(f"parent info {parent_info} is neither 0 nor 1", at)
                    if info & _BIT_PARENT_SUB:
                        parent_sub, pos = string(data, pos)
                nesting = flags = 0
                content: Any = None
                if kind == ANY:
                    count = data[pos]
                    if count < 0x80:
                        pos += 1
                    else:
                        count, pos = uint(data, pos)
                    if count > size - pos:
                        raise MalformedUpdate("more Any values announced than bytes", at)
                    values = []
                    for _ in range(count):
                        value, pos, depth, more = any_value(data, pos, max_any_depth)
                        values.append(value)
                        if depth > nesting:
                            nesting = depth
                        flags |= more
                    content = values
                    length = count
                elif kind == STRING:
                    content, pos = string(data, pos)
                    length = len(content) if content.isascii() else utf16_length(content)
                elif kind == TYPE:
                    ref = data[pos]
                    if ref < 0x80:
                        pos += 1
                    else:
                        ref, pos = uint(data, pos)
                    if ref == TYPE_XML_ELEMENT or ref == TYPE_XML_HOOK:
                        name, pos = string(data, pos)
                        content = TypeContent(ref, name)
                    elif 0 <= ref <= TYPE_XML_TEXT:
                        content = TypeContent(ref)
                    else:
                        raise MalformedUpdate(f"unknown type ref {ref}", at)
                    length = 1
                elif kind == DELETED:
                    length, pos = uint(data, pos)
                elif kind == JSON:
                    count, pos = uint(data, pos)
                    if count > size - pos:
                        raise MalformedUpdate("more JSON values announced than bytes", at)
                    texts = []
                    for _ in range(count):
                        text, pos = string(data, pos)
                        texts.append(text)
                    content = texts
                    length = count
                elif kind == BINARY:
                    content, pos = _bytes(data, pos)
                    length = 1
                elif kind == EMBED:
                    content, pos = string(data, pos)
                    length = 1
                elif kind == FORMAT:
                    key, pos = string(data, pos)
                    text, pos = string(data, pos)
                    content = (key, text)
                    length = 1
                elif kind == DOC:
                    guid, pos = string(data, pos)
                    opts, pos, nesting, flags = any_value(data, pos, max_any_depth)
                    content = (guid, opts)
                    length = 1
                else:
                    raise MalformedUpdate(f"unknown content ref {kind}", at)
                if not length and not (kind == STRING and allow_empty_strings):
                    raise MalformedUpdate(f"zero-length {KIND_NAMES[kind]} item", at)
                item = new_struct(
                    client,
                    clock,
                    length,
                    kind,
                    origin,
                    right_origin,
                    parent,
                    parent_sub,
                    content,
                    nesting,
                    flags,
                )
            clock += length
            if clock > max_clock:
                raise MalformedUpdate(f"clock above {max_clock}", at)
            append(item)
        sections.append(section)

    deletes: list[tuple[int, int, int]] = []
    num_clients, pos = uint(data, pos)
    if num_clients * 2 > size - pos:
        raise MalformedUpdate("more delete-set clients announced than bytes", pos)
    for _ in range(num_clients):
        client, pos = uint(data, pos)
        count, pos = uint(data, pos)
        if count * 2 > size - pos:
            raise MalformedUpdate("more deletions announced than bytes", pos)
        for _ in range(count):
            clock, pos = uint(data, pos)
            length, pos = uint(data, pos)
            if clock + length > max_clock:
                raise MalformedUpdate(f"deleted range ends above clock {max_clock}", pos)
            deletes.append((client, clock, length))
    if pos != size:
        raise MalformedUpdate(f"{size - pos} trailing bytes after the delete set", pos)
    return DecodedUpdate(sections, deletes)
