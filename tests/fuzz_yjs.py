"""Hypothesis strategies for the Yjs face of the fuzzer (tests/test_fuzz.py): y-websocket frames,
Yjs v1 updates crafted with tests/yjs_encoder.py (valid structures and hostile shapes), real
pycrdt edits, and awareness updates.

Updates are drawn against what the server's doc already holds (``KnownDoc``, decoded from the
server's sync step 2), so that they can name its clients, types and items as parents, origins
and deletions, and also ids nobody has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text

from crdt_state.lib0 import (
    UNDEFINED,
)
from crdt_state.update_decoder import (
    decode_update,
)
from crdt_state.update_structs import (
    GC,
    SKIP,
    TYPE,
    TYPE_ARRAY,
    TYPE_MAP,
    TYPE_TEXT,
)

from .fuzz_values import (
    INTERESTING_INTS,
    INTERESTING_STRINGS,
    depths,
    json_values,
    keys,
    plain,
    plain_values,
    to_json,
)
from .yjs_encoder import (
    ID,
    AnyContent,
    BigInt,
    BinaryContent,
    Content,
    DeletedContent,
    DocContent,
    EmbedContent,
    Float32,
    Float64,
    FormatContent,
    JSONContent,
    Raw,
    RawContent,
    StringContent,
    TypeRef,
    UpdateBuilder,
    nested_any,
    nested_maps,
    var_bytes,
    var_uint,
)

ROOT_NAMES = ("$state", "$state", "$state", "$computed", "$meta", "evil", "", "$State")
EXTREME_CLIENTS = (0, 1, 2**31, 2**32 - 1, 2**32, 2**53 - 1)
EXTREME_CLOCKS = (2**31, 2**32 - 1, 2**32, 2**53 - 1)


@dataclass
class KnownDoc:
    """What the fuzzer knows of the server's doc: each client's next clock, its shared types
    (id and type ref) and its items (id and length)."""

    clients: dict[int, int] = field(default_factory=dict)
    types: list[tuple[ID, int]] = field(default_factory=list)
    items: list[tuple[ID, int]] = field(default_factory=list)

    @classmethod
    def of(cls, update: bytes) -> KnownDoc:
        known = cls()
        try:
            decoded = decode_update(update, allow_empty_strings=True)
        except ValueError:
            return known
        for section in decoded.sections:
            known.clients[section.client] = section.end
            for s in section.structs:
                if s.kind in (GC, SKIP):
                    continue
                known.items.append((s.id, s.length))
                if s.kind == TYPE:
                    known.types.append((s.id, s.content.ref))
        return known


# --- y-websocket frames -----------------------------------------------------------------------


def frame(kind: int, body: bytes) -> bytes:
    return var_uint(kind) + body


@st.composite
def big_payloads(draw: st.DrawFn) -> bytes:
    """A payload of up to ~300 KB from a short drawn pattern (cheap to draw and to shrink)."""
    pattern = draw(st.binary(min_size=1, max_size=8))
    size = draw(st.integers(1, 300_000))
    return (pattern * (size // len(pattern) + 1))[:size]


payloads = st.one_of(st.binary(max_size=48), st.binary(max_size=48), big_payloads())


@st.composite
def lying_lengths(draw: st.DrawFn) -> bytes:
    """A sync or awareness frame whose length prefix is not the length of what follows."""
    head = draw(st.sampled_from((b"\x00\x00", b"\x00\x01", b"\x00\x02", b"\x01")))
    body = draw(st.binary(max_size=32))
    claimed = draw(st.one_of(st.integers(0, 64), st.sampled_from((2**32, 2**53 - 1, 2**60))))
    return head + var_uint(claimed) + body


random_frames = st.one_of(
    st.binary(max_size=64),
    st.builds(frame, st.integers(0, 300), st.binary(max_size=32)),
    st.builds(
        lambda sub, body, tail: b"\x00" + var_uint(sub) + var_bytes(body) + tail,
        st.integers(0, 5),
        payloads,
        st.one_of(st.just(b""), st.binary(max_size=8)),
    ),
    st.builds(lambda body: b"\x01" + var_bytes(body), payloads),
    st.builds(lambda tail: b"\x03" + tail, st.one_of(st.just(b""), st.binary(max_size=8))),
    lying_lengths(),
    st.sampled_from(
        (
            b"",
            b"\x00",
            b"\x00\x02",
            b"\x02",
            b"\x02\x00",
            b"\xff" * 9,
            b"\x00\x02" + b"\xff" * 9 + b"\x01",
            b"\x80" * 20,
            b"\x00\x00\x00",  # step 1 with an empty payload (not a state vector)
            b"\x00\x01\x00",  # step 2 with an empty payload
            b"\x00\x02\x02\x00\x00",  # the empty update
        )
    ),
)
text_frames = st.text(max_size=64)


# --- lib0 Any values ---------------------------------------------------------------------------

lib0_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    st.integers(-(2**60), 2**60),
    st.sampled_from(INTERESTING_INTS),
    st.floats(),
    st.builds(BigInt, st.integers(-(2**63), 2**63 - 1)),
    st.builds(Float32, st.floats(width=32)),
    st.builds(Float64, st.floats()),
    st.text(max_size=20).filter(plain),
    st.sampled_from(INTERESTING_STRINGS).filter(plain),
    st.binary(max_size=8),
    st.just(UNDEFINED),
)


@st.composite
def deep_any(draw: st.DrawFn) -> Raw:
    return nested_any(
        draw(depths),
        draw(st.one_of(st.none(), st.integers(-10, 10))),
        key=draw(st.one_of(st.none(), st.just("k"))),
    )


lib0_values = st.recursive(
    st.one_of(lib0_scalars, lib0_scalars, lib0_scalars, deep_any()),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=6).filter(plain), children, max_size=4),
    ),
    max_leaves=10,
)


# --- contents ----------------------------------------------------------------------------------

contents: st.SearchStrategy[Content] = st.one_of(
    st.builds(AnyContent, st.lists(lib0_values, min_size=1, max_size=3)),
    st.builds(AnyContent, st.lists(lib0_values, min_size=1, max_size=3)),
    st.builds(StringContent, st.text(min_size=1, max_size=12).filter(plain)),
    st.builds(TypeRef, st.sampled_from((TYPE_MAP, TYPE_MAP, TYPE_ARRAY, TYPE_TEXT))),
    st.builds(TypeRef, st.integers(0, 8), st.one_of(st.none(), st.text(max_size=6))),
    st.builds(DeletedContent, st.integers(1, 5)),
    st.builds(BinaryContent, st.binary(max_size=8)),
    st.builds(JSONContent, st.lists(st.sampled_from(('"x"', "1", "{}", "undefined")), min_size=1)),
    st.builds(EmbedContent),
    st.builds(FormatContent),
    st.builds(DocContent, st.text(max_size=6), st.sampled_from(({}, {"gc": True}, None))),
    st.builds(
        RawContent, st.integers(0, 31), st.binary(max_size=12), st.integers(0, 3)
    ),  # any kind, any bytes
)


# --- crafted updates ---------------------------------------------------------------------------


_ANY_INDEX = st.integers(0, 2**16 - 1)


def pick(draw: st.DrawFn, items: list[Any] | tuple[Any, ...]) -> Any:
    """One of `items` (None if there are none). The draw does not depend on how many there
    are: they come from the server's doc, and Hypothesis replays a case against another
    server state when it shrinks (its draws must keep their shape)."""
    index = draw(_ANY_INDEX)
    return items[index % len(items)] if items else None


class _Crafting:
    """One update being drawn: the builder, the items it created, the clients it uses.

    Every method draws the same kinds of values whatever the doc holds (see ``pick``)."""

    def __init__(self, draw: st.DrawFn, known: KnownDoc) -> None:
        self.draw = draw
        self.known = known
        self.builder = UpdateBuilder()
        self.types: list[ID] = [t for t, _ in known.types]
        self.items: list[tuple[ID, int]] = list(known.items)

    def client(self) -> int:
        """A fresh client, a small or extreme id, one of the doc's, or one of this update's."""
        choice = self.draw(st.integers(0, 5))
        fresh = self.draw(st.integers(2, 2**32 - 1))
        known = pick(self.draw, sorted(self.known.clients))
        ours = pick(self.draw, sorted(self.builder.clients))
        if choice >= 4 and ours is not None:
            return int(ours)
        if choice == 3 and known is not None:
            return int(known)
        if choice == 2:
            return EXTREME_CLIENTS[fresh % len(EXTREME_CLIENTS)]
        if choice == 1:
            return 2 + fresh % 59
        return fresh

    def clock(self, client: int) -> int | None:
        """None (the next clock) for a client already in the update; else where it starts:
        where the server's doc has it, before that (already known), or after (a gap)."""
        choice = self.draw(st.integers(0, 3))
        offset = self.draw(st.integers(0, 2**16 - 1))
        if client in self.builder.clients:
            return None
        have = self.known.clients.get(client, 0)
        if choice == 2:
            return offset % (have + 4)
        if choice == 3:
            return EXTREME_CLOCKS[offset % len(EXTREME_CLOCKS)]
        return have

    def an_id(self) -> ID:
        """An id to point at: an item of the doc or of this update, or one nobody has."""
        choice = self.draw(st.integers(0, 3))
        item = pick(self.draw, self.items)
        offset = self.draw(_ANY_INDEX)
        anywhere = self.draw(st.tuples(st.integers(0, 2**32), st.integers(0, 2**32)))
        if choice == 3 or item is None:
            return anywhere
        (client, clock), length = item
        return (client, clock + offset % max(length, 1))

    def parent(self) -> str | ID:
        """A root name (one of the three, or another), a type of the doc or of this update,
        or any id."""
        choice = self.draw(st.integers(0, 5))
        name = self.draw(st.one_of(st.sampled_from(ROOT_NAMES), st.text(max_size=8)))
        a_type = pick(self.draw, self.types)
        an_id = self.an_id()
        if choice >= 3 and a_type is not None:
            return a_type  # type: ignore[no-any-return]
        if choice == 2:
            return an_id
        return name

    def struct(self) -> None:
        b = self.builder
        client = self.client()
        clock = self.clock(client)
        shape = self.draw(st.integers(0, 9))
        if shape == 0:
            b.gc(client, clock, self.draw(st.integers(1, 4)))
            return
        if shape == 1:
            b.skip(client, clock, self.draw(st.integers(1, 4)))
            return
        content = self.draw(contents)
        placement = self.draw(st.integers(0, 5))
        kwargs: dict[str, Any] = {}
        if placement <= 2:  # a map entry
            kwargs = {"parent": self.parent(), "parent_sub": self.draw(keys.filter(plain))}
        elif placement == 3:  # an element of a sequence
            kwargs = {"parent": self.parent()}
        else:  # next to other items: the parent comes from them
            kwargs = {"origin": self.an_id()}
            if placement == 5:
                kwargs["right_origin"] = self.an_id()
        new = b.item(client, clock, content, **kwargs)
        if content.length > 0:
            self.items.append((new, content.length))
        if isinstance(content, TypeRef):
            self.types.append(new)

    def deletion(self) -> None:
        client, clock = self.an_id()
        self.builder.delete(client, clock, self.draw(st.integers(1, 4)))


