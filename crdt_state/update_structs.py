"""What a decoded Yjs update is made of: struct sections (one per client) and a delete set.

Lengths are counted as Yjs counts them: strings in UTF-16 code units, Any and JSON contents in
elements, Deleted contents by their length, everything else 1.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "ANY",
    "BINARY",
    "DELETED",
    "DOC",
    "EMBED",
    "FORMAT",
    "GC",
    "JSON",
    "KIND_NAMES",
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
    "DecodedUpdate",
    "Section",
    "Struct",
    "TypeContent",
    "utf16_length",
]

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
    ``parent_sub`` (its map key) from a neighbour. ``content`` depends on the kind:

    - Deleted: None (``length`` deleted elements); GC and Skip: None
    - JSON: ``list[str]`` (raw JSON texts, not parsed, or ``"undefined"``)
    - Binary: ``bytes``; String: ``str``; Embed: ``str`` (raw JSON)
    - Format: ``(key, raw JSON)``; Type: :class:`TypeContent`; Doc: ``(guid, opts)``
    - Any: ``list`` of values (None, bool, int, float, str, bytes, list, dict, UNDEFINED)

    ``nesting`` is the deepest container nesting among Any/Doc values (0: scalars only) and
    ``flags`` the ``VALUE_*`` facts about them (``lib0``).
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