@st.composite
def crafted_updates(draw: st.DrawFn, known: KnownDoc) -> bytes:
    """A Yjs v1 update built struct by struct: structurally valid or hostile (wrong roots,
    $meta and $computed writes, bad numbers, binary/XML/sub-document content, clock gaps,
    references to unknown ids, trailing bytes), or one of the deep shapes."""
    shape = draw(st.integers(0, 9))
    trailing = draw(st.one_of(st.just(b""), st.just(b""), st.just(b""), st.binary(max_size=6)))
    if shape == 0:  # nested Y.Maps, each a value of the previous one
        crafting = _Crafting(draw, known)
        client = crafting.client()
        return (
            nested_maps(
                draw(depths),
                client=client,
                clock=crafting.clock(client) or 0,
                parent=crafting.parent(),
                key=draw(st.sampled_from(("k", "", "$meta"))),
                leaf=draw(st.one_of(st.none(), st.integers(0, 9))),
            )
            + trailing
        )
    if shape == 1:  # one map entry holding a deep Any value
        crafting = _Crafting(draw, known)
        client = crafting.client()
        b = UpdateBuilder()
        b.item(
            client,
            crafting.clock(client) or 0,
            AnyContent([draw(deep_any())]),
            parent=crafting.parent(),
            parent_sub="k",
        )
        return b.encode(trailing=trailing)
    crafting = _Crafting(draw, known)
    for _ in range(draw(st.integers(0 if shape == 2 else 1, 6))):
        crafting.struct()
    for _ in range(draw(st.integers(0, 3 if shape == 2 else 1))):
        crafting.deletion()
    return crafting.builder.encode(trailing=trailing)


# --- real edits, by pycrdt ---------------------------------------------------------------------


def _y(value: Any, depth: int = 0) -> Any:
    """JSON -> Y as the server writes it (objects Y.Map, arrays Y.Array), or kept as a plain
    value (an Any) now and then, as other clients may."""
    if isinstance(value, dict):
        return Map({k: _y(v, depth + 1) for k, v in value.items()})
    if isinstance(value, list):
        return Array([_y(v, depth + 1) for v in value])
    return value


def _containers(doc: Doc[Any]) -> list[Any]:
    """Every Y.Map, Y.Array and Y.Text under the roots, breadth first (at most 50)."""
    found: list[Any] = []
    queue: list[Any] = [doc.get(name, type=Map) for name in ("$state", "$computed")]
    while queue and len(found) < 50:
        item = queue.pop(0)
        found.append(item)
        if isinstance(item, Map):
            queue += [v for v in item.values() if isinstance(v, Map | Array | Text)]
        elif isinstance(item, Array):
            queue += [v for v in item if isinstance(v, Map | Array | Text)]
    return found


@st.composite
def pycrdt_edits(draw: st.DrawFn, server_state: bytes) -> bytes:
    """An update a real client could send: a local doc holding the server's state, edited by
    pycrdt (set, delete, insert, text edits, under $state, $computed, $meta or another root),
    encoded as the difference from the server's state. Each edit draws the same values
    whatever the doc holds (see ``pick``)."""
    doc: Doc[Any] = Doc(client_id=draw(st.integers(100, 2**32 - 1)))
    try:
        doc.apply_update(server_state)
    except BaseException:  # the server sent something pycrdt cannot read: nothing to edit
        return b"\x00\x00"
    before = doc.get_state()
    for _ in range(draw(st.integers(1, 4))):
        root = draw(st.sampled_from(("$state", "$state", "$computed", "$meta", "evil")))
        target = pick(draw, _containers(doc))
        value = draw(st.one_of(plain_values(), json_values(max_leaves=6).filter(_pycrdt_ok)))
        key = draw(st.text(max_size=6).filter(plain))
        delete = draw(st.booleans())
        as_type = draw(st.booleans())
        index = draw(_ANY_INDEX)
        text = draw(st.text(min_size=1, max_size=8).filter(plain))
        try:
            if root in ("$meta", "evil") or target is None:
                target = doc.get(root, type=Map)
            if isinstance(target, Map):
                keys = sorted(target.keys())
                if keys and delete:
                    del target[keys[index % len(keys)]]
                else:
                    target[key] = _y(value) if as_type else value
            elif isinstance(target, Array):
                if len(target) and delete:
                    del target[index % len(target)]
                else:
                    target.insert(index % (len(target) + 1), _y(value))
            elif isinstance(target, Text):
                target.insert(index % (len(str(target)) + 1), text)
        except BaseException:  # pycrdt's PanicException is a BaseException
            continue  # what pycrdt itself refuses is no client's update
    return doc.get_update(before)


def _pycrdt_ok(value: Any) -> bool:
    """Values pycrdt can hold at all (it refuses ints past 64 bits and objects in Deep form)."""
    if not plain(value):
        return False
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**63) <= value < 2**63
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_pycrdt_ok(v) for v in value)
    if isinstance(value, dict):
        return all(_pycrdt_ok(v) for v in value.values())
    return True


# --- awareness ---------------------------------------------------------------------------------

awareness_client_ids = st.one_of(
    st.integers(0, 2**32 - 1), st.integers(0, 20), st.sampled_from(EXTREME_CLIENTS)
)
awareness_clocks = st.one_of(st.integers(0, 10), st.integers(0, 2**53 - 1))


@st.composite
def awareness_states(draw: st.DrawFn) -> bytes:
    """The state of one awareness entry, as the bytes of its string."""
    shape = draw(st.integers(0, 6))
    if shape <= 2:
        return to_json(draw(json_values(max_leaves=8))).encode("utf-8", "surrogatepass")
    if shape == 3:
        return b"null"
    if shape == 4:  # a large but valid state (the limit is 64 KiB per update)
        size = draw(st.one_of(st.integers(0, 70_000), st.sampled_from((65_000, 65_536, 65_600))))
        return b'{"user":"' + b"x" * size + b'"}'
    if shape == 5:
        return draw(st.binary(max_size=24))  # not JSON, maybe not UTF-8
    return draw(st.text(max_size=24)).encode("utf-8", "surrogatepass")


@st.composite
def awareness_updates(draw: st.DrawFn) -> bytes:
    """An awareness update: entries of client id, clock and state, a count that may lie, and
    maybe trailing bytes."""
    entries = draw(
        st.lists(
            st.tuples(awareness_client_ids, awareness_clocks, awareness_states()),
            max_size=draw(st.sampled_from((2, 3, 12))),
        )
    )
    count = len(entries) if draw(st.integers(0, 9)) else draw(st.integers(0, 20))
    out = bytearray(var_uint(count))
    for client, clock, state in entries:
        out += var_uint(client) + var_uint(clock) + var_bytes(state)
    if not draw(st.integers(0, 9)):
        out += draw(st.binary(min_size=1, max_size=4))
    return bytes(out)


awareness_frames = st.one_of(
    awareness_updates().map(lambda update: b"\x01" + var_bytes(update)),
    awareness_updates().map(lambda update: b"\x01" + var_bytes(update)),
    awareness_updates().map(lambda update: b"\x01" + var_bytes(update)),
    st.just(b"\x03"),  # query-awareness
    st.builds(lambda body: b"\x01" + var_bytes(body), st.binary(max_size=32)),
)
