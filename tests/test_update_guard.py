"""The Yjs update decoder and the guard that checks client updates before pycrdt sees them."""

from __future__ import annotations

import base64
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pycrdt import Array, Doc, Map, Text

from crdt_state.errors import InvalidValue
from crdt_state.lib0 import (
    UNDEFINED,
    MalformedUpdate,
)
from crdt_state.protocol import decode_state_vector
from crdt_state.update_decoder import (
    decode_update,
)
from crdt_state.update_guard import ROOTS, UpdateGuard, UpdateRefused
from crdt_state.update_structs import (
    ANY,
    DELETED,
    GC,
    SKIP,
    STRING,
    TYPE,
    TYPE_ARRAY,
    TYPE_MAP,
    TYPE_TEXT,
    TYPE_XML_ELEMENT,
    TYPE_XML_FRAGMENT,
    TYPE_XML_HOOK,
    TYPE_XML_TEXT,
    TypeContent,
)
from crdt_state.values import MAX_DEPTH, check_json

from .yjs_encoder import (
    AnyContent,
    BigInt,
    BinaryContent,
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
    any_value,
    deletion,
    nested_any,
    nested_maps,
    set_value,
    var_string,
    var_uint,
)

EMPTY_UPDATE = b"\x00\x00"
HOSTILE = 1000  # the client id of crafted updates


# --- helpers -----------------------------------------------------------------------------------


class Server:
    """A panel doc as the room holds it: every transaction's update is learned by its guard."""

    def __init__(self, *, max_depth: int = MAX_DEPTH, initialize: bool = True) -> None:
        self.doc = Doc()
        self.roots = {name: self.doc.get(name, type=Map) for name in ROOTS}
        self.guard = UpdateGuard(max_depth, server_clients=[self.doc.client_id])
        self.doc.observe(lambda event: self.guard.learn(event.update))
        if initialize:  # the panel's first transaction, as the server writes it
            with self.doc.transaction(origin="server"):
                self.roots["$meta"]["schema"] = 1
                self.roots["$meta"]["epoch"] = "epoch-1"

    def receive(self, update: bytes, *, may_write_computed: bool = False) -> None:
        """What the room does with a client's update: check, then apply."""
        self.guard.check(update, may_write_computed=may_write_computed)
        self.doc.apply_update(update)

    def render(self) -> dict[str, Any]:
        return {name: orjson.loads(str(root)) for name, root in self.roots.items()}


class Client:
    """A client doc synced from the server; ``updates`` collects its own transactions."""

    def __init__(self, server: Server) -> None:
        self.doc = Doc()
        self.state = self.doc.get("$state", type=Map)
        self.computed = self.doc.get("$computed", type=Map)
        self.meta = self.doc.get("$meta", type=Map)
        self.updates: list[bytes] = []
        self._remote = False
        self.doc.observe(self._on_update)
        self.pull(server)

    def _on_update(self, event: Any) -> None:
        if not self._remote:
            self.updates.append(event.update)

    def pull(self, server: Server) -> None:
        self._remote = True
        try:
            self.doc.apply_update(server.doc.get_update(self.doc.get_state()))
        finally:
            self._remote = False

    def take(self) -> list[bytes]:
        updates, self.updates = self.updates, []
        return updates


def refused(
    guard: UpdateGuard, update: bytes, *, may_write_computed: bool = False
) -> UpdateRefused:
    """Assert the guard refuses ``update`` and is left exactly as it was."""
    before = guard._dump()
    with pytest.raises(UpdateRefused) as info:
        guard.check(update, may_write_computed=may_write_computed)
    assert guard._dump() == before
    assert info.value.reason
    return info.value


def state_vector(doc: Doc) -> dict[int, int]:
    return decode_state_vector(doc.get_state())


def sample_docs() -> Iterator[tuple[str, Doc, list[bytes]]]:
    """Docs built through pycrdt, with each transaction's update."""

    def build(name: str, edit: Callable[[Map, Doc], None]) -> tuple[str, Doc, list[bytes]]:
        doc = Doc()
        updates: list[bytes] = []
        doc.observe(lambda event: updates.append(event.update))
        edit(doc.get("$state", type=Map), doc)
        return name, doc, updates

    def maps(state: Map, doc: Doc) -> None:
        state["a"] = 1
        state["b"] = "two"
        state["c"] = {"x": [1, 2.5, None, True], "y": "é😀"}
        state["a"] = 2  # overwrite

    def nested(state: Map, doc: Doc) -> None:
        state["filter"] = Map({"value": 1, "tags": Array(["x", Map({"deep": Map({"z": 0})})])})
        state["filter"]["value"] = 2
        state["filter"]["tags"].append(Array([1, 2]))

    def text(state: Map, doc: Doc) -> None:
        state["title"] = Text("hello 😀 world")
        state["title"].insert(6, "dear ")
        del state["title"][0:2]
        state["title"] += "!"

    def deletes(state: Map, doc: Doc) -> None:
        state["m"] = Map({"a": Map({"b": 1}), "c": Array([1, 2, 3])})
        del state["m"]["a"]
        state["m"]["c"].pop(1)
        del state["m"]
        state["n"] = [1, 2]

    def arrays(state: Map, doc: Doc) -> None:
        state["list"] = Array([1, 2, 3])
        with doc.transaction():
            for i in range(20):
                state["list"].insert(i % 3, f"v{i}")
        del state["list"][2:6]

    for name, edit in [
        ("maps", maps),
        ("nested", nested),
        ("text", text),
        ("deletes", deletes),
        ("arrays", arrays),
    ]:
        yield build(name, edit)


SAMPLES = list(sample_docs())


# --- the decoder -------------------------------------------------------------------------------


@pytest.mark.parametrize("name, doc, updates", SAMPLES, ids=[s[0] for s in SAMPLES])
def test_pycrdt_updates_decode_and_lengths_match_the_state_vector(name, doc, updates):
    for update in [*updates, doc.get_update()]:
        decode_update(update)
    full = decode_update(doc.get_update())
    ends = {section.client: section.end for section in full.sections}
    assert ends == state_vector(doc)
    # Each transaction's update continues where the previous one ended.
    clocks: dict[int, int] = {}
    for update in updates:
        for section in decode_update(update).sections:
            assert section.clock == clocks.get(section.client, 0)
            clocks[section.client] = section.end
    assert clocks == state_vector(doc)


def test_decoded_items_carry_ids_parents_keys_and_contents():
    doc = Doc(client_id=77)
    state = doc.get("$state", type=Map)
    state["n"] = 1.5
    state["m"] = Map({"t": Text("a😀")})
    items = decode_update(doc.get_update()).structs
    by_kind = {s.kind: s for s in items}
    assert by_kind[ANY].content == [1.5]
    assert (by_kind[ANY].parent, by_kind[ANY].parent_sub) == ("$state", "n")
    map_item = next(s for s in items if s.kind == TYPE and s.content.ref == TYPE_MAP)
    text_item = next(s for s in items if s.kind == TYPE and s.content.ref == TYPE_TEXT)
    assert map_item.content == TypeContent(TYPE_MAP)
    assert text_item.parent == (77, map_item.clock)
    assert text_item.parent_sub == "t"
    string = by_kind[STRING]
    assert (string.content, string.length) == ("a😀", 3)  # UTF-16 code units, as Yjs counts
    assert string.parent == (77, text_item.clock)
    assert string.id == (77, string.clock)


def test_deletes_and_gc_structs_decode():
    doc = Doc(client_id=5)
    state = doc.get("$state", type=Map)
    state["m"] = Map({"a": 1, "b": Map({"c": 2})})
    del state["m"]
    decoded = decode_update(doc.get_update())
    kinds = [s.kind for s in decoded.structs]
    assert DELETED in kinds and GC in kinds
    assert decoded.deletes and all(client == 5 for client, _, _ in decoded.deletes)


def test_any_values_decode_to_python_values():
    values = [
        None,
        UNDEFINED,
        True,
        False,
        -5,
        2**31 - 1,
        1.5,
        Float32(0.25),
        "ü",
        [1, [2, {"k": "v"}]],
        {"a": {}, "b": []},
        BigInt(7),
    ]
    struct = decode_update(set_value(values)).structs[0]
    assert struct.content == [[None, UNDEFINED, True, False, -5, 2**31 - 1, 1.5, 0.25, "ü",
                               [1, [2, {"k": "v"}]], {"a": {}, "b": []}, 7]]  # fmt: skip
    assert struct.nesting == 4  # the list holding [1, [2, {"k": ...}]]
    assert decode_update(set_value(1)).structs[0].nesting == 0


@pytest.mark.parametrize(
    "update, reason",
    [
        (b"", "truncated"),
        (b"\x01", "more client sections"),
        (EMPTY_UPDATE + b"\x00", "trailing"),
        (b"\x05\x00\x00", "more client sections"),
        (b"\x01\x7f\x01\x00" + b"\x00" * 8, "more structs"),
        (b"\x00\x01\x01\x7f", "more deletions"),
        (b"\x00\x01" + b"\xff" * 11, "longer than 10 bytes"),
        (b"\x00\x01" + b"\xff" * 7 + b"\x7f", "above 2^53"),
        (set_value("x")[:-1], "truncated"),
    ],
)
def test_malformed_bytes_are_refused_with_a_reason(update, reason):
    with pytest.raises(MalformedUpdate) as info:
        decode_update(update)
    assert reason in str(info.value)


def _item(content: Any, clock: int = 0, **where: Any) -> bytes:
    """One item of client HOSTILE, by default the entry "k" of $state."""
    b = UpdateBuilder()
    b.item(HOSTILE, clock, content, **({"parent": "$state", "parent_sub": "k"} | where))
    return b.encode()


@pytest.mark.parametrize(
    "update, reason",
    [
        (_item(RawContent(11, b"\x00")), "unknown content ref 11"),
        (_item(RawContent(TYPE, b"\x07")), "unknown type ref 7"),
        (_item(RawContent(ANY, b"\x01\x73")), "unknown Any tag"),
        (_item(RawContent(STRING, b"\x02\xc3\x28")), "invalid UTF-8"),
        (_item(RawContent(STRING, b"\x03\xed\xa0\x80")), "invalid UTF-8"),  # a lone surrogate
        (_item(RawContent(ANY, b"\x01\x77\x05ab")), "string runs past"),
        (_item(RawContent(ANY, b"\x01\x75\xff\xff\x03")), "more elements than bytes"),
        (_item(RawContent(ANY, b"\x01\x76\x80\x80\x80\x01")), "more entries than bytes"),
        (_item(RawContent(ANY, b"\xff\xff\x7f\x7e")), "more Any values"),
        (_item(RawContent(ANY, b"\x01\x7b\x00\x00")), "float64 runs past"),
        (_item(RawContent(ANY, b"\x00", count=0)), "zero-length"),
        (_item(StringContent("")), "zero-length"),
        (_item(DeletedContent(0)), "zero-length"),
    ],
)
def test_malformed_items_are_refused_with_a_reason(update, reason):
    with pytest.raises(MalformedUpdate) as info:
        decode_update(update)
    assert reason in str(info.value)


def test_parent_info_must_be_zero_or_one_and_clients_appear_once():
    good = _item(AnyContent([1]))
    # info byte, then parent info 1 ("$state" follows): make it 2.
    at = good.index(b"\x01" + var_string("$state"))
    with pytest.raises(MalformedUpdate, match="parent info 2"):
        decode_update(good[:at] + b"\x02" + good[at + 1 :])
    section = good[1:-1]  # one client section, without the count and the empty delete set
    with pytest.raises(MalformedUpdate, match="two struct sections"):
        decode_update(b"\x02" + section + section + b"\x00")


def test_any_nesting_is_bounded_without_recursion():
    update = set_value(nested_any(200_000))  # far beyond Python's recursion limit
    with pytest.raises(MalformedUpdate, match="nested deeper than 256"):
        decode_update(update)
    deep = decode_update(update, max_any_depth=300_000).structs[0]
    assert deep.nesting == 200_000


def test_json_embed_format_binary_and_doc_contents_decode():
    b = UpdateBuilder()
    b.item(1, 0, JSONContent(['{"a":1}', "undefined"]), parent="$state", parent_sub="j")
    b.item(1, None, BinaryContent(b"\x01\x02"), parent="$state", parent_sub="b")
    b.item(1, None, EmbedContent(), parent="$state", parent_sub="e")
    b.item(1, None, FormatContent(), parent="$state", parent_sub="f")
    b.item(1, None, DocContent("g", {"autoLoad": True}), parent="$state", parent_sub="d")
    b.item(1, None, TypeRef(TYPE_XML_ELEMENT, "p"), parent="$state", parent_sub="x")
    structs = decode_update(b.encode()).structs
    assert [s.length for s in structs] == [2, 1, 1, 1, 1, 1]
    assert structs[0].content == ['{"a":1}', "undefined"]
    assert structs[1].content == b"\x01\x02"
    assert structs[3].content == ("bold", "true")
    assert structs[4].content == ("g", {"autoLoad": True})
    assert structs[5].content == TypeContent(TYPE_XML_ELEMENT, "p")


# --- the encoder agrees with pycrdt ------------------------------------------------------------


def test_crafted_updates_of_valid_shape_apply_in_pycrdt_as_expected():
    server = Server(initialize=False)
    server.receive(nested_maps(3, leaf="x"))
    server.receive(set_value([1, {"a": 2.5}, None, "é"], clock=4, key="v"))
    server.receive(set_value(BigInt(5), clock=5, key="b"))
    b = UpdateBuilder()
    arr = b.item(HOSTILE, 6, TypeRef(TYPE_ARRAY), parent="$state", parent_sub="arr")
    first = b.item(HOSTILE, None, AnyContent([1, 2]), parent=arr)
    b.item(HOSTILE, None, AnyContent([3]), origin=(HOSTILE, first[1] + 1))
    text = b.item(HOSTILE, None, TypeRef(TYPE_TEXT), parent="$state", parent_sub="t")
    b.item(HOSTILE, None, StringContent("hé😀"), parent=text)
    server.receive(b.encode())
    state = server.render()["$state"]
    assert state == {
        "k": {"k": {"k": {"k": "x"}}},
        "v": [1, {"a": 2.5}, None, "é"],
        "b": 5,
        "arr": [1, 2, 3],
        "t": "hé😀",
    }
    # An overwrite and a delete, written by hand.
    b = UpdateBuilder()
    b.item(HOSTILE, 15, AnyContent(["new"]), origin=(HOSTILE, 5))  # after the "b" entry
    b.delete(HOSTILE, 4)  # the "v" entry
    server.receive(b.encode())
    state = server.render()["$state"]
    assert state["b"] == "new" and "v" not in state


# --- real updates pass -------------------------------------------------------------------------


@pytest.mark.parametrize("name, doc, updates", SAMPLES, ids=[s[0] for s in SAMPLES])
def test_real_pycrdt_updates_pass_and_are_learned(name, doc, updates):
    server = Server()
    for update in updates:
        server.receive(update)
    assert server.render()["$state"] == orjson.loads(str(doc.get("$state", type=Map)))
    # Sending the whole state again (all duplicates) also passes.
    server.guard.check(doc.get_update(), may_write_computed=False)
    # A guard rebuilt from the doc knows everything the live one learned.
    rebuilt = UpdateGuard()
    rebuilt.learn(server.doc.get_update())
    assert rebuilt.stats()["types"] <= server.guard.stats()["types"]
    # (Deleted types are collected by yrs: the rebuilt guard sees them as garbage.)
    assert rebuilt.max_level <= server.guard.max_level


def test_concurrent_edits_from_two_clients_merge_and_pass():
    server = Server()
    server.roots["$state"]["form"] = Map({"name": "a", "items": Array([1, 2])})
    server.roots["$state"]["notes"] = Text("hello")
    alice, bob = Client(server), Client(server)
    form_a, form_b = alice.state["form"], bob.state["form"]
    form_a["name"] = "alice"
    form_b["name"] = "bob"  # the same key, concurrently
    form_a["items"].insert(1, Map({"x": 1}))
    form_b["items"].insert(1, Map({"y": 2}))  # the same position, concurrently
    alice.state["notes"].insert(5, " world")
    bob.state["notes"].insert(0, ">> ")
    form_b["extra"] = Map({"deep": Map({"er": [1, {"k": 2}]})})
    del form_a["items"][0]
    for update in alice.take() + bob.take():
        server.receive(update)
    # Both clients catch up; the merged updates of one client pass as a whole, too.
    merged = alice.doc.get_update(server.doc.get_state())
    server.guard.check(merged, may_write_computed=False)
    alice.pull(server)
    bob.pull(server)
    view = server.render()["$state"]
    assert view == orjson.loads(str(alice.state)) == orjson.loads(str(bob.state))
    assert view["notes"] == ">> hello world"
    assert len(view["form"]["items"]) == 3


def test_a_client_may_write_computed_only_when_allowed():
    server = Server()
    client = Client(server)
    client.computed["score"] = 3
    (update,) = client.take()
    assert refused(server.guard, update).code == "computed"
    server.receive(update, may_write_computed=True)
    client.state["ok"] = Map({"a": 1})
    del client.computed["score"]
    for update in client.take():
        server.receive(update, may_write_computed=True)
    client.computed["score"] = 4
    (update,) = client.take()
    server.receive(update, may_write_computed=True)
    del client.computed["score"]
    (update,) = client.take()
    assert refused(server.guard, update).code == "computed"


# --- hostile updates are refused ---------------------------------------------------------------


def test_twenty_thousand_nested_maps_are_refused_quickly_without_recursion_error():
    server = Server()
    update = nested_maps(20_000, client=2**52 + 12345)
    assert len(update) > 240_000
    start = time.perf_counter()
    info = refused(server.guard, update)
    assert time.perf_counter() - start < 1.0
    assert info.code == "too_deep" and info.too_large and info.close_code == 4413
    assert "level 64" in info.reason


def test_nesting_is_refused_exactly_at_the_limit_as_the_rest_face_refuses_it():
    for depth in (MAX_DEPTH - 3, MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH):
        server = Server()
        update = nested_maps(depth, leaf=1)
        view: Any = 1
        for _ in range(depth):
            view = {"k": view}
        try:
            check_json({"$state": {"k": view}, "$computed": {}})
            rest_accepts = True
        except InvalidValue:
            rest_accepts = False
        try:
            server.receive(update)
            guard_accepts = True
        except UpdateRefused:
            guard_accepts = False
        assert guard_accepts == rest_accepts == (depth <= MAX_DEPTH - 2)
        if guard_accepts:
            assert server.guard.max_level == depth + 1


@pytest.mark.parametrize("maps", [0, 1, 30, 60, 61, 62])
@pytest.mark.parametrize("any_depth", [1, 2, 3, 30])
def test_json_inside_any_values_counts_like_the_rest_face(maps, any_depth):
    server = Server()
    if maps:
        server.receive(nested_maps(maps))
    parent: str | tuple[int, int] = (HOSTILE, maps - 1) if maps else "$state"
    update = set_value(nested_any(any_depth), clock=maps, parent=parent, key="v")
    value: Any = 1
    for _ in range(any_depth):
        value = {"k": value}
    tree: Any = {"v": value}
    for _ in range(maps):
        tree = {"k": tree}
    try:
        check_json({"$state": tree, "$computed": {}})
        rest_accepts = True
    except InvalidValue:
        rest_accepts = False
    try:
        server.guard.check(update, may_write_computed=False)
        guard_accepts = True
    except UpdateRefused as exc:
        assert exc.code == "too_deep"
        guard_accepts = False
    assert guard_accepts == rest_accepts


def test_depth_that_grows_one_level_per_update_is_refused_at_the_limit():
    server = Server()
    parent: str | tuple[int, int] = "$state"
    accepted = 0
    for clock in range(MAX_DEPTH + 5):
        update = nested_maps(1, clock=clock, parent=parent)
        try:
            server.receive(update)
        except UpdateRefused as exc:
            assert exc.code == "too_deep"
            break
        accepted += 1
        parent = (HOSTILE, clock)
    assert accepted == MAX_DEPTH - 2  # maps at levels 2..63 under the root at level 1
    assert server.guard.max_level == MAX_DEPTH - 1
    # Scalars may still go at the bottom; a JSON object may not.
    server.receive(set_value("leaf", clock=accepted, parent=parent, key="x"))
    refused(server.guard, set_value({}, clock=accepted + 1, parent=parent, key="y"))
    # The doc is intact and renders.
    assert "leaf" in str(server.roots["$state"])


def test_a_rebuilt_guard_knows_existing_depths():
    server = Server()
    server.receive(nested_maps(MAX_DEPTH - 3))  # deepest map at level 62
    deepest = (HOSTILE, MAX_DEPTH - 4)
    rebuilt = UpdateGuard()
    rebuilt.learn(server.doc.get_update())
    assert rebuilt.max_level == server.guard.max_level == MAX_DEPTH - 2
    assert rebuilt.level_of(deepest) == MAX_DEPTH - 2
    one_more = nested_maps(1, clock=MAX_DEPTH - 3, parent=deepest)
    rebuilt.check(one_more, may_write_computed=False)  # level 63: allowed
    two_more = nested_maps(2, clock=MAX_DEPTH - 3, parent=deepest)
    assert refused(rebuilt, two_more).code == "too_deep"
    # An overwrite (origin: the old value) of the deepest key inherits its parent and level.
    b = UpdateBuilder()
    b.item(HOSTILE, MAX_DEPTH - 3, AnyContent([nested_any(3)]), origin=deepest)
    assert refused(rebuilt, b.encode()).code == "too_deep"
    b = UpdateBuilder()  # replaces the map at level 62 with JSON at levels 62 and 63
    b.item(HOSTILE, MAX_DEPTH - 3, AnyContent([nested_any(2)]), origin=deepest)
    rebuilt.check(b.encode(), may_write_computed=False)


def test_deep_nesting_below_an_existing_type_is_refused_even_when_split_over_updates():
    server = Server()
    server.roots["$state"]["old"] = Map()  # created long ago, by the server
    old = next(s.id for s in decode_update(server.doc.get_update()).structs if s.kind == TYPE)
    clock = 0
    parent: str | tuple[int, int] = old
    with pytest.raises(UpdateRefused):
        for _ in range(10):
            server.receive(nested_maps(10, clock=clock, parent=parent))
            parent = (HOSTILE, clock + 9)
            clock += 10
    assert server.guard.max_level == MAX_DEPTH - 2  # 2 (old) + 6 × 10 nested maps
    assert clock == 60


@pytest.mark.parametrize(
    "value, code",
    [
        (BigInt(2**53), "value"),
        (BigInt(-(2**63)), "value"),
        (2**53, "value"),  # a var-int
        (-(2**60), "value"),
        (float("nan"), "value"),
        (float("inf"), "value"),
        (Float32(float("-inf")), "value"),
        (b"\x00\x01", "value"),
        ({"a": [1, {"b": float("nan")}]}, "value"),
        ([b"x"], "value"),
    ],
)
def test_values_json_cannot_hold_are_refused(value, code):
    server = Server()
    info = refused(server.guard, set_value(value))
    assert info.code == code and info.close_code == 4400


def test_values_at_the_edges_pass():
    server = Server()
    for clock, value in enumerate(
        [BigInt(2**53 - 1), -(2**53 - 1), UNDEFINED, None, 1e300, Float32(0.5), {"": [[]]}]
    ):
        server.receive(set_value(value, clock=clock, key=f"k{clock}"))


WHOLE_FLOATS_SHOWN_AS_BIG_INTEGERS = [
    Float64(2.0**53),
    Float64(-(2.0**53)),
    Float64(2.0**60),
    Float64(2.0**63),  # the doc shows 2^63 − 1 (saturated)
    Float64(-(2.0**63)),
    Float32(2.0**60),
    Float32(-(2.0**62)),
]


@pytest.mark.parametrize("number", WHOLE_FLOATS_SHOWN_AS_BIG_INTEGERS, ids=repr)
def test_whole_floats_the_doc_shows_as_big_integers_are_refused_as_the_rest_face_does(number):
    """yrs renders a whole float within the i64 range as an integer: beyond ±(2^53−1) that is
    an integer no JSON client holds exactly, which the REST face refuses too."""
    with pytest.raises(InvalidValue):
        check_json({"n": float(number)})
    for value in (number, {"a": [1, number]}):
        info = refused(Server().guard, set_value(value))
        assert info.code == "value" and "whole number" in info.reason
    # As the doc would show it, without the guard.
    doc = Doc()
    doc.apply_update(set_value(number))
    shown = orjson.loads(str(doc.get("$state", type=Map)))["k"]
    assert isinstance(shown, int) and abs(shown) > 2**53 - 1


def test_floats_beyond_the_whole_number_range_pass_as_the_rest_face_lets_them():
    server = Server()
    numbers = [Float64(2.0**53 - 1), Float64(-(2.0**53 - 1)), Float64(2.0**64), Float32(2.0**64)]
    numbers += [Float64(-(2.0**70)), Float64(1.5)]
    for clock, number in enumerate(numbers):
        check_json({"n": float(number)})
        server.receive(set_value(number, clock=clock, key=f"n{clock}"))
    shown = server.render()["$state"]
    assert shown["n2"] == 2.0**64 and isinstance(shown["n2"], float)


def test_a_pycrdt_client_setting_a_big_integer_is_refused():
    """pycrdt sends a Python int as a float (a float32 when it fits): 2**60 arrives as the
    whole float 2^60, which the doc would show as 1152921504606846976."""
    server = Server()
    client = Client(server)
    client.state["big"] = 2**60
    (update,) = client.take()
    assert refused(server.guard, update).code == "value"
    other = Client(server)
    other.state["fine"] = 2**53 - 1  # a float64
    server.receive(other.take()[0])
    assert server.render()["$state"]["fine"] == 2**53 - 1


@pytest.mark.parametrize(
    "content, word",
    [
        (TypeRef(TYPE_XML_ELEMENT, "p"), "Y.XmlElement"),
        (TypeRef(TYPE_XML_FRAGMENT), "Y.XmlFragment"),
        (TypeRef(TYPE_XML_TEXT), "Y.XmlText"),
        (TypeRef(TYPE_XML_HOOK, "h"), "Y.XmlHook"),
        (BinaryContent(b"\x00"), "Binary"),
        (EmbedContent(), "Embed"),
        (FormatContent(), "Format"),
        (JSONContent(), "JSON"),
        (DocContent(), "subdocument"),
    ],
)
def test_contents_panels_do_not_use_are_refused(content, word):
    server = Server()
    info = refused(server.guard, _item(content))
    assert info.code == "content" and word in info.reason


def test_strings_belong_in_texts_and_texts_hold_only_strings():
    server = Server()
    server.receive(_item(TypeRef(TYPE_TEXT), parent_sub="t"))
    server.receive(_item(TypeRef(TYPE_ARRAY), 1, parent_sub="a"))
    refused(server.guard, _item(StringContent("x"), 2, parent_sub="s"))  # a string in a map
    b = UpdateBuilder()
    b.item(HOSTILE, 2, StringContent("x"), parent=(HOSTILE, 1))
    refused(server.guard, b.encode())  # in an array
    for content in (AnyContent([1]), TypeRef(TYPE_MAP)):
        b = UpdateBuilder()
        b.item(HOSTILE, 2, content, parent=(HOSTILE, 0))
        assert refused(server.guard, b.encode()).code == "content"
    b = UpdateBuilder()
    b.item(HOSTILE, 2, StringContent("ok"), parent=(HOSTILE, 0))
    server.receive(b.encode())
    assert server.render()["$state"]["t"] == "ok"


def test_only_the_three_roots_exist_and_they_are_maps():
    server = Server()
    info = refused(server.guard, set_value(1, parent="other"))
    assert info.code == "root" and "'other'" in info.reason
    # doc.getArray('$state').insert(...) and doc.getText('$state'): items without a key.
    info = refused(server.guard, _item(AnyContent([1]), parent_sub=None))
    assert "without a key" in info.reason
    refused(server.guard, _item(StringContent("x"), parent_sub=None))
    refused(server.guard, _item(AnyContent([1]), parent="$computed", parent_sub=None),
            may_write_computed=True)  # fmt: skip
    # A real client doing it.
    client = Client(server)
    client.doc.get("other", type=Array).append(1)
    (update,) = client.take()
    assert refused(server.guard, update).code == "root"


def test_meta_is_server_owned():
    server = Server()
    meta_ids = [s for s in decode_update(server.doc.get_update()).structs if s.parent == "$meta"]
    assert meta_ids
    client = Client(server)
    client.meta["epoch"] = "mine"
    (update,) = client.take()
    assert refused(server.guard, update, may_write_computed=True).code == "server_owned"
    client.meta["new"] = Map({"a": 1})
    (update,) = client.take()
    refused(server.guard, update)
    # Deleting a $meta entry, as a client would and by hand.
    del client.meta["schema"]
    (update,) = client.take()
    assert refused(server.guard, update).code == "server_owned"
    target = meta_ids[0]
    assert refused(server.guard, deletion(target.client, target.clock)).code == "server_owned"
    # A range covering $state and $meta items.
    server.roots["$state"]["x"] = 1
    assert refused(server.guard, deletion(target.client, 0, 100)).code == "server_owned"
    # Inside a map living in $meta, and via an origin inherited from a $meta entry.
    with server.doc.transaction():
        server.roots["$meta"]["ids"] = Map({"a": 1})
    ids = next(
        s.id
        for s in decode_update(server.doc.get_update()).structs
        if s.kind == TYPE and s.parent_sub == "ids"
    )
    refused(server.guard, set_value(2, parent=ids))
    b = UpdateBuilder()
    b.item(HOSTILE, 0, AnyContent(["x"]), origin=target.id)
    refused(server.guard, b.encode())


def test_deleting_state_items_is_allowed():
    server = Server()
    server.roots["$state"]["a"] = Map({"b": 1})
    client = Client(server)
    del client.state["a"]
    for update in client.take():
        server.receive(update)
    assert server.render()["$state"] == {}


def test_items_under_arrays_and_texts_have_no_key_and_map_items_have_one():
    server = Server()
    server.receive(_item(TypeRef(TYPE_ARRAY), parent_sub="a"))
    server.receive(_item(TypeRef(TYPE_MAP), 1, parent_sub="m"))
    b = UpdateBuilder()
    b.item(HOSTILE, 2, AnyContent([1]), parent=(HOSTILE, 0), parent_sub="key")
    assert "map key" in refused(server.guard, b.encode()).reason
    b = UpdateBuilder()
    b.item(HOSTILE, 2, AnyContent([1]), parent=(HOSTILE, 1))
    assert "without a key" in refused(server.guard, b.encode()).reason


def test_trailing_garbage_and_malformed_updates_are_refused():
    server = Server()
    info = refused(server.guard, set_value(1) + b"\x00")
    assert info.code == "malformed" and "trailing" in info.reason and info.close_code == 4400
    refused(server.guard, set_value(1)[:-3])
    info = refused(server.guard, set_value(nested_any(MAX_DEPTH + 1)))
    assert info.code == "too_deep" and info.close_code == 4413


def test_clocks_beyond_32_bits_are_refused():
    """yrs 0.28 keeps clocks in 32 bits: it truncates larger ones (an item at clock 2^32 lands
    at clock 0) and panics on a range across 2^32."""
    server = Server()
    server.receive(set_value(1))
    top = 2**32 - 1
    cases = []
    b = UpdateBuilder()
    b.gc(HOSTILE, top, 2)  # with a delete of a known item: pycrdt panics
    b.delete(HOSTILE, 0, 1)
    cases.append(b.encode())
    cases.append(set_value(1, client=HOSTILE + 1, clock=2**32))
    b = UpdateBuilder()
    b.item(HOSTILE, 1, AnyContent([1]), origin=(HOSTILE + 5, 2**32 + 3))
    cases.append(b.encode())
    b = UpdateBuilder()
    b.item(HOSTILE, 1, AnyContent([1]), right_origin=(HOSTILE, 2**40))
    cases.append(b.encode())
    cases.append(set_value(1, clock=1, parent=(HOSTILE, 2**32)))
    cases.append(deletion(HOSTILE, 0, 2**32))
    for update in cases:
        info = refused(server.guard, update)
        assert info.code == "malformed" and "above" in info.reason
    decode_update(cases[0])  # a valid Yjs update all the same


def test_a_type_whose_parent_cannot_be_determined_is_refused():
    server = Server()
    b = UpdateBuilder()
    b.item(HOSTILE, 0, TypeRef(TYPE_MAP), origin=(4242, 7))  # an origin nobody has
    assert "cannot be determined" in refused(server.guard, b.encode()).reason
    b = UpdateBuilder()
    b.item(HOSTILE, 0, TypeRef(TYPE_MAP), parent=(4242, 7), parent_sub="k")
    refused(server.guard, b.encode())
    # A value with an unknown origin is allowed (yrs keeps it pending)...
    b = UpdateBuilder()
    b.item(HOSTILE, 0, AnyContent([1, "x"]), origin=(4242, 7))
    server.receive(b.encode())
    # ... but not one holding JSON containers: their depth is unknown.
    b = UpdateBuilder()
    b.item(HOSTILE + 1, 0, AnyContent([{"a": 1}]), origin=(4242, 7))
    assert refused(server.guard, b.encode()).code == "too_deep"


def test_updates_that_skip_clocks_are_refused():
    """yrs would keep what follows a gap pending (another struct may later take those ids), and
    its pending updates have left docs whose get_update() panics. A client's live update
    with a gap (right after a reconnect) is dropped and the client asked again: sessions.py."""
    server = Server()
    server.receive(set_value(1))  # client HOSTILE is at clock 1
    info = refused(server.guard, set_value(2, clock=3))
    assert info.code == "gap" and "skips clocks 1..3" in info.reason
    b = UpdateBuilder()
    b.item(HOSTILE, 1, AnyContent([2]), parent="$state", parent_sub="k")
    b.skip(HOSTILE, None, 2)
    b.item(HOSTILE, None, AnyContent([3]), parent="$state", parent_sub="k")
    assert refused(server.guard, b.encode()).code == "gap"
    # The GC-after-a-gap trick: a chain "under" a pending GC struct, revived later when another
    # struct takes the GC's clock.
    b = UpdateBuilder()
    b.skip(HOSTILE + 1, 0, 5)
    at = b.gc(HOSTILE + 1, None, 1)
    for i in range(100):
        at = b.item(HOSTILE + 2, i, TypeRef(TYPE_MAP), parent=at, parent_sub="k")
    refused(server.guard, b.encode())
    # A new client starts at clock 0; one the server knows continues where it is.
    server.receive(set_value(3, client=HOSTILE + 3))
    server.receive(set_value(4, clock=1, key="j"))


def test_structs_waiting_for_another_client_cannot_be_relied_on():
    server = Server()
    b = UpdateBuilder()
    m = b.item(HOSTILE, 0, TypeRef(TYPE_MAP), origin=(4242, 0))  # 4242:0 is not there
    b.item(HOSTILE + 1, 0, AnyContent([1]), parent=m, parent_sub="k")
    assert "cannot be determined" in refused(server.guard, b.encode()).reason
    b = UpdateBuilder()
    v = b.item(HOSTILE, 0, AnyContent([1]), origin=(4242, 0))  # allowed: a value, pending
    b.item(HOSTILE + 1, 0, TypeRef(TYPE_MAP), origin=v)  # a type after it: not
    assert "cannot be determined" in refused(server.guard, b.encode()).reason


def test_garbage_collected_parents_make_garbage_that_does_not_count():
    server = Server()
    server.roots["$state"]["m"] = Map({"a": Map({"b": 1})})
    structs = decode_update(server.doc.get_update()).structs
    m = next(s.id for s in structs if s.kind == TYPE and s.parent_sub == "m")
    a = next(s.id for s in structs if s.kind == TYPE and s.parent_sub == "a")
    del server.roots["$state"]["m"]
    rebuilt = UpdateGuard()
    rebuilt.learn(server.doc.get_update())  # m is a Deleted item now, a a GC struct
    for parent in (m, a):
        update = nested_maps(MAX_DEPTH + 10, parent=parent)
        rebuilt.check(update, may_write_computed=False)
        # yrs agrees: all of it is garbage.
        doc = Doc()
        root = doc.get("$state", type=Map)
        doc.apply_update(server.doc.get_update())
        doc.apply_update(update)
        assert str(root) == "{}"
    # The live guard never saw m collected: it still counts the levels (safe side).
    refused(server.guard, nested_maps(MAX_DEPTH + 10, parent=a))


def test_origin_and_right_origin_in_different_types_are_refused():
    server = Server()
    server.receive(_item(TypeRef(TYPE_ARRAY), parent_sub="a"))
    server.receive(_item(TypeRef(TYPE_ARRAY), 1, parent_sub="b"))
    b = UpdateBuilder()
    first = b.item(HOSTILE, 2, AnyContent([1]), parent=(HOSTILE, 0))
    second = b.item(HOSTILE, 3, AnyContent([2]), parent=(HOSTILE, 1))
    server.receive(b.encode())
    b = UpdateBuilder()
    b.item(HOSTILE, 4, AnyContent([3]), origin=first, right_origin=second)
    assert "different types" in refused(server.guard, b.encode()).reason


def test_nothing_may_split_a_character_outside_the_bmp():
    """yrs keeps a split surrogate pair whole on one side and writes a zero-length string;
    Yjs replaces both halves with U+FFFD: browsers and the server would show different text."""
    server = Server()
    server.receive(_item(TypeRef(TYPE_TEXT), parent_sub="t"))
    b = UpdateBuilder()
    b.item(HOSTILE, 1, StringContent("a😀b"), parent=(HOSTILE, 0))  # a:1, 😀:2-3, b:4
    server.receive(b.encode())
    other = HOSTILE + 1
    for where in ({"origin": (HOSTILE, 2)}, {"right_origin": (HOSTILE, 3)}):
        b = UpdateBuilder()
        b.item(other, 0, StringContent("X"), **where)
        info = refused(server.guard, b.encode())
        assert info.code == "split" and "inside a character" in info.reason
    for start, length in ((3, 1), (2, 1), (1, 2)):
        assert (
            "splits a character" in refused(server.guard, deletion(HOSTILE, start, length)).reason
        )
    b = UpdateBuilder()
    b.item(other, 0, StringContent("X"), origin=(HOSTILE, 3), right_origin=(HOSTILE, 4))
    server.receive(b.encode())
    server.receive(deletion(HOSTILE, 2, 2))
    assert server.render()["$state"]["t"] == "aXb"


def test_a_guard_learns_the_zero_length_strings_yrs_writes():
    doc = Doc(client_id=9)
    text = doc.get("$state", type=Map)["t"] = Text("😀😀")
    b = UpdateBuilder()
    b.item(50, 0, StringContent("X"), origin=(9, 3))  # inside the second emoji
    doc.apply_update(b.encode())  # straight to pycrdt, without a guard
    assert str(text) == "😀😀X"
    full = doc.get_update()
    with pytest.raises(MalformedUpdate, match="zero-length String"):
        decode_update(full)
    empty = decode_update(full, allow_empty_strings=True).structs[-1]
    assert (empty.kind, empty.content, empty.length) == (STRING, "", 0)
    guard = UpdateGuard()
    guard.learn(full)
    refused(guard, full)  # a client may not send one


def test_a_parent_id_that_is_not_a_type_is_refused():
    server = Server()
    server.receive(set_value(1))
    b = UpdateBuilder()
    b.item(HOSTILE, 1, AnyContent([2]), parent=(HOSTILE, 0), parent_sub="x")
    assert "not a type" in refused(server.guard, b.encode()).reason


def test_referring_to_or_deleting_future_server_changes_is_refused():
    server = Server()
    me = server.doc.client_id
    future = max(section.end for section in decode_update(server.doc.get_update()).sections)
    b = UpdateBuilder()
    b.item(HOSTILE, 0, AnyContent(["x"]), origin=(me, future + 3))
    assert refused(server.guard, b.encode()).code == "server_owned"
    assert refused(server.guard, deletion(me, future, 10)).code == "server_owned"
    # Other unknown clients: allowed (yrs keeps them pending).
    server.receive(deletion(4242, 0, 10))


def test_resending_what_the_server_has_is_harmless():
    server = Server()
    server.roots["$state"]["a"] = Map({"b": 1})
    client = Client(server)
    # The whole state, $meta items included: yrs skips what it has.
    server.receive(client.doc.get_update())
    # A struct that overlaps the known state: only its new part counts, checked as declared.
    b = UpdateBuilder()
    b.item(HOSTILE, 0, AnyContent([1, 2, 3]), parent="$state", parent_sub="n")
    server.receive(b.encode())
    b = UpdateBuilder()
    b.item(HOSTILE, 0, AnyContent([1, 2, 3, 4, 5]), parent="$meta", parent_sub="n")
    refused(server.guard, b.encode())


def test_learn_refuses_malformed_updates_and_changes_nothing():
    server = Server()
    before = server.guard._dump()
    with pytest.raises(MalformedUpdate):
        server.guard.learn(b"\x01\x02")
    assert server.guard._dump() == before


def test_the_guard_stays_compact():
    server = Server()
    with server.doc.transaction():
        for i in range(1000):
            server.roots["$state"][f"k{i}"] = i
    stats = server.guard.stats()
    assert stats["ranges"] <= 3  # $meta entries, then 1000 adjacent $state entries
    assert stats["types"] == 0


# --- entries too deep to render ----------------------------------------------------------------

LOADER = 5000  # the client that wrote the deep entries, long ago


def _deep_log() -> list[bytes]:
    """A log no client could write today: one update with 1,100 nested maps under $state.deep
    (levels 2..1101) and a normal $state.ok, one with a JSON object 1,100 deep in an Any value
    under $state.blob."""
    b = UpdateBuilder()
    at: str | tuple[int, int] = "$state"
    for level in range(2, 1102):
        key = "deep" if level == 2 else "k"
        at = b.item(LOADER, None, TypeRef(TYPE_MAP), parent=at, parent_sub=key)
    ok = b.item(LOADER, None, TypeRef(TYPE_MAP), parent="$state", parent_sub="ok")
    b.item(LOADER, None, AnyContent([{"a": {"b": 1}}]), parent=ok, parent_sub="v")  # to level 4
    return [b.encode(), set_value(nested_any(1100), client=LOADER, clock=1102, key="blob")]


def _loaded(log: list[bytes]) -> Server:
    """A room's doc after loading the log (no check: it is history), its guard learning it."""
    server = Server()
    for update in log:
        server.doc.apply_update(update)
    return server


def test_too_deep_names_the_root_entries_holding_deep_containers():
    server = _loaded(_deep_log())
    rebuilt = UpdateGuard()
    rebuilt.learn(server.doc.get_update())  # as a room starts with a loaded doc
    deep, blob, ok = ("$state", "deep"), ("$state", "blob"), ("$state", "ok")
    for guard in (server.guard, rebuilt):
        assert guard.too_deep(255) == guard.too_deep(1101) == {deep, blob}
        assert guard.too_deep(1102) == set()
        assert guard.too_deep(4) == {deep, blob, ok}
        assert guard.too_deep(5) == {deep, blob}
        assert guard.max_level == 1101  # Any values do not count there: only types


def test_too_deep_follows_learned_deletions_and_overwrites_of_an_entry():
    server = _loaded(_deep_log())
    state = server.roots["$state"]
    del state["deep"]  # as pycrdt writes it: the entry's map and all below it in the delete set
    assert server.guard.too_deep(255) == {("$state", "blob")}
    # A client replaces the blob with a scalar: its item has only an origin (the old value).
    client = Client(server)
    client.state["blob"] = "small now"
    (update,) = client.take()
    assert decode_update(update).structs[0].parent is None
    server.receive(update)
    assert server.guard.too_deep(2) == {("$state", "ok")}
    # A value that holds containers set over a scalar inherits its key from it.
    with server.doc.transaction():
        state["ok"] = 1
    with server.doc.transaction():
        state["ok"] = Map({"a": Map({"b": Map()})})
    assert server.guard.too_deep(4) == {("$state", "ok")}
    assert server.guard.too_deep(5) == set()
    fresh = UpdateGuard()
    fresh.learn(server.doc.get_update())
    assert fresh.too_deep(2) == {("$state", "ok")}


def test_too_deep_drops_the_value_that_lost_a_concurrent_write():
    server = Server()
    alice, bob = Client(server), Client(server)
    alice.state["x"] = Map({"a": Map()})
    bob.state["x"] = Map({"b": 1})  # the same key, concurrently: one value wins, yrs deletes one
    for update in alice.take() + bob.take():
        server.receive(update)
    winner = server.render()["$state"]["x"]
    assert server.guard.too_deep(2) == {("$state", "x")}
    assert server.guard.too_deep(3) == ({("$state", "x")} if "a" in winner else set())
    assert server.guard.stats()["entries"] == 1
    with server.doc.transaction():  # set and deleted in one transaction: never an entry
        server.roots["$state"]["t"] = Map({"a": Map()})
        del server.roots["$state"]["t"]
    assert server.guard.stats()["entries"] == 1


def test_too_deep_keeps_an_entry_whose_deep_part_alone_was_deleted():
    """The guard cannot tell that the deepest level of a value went down: the entry stays
    listed (the safe side) until a guard learns the doc afresh (yrs collected the deleted
    maps, so its update shows them as Deleted and GC structs)."""
    server = _loaded(_deep_log())
    inner = server.roots["$state"]["deep"]
    del inner["k"]  # everything below level 2
    assert ("$state", "deep") in server.guard.too_deep(255)
    fresh = UpdateGuard()
    fresh.learn(server.doc.get_update())
    assert fresh.too_deep(255) == {("$state", "blob")}
    assert fresh.too_deep(2) == {("$state", "blob"), ("$state", "ok"), ("$state", "deep")}


def test_too_deep_counts_entries_of_every_root_and_never_changes_on_a_check():
    server = Server()
    server.receive(nested_maps(10, parent="$computed", first_key="c"), may_write_computed=True)
    server.receive(set_value(nested_any(20), clock=10, key="j"))
    assert server.guard.too_deep(11) == {("$computed", "c"), ("$state", "j")}
    assert server.guard.too_deep(12) == {("$state", "j")}
    # A checked (not applied) deletion of both changes nothing.
    b = UpdateBuilder()
    b.delete(HOSTILE, 0, 11)
    refused(server.guard, b.encode())  # $computed: not for this connection
    server.guard.check(deletion(HOSTILE, 10), may_write_computed=False)
    assert server.guard.too_deep(11) == {("$computed", "c"), ("$state", "j")}
    server.receive(deletion(HOSTILE, 10))
    assert server.guard.too_deep(2) == {("$computed", "c")}


# --- fuzzing -----------------------------------------------------------------------------------


def _valid_updates() -> list[bytes]:
    updates = [u for _, doc, ups in sample_docs() for u in [*ups, doc.get_update()]]
    updates += [nested_maps(5, leaf=1), set_value({"a": [1, 2.5, "x", None]})]
    b = UpdateBuilder()
    b.item(1, 0, TypeRef(TYPE_XML_ELEMENT, "p"), parent="$state", parent_sub="x")
    b.item(1, None, DocContent(), parent="$state", parent_sub="d")
    b.item(1, None, FormatContent(), parent="$state", parent_sub="f")
    b.item(1, None, JSONContent(), parent="$state", parent_sub="j")
    b.gc(2, 0, 3)
    b.delete(3, 1, 2)
    updates.append(b.encode())
    return updates


def _check_only_refuses(server: Server, data: bytes) -> None:
    before = server.guard._dump()
    try:
        server.guard.check(data, may_write_computed=True)
    except UpdateRefused:
        assert server.guard._dump() == before
    try:
        decode_update(data)
    except MalformedUpdate:
        pass
    try:
        UpdateGuard().learn(data)
    except MalformedUpdate:
        pass


def test_fuzz_random_bytes():
    rng = random.Random(1234)
    server = Server()
    for _ in range(3000):
        size = rng.choice([1, 2, 3, 5, 8, 16, 64, 300])
        data = bytes(rng.getrandbits(8) for _ in range(size))
        if rng.random() < 0.5:  # look like an update: small counts first
            data = bytes([rng.randrange(3), rng.randrange(3)]) + data
        _check_only_refuses(server, data)


def test_fuzz_truncations_and_mutations_of_valid_updates():
    rng = random.Random(99)
    server = Server()
    updates = _valid_updates()
    for update in updates:
        for cut in range(len(update)):
            if cut < 64 or rng.random() < 0.05:
                _check_only_refuses(server, update[:cut])
    for _ in range(4000):
        data = bytearray(rng.choice(updates))
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            at = rng.randrange(len(data))
            if op < 0.5:
                data[at] = rng.getrandbits(8)
            elif op < 0.7:
                data[at] ^= 1 << rng.randrange(8)
            elif op < 0.85:
                data.insert(at, rng.getrandbits(8))
            elif len(data) > 2:
                del data[at]
        _check_only_refuses(server, bytes(data))


def test_accepted_mutations_do_not_break_pycrdt():
    """Whatever the guard lets through applies in pycrdt and still renders."""
    rng = random.Random(7)
    base = [nested_maps(3, leaf=1), set_value({"a": [1, "x"]}, clock=4, key="v")]
    passed = 0
    for _ in range(1500):
        server = Server()
        server.receive(base[0])
        data = bytearray(base[1])
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.getrandbits(8)
        try:
            server.guard.check(bytes(data), may_write_computed=False)
        except UpdateRefused:
            continue
        passed += 1
        try:
            server.doc.apply_update(bytes(data))
        except ValueError:
            pass  # pycrdt refused it cleanly: fine
        check_json(server.render())
    assert passed > 0


def _view_depth(view: Any) -> int:
    """The deepest container level of a JSON value (the value itself at level 0)."""
    deepest = 0
    stack = [(view, 0)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, level)
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, level + 1) for child in children)
    return deepest


def _random_value(rng: random.Random, depth: int) -> Any:
    pick = rng.random()
    if depth and pick < 0.3:
        return {f"k{i}": _random_value(rng, depth - 1) for i in range(rng.randint(0, 2))}
    if depth and pick < 0.5:
        return [_random_value(rng, depth - 1) for _ in range(rng.randint(0, 2))]
    return rng.choice([1, 2.5, "s", None, True, UNDEFINED])


def _random_update(rng: random.Random, doc: Doc, guard: UpdateGuard) -> bytes:
    """A well-formed update of random shape: items anywhere, referring to anything."""
    full = decode_update(doc.get_update(), allow_empty_strings=True)
    items = [s for s in full.structs if s.kind not in (GC, SKIP) and s.length]
    # Mostly not the server's items (its $meta entries would make most updates refused).
    mine = [s for s in items if s.client != doc.client_id or rng.random() < 0.05]
    ids = [(s.client, s.clock + rng.randrange(s.length)) for s in mine] or [(1, 0)]
    types = [s.id for s in items if s.kind == TYPE]
    kinds = {s.id: s.content.ref for s in items if s.kind == TYPE}
    states = {section.client: section.end for section in full.sections}
    b = UpdateBuilder()
    containers = [t for t in types if kinds[t] != TYPE_TEXT]
    deepest = max(containers, key=lambda t: guard.level_of(t) or 0, default=None)
    clients = [rng.choice([50, 51, 52, 50, 51, 52, doc.client_id]) for _ in range(2)]
    for client in dict.fromkeys(clients):
        clock = max(0, states.get(client, 0) + rng.choice([0, 0, 0, 0, 0, 0, -1, 1]))
        for _ in range(rng.choice([1, 1, 1, 2, 3, 6])):
            pick = rng.random()
            if pick < 0.05:
                b.gc(client, clock, rng.randint(1, 2))
                clock = b.next_clock(client)
                continue
            content: Any
            if pick < 0.4:
                content = AnyContent([_random_value(rng, rng.choice([0, 0, 1, 2, 4]))])
            elif pick < 0.65:
                content = TypeRef(rng.choice([TYPE_MAP, TYPE_MAP, TYPE_ARRAY, TYPE_TEXT]))
            elif pick < 0.85:
                content = StringContent(rng.choice(["a", "bc", "😀"]))
            else:
                content = DeletedContent(rng.randint(1, 2))
            where: dict[str, Any] = {}
            mode = rng.random()
            if mode < 0.25:
                where["parent"] = rng.choice(["$state"] * 6 + ["$computed", "$meta", "x"])
                where["parent_sub"] = rng.choice(["a", "b", "c", None])
            elif mode < 0.5 and types:
                use_deepest = deepest is not None and rng.random() < 0.5
                parent = deepest if use_deepest and deepest else rng.choice(types)
                where["parent"] = parent
                keyed = kinds.get(parent) == TYPE_MAP
                if rng.random() < 0.1:  # now and then, the wrong way round
                    keyed = not keyed
                where["parent_sub"] = rng.choice(["a", "b"]) if keyed else None
            else:
                if rng.random() < 0.8:
                    where["origin"] = rng.choice(ids)
                if rng.random() < 0.4 or not where:
                    where["right_origin"] = rng.choice(ids)
            new = b.item(client, clock, content, **where)
            ids.append(new)
            if content.kind == TYPE:
                types.append(new)
                kinds[new] = content.ref
            clock = b.next_clock(client)
    for _ in range(rng.choice([0, 0, 1, 2])):
        client, clock = rng.choice(ids)
        b.delete(client, clock, rng.randint(1, 3))
    return b.encode()


def _value_depth(value: Any) -> int:
    """How many containers deep a map entry's value goes (0: a scalar; a Y.Text is 1)."""
    if isinstance(value, Map | dict):
        children = (
            [value[key] for key in value.keys()] if isinstance(value, Map) else value.values()
        )
    elif isinstance(value, Array | list):
        children = list(value)
    else:
        return 1 if isinstance(value, Text) else 0
    return 1 + max((_value_depth(child) for child in children), default=0)


def _check_too_deep(guard: UpdateGuard, roots: dict[str, Map], limit: int, *, exact: bool) -> None:
    """Every entry whose value reaches a level is listed for it (the root map is at level 1, an
    entry's value at 2); with ``exact``, nothing else is."""
    depths = {
        (name, key): _value_depth(roots[name][key])
        for name in ("$state", "$computed")
        for key in roots[name].keys()
    }
    for min_level in range(2, limit + 1):
        reaching = {entry for entry, depth in depths.items() if depth and 1 + depth >= min_level}
        listed = guard.too_deep(min_level)
        assert listed == reaching if exact else listed >= reaching, (min_level, listed, depths)


@pytest.mark.parametrize("seed", range(6))
def test_whatever_the_guard_accepts_pycrdt_applies_and_renders_within_the_limit(seed):
    """Random well-formed updates against a growing doc: an accepted update applies without a
    panic, the doc still encodes and renders, no container reaches the limit, and too_deep
    lists every entry as deep as it goes (exactly, for a guard that learned the doc afresh)."""
    rng = random.Random(seed)
    limit = 6
    doc = Doc(client_id=777_000 + seed)
    roots = {name: doc.get(name, type=Map) for name in ("$state", "$computed", "$meta")}
    guard = UpdateGuard(limit, server_clients=[doc.client_id])
    doc.observe(lambda event: guard.learn(event.update))
    roots["$meta"]["epoch"] = "e"
    accepted = 0
    for _ in range(500):
        update = _random_update(rng, doc, guard)
        try:
            guard.check(update, may_write_computed=rng.random() < 0.5)
        except UpdateRefused:
            continue
        accepted += 1
        doc.apply_update(update)
        view = {name: orjson.loads(str(roots[name])) for name in ("$state", "$computed")}
        assert _view_depth(view) < limit
        assert guard.max_level < limit
        _check_too_deep(guard, roots, limit, exact=False)  # deletions inside values: kept
    rebuilt = UpdateGuard(limit)
    rebuilt.learn(doc.get_update())
    assert rebuilt.max_level <= guard.max_level
    _check_too_deep(rebuilt, roots, limit, exact=True)
    assert accepted > 25
    assert guard.max_level >= 2  # nested types were accepted (deletions keep it shallow)


# --- real Yjs ----------------------------------------------------------------------------------

JS_DIR = Path(__file__).resolve().parent / "js"
YJS_SCRIPT = r"""
const Y = require('yjs')
const updates = []
const doc = new Y.Doc()
doc.on('update', (u) => updates.push(Buffer.from(u).toString('base64')))
const state = doc.getMap('$state')
state.set('n', 1); state.set('f', 2.5); state.set('s', 'hé😀'); state.set('b', true)
state.set('nil', null); state.set('big', 2 ** 40); state.set('neg', -7)
const form = new Y.Map(); state.set('form', form)
form.set('name', 'x'); form.set('name', 'y')
const items = new Y.Array(); form.set('items', items)
items.insert(0, [1, 2, 3, { a: [1, { b: 'c' }] }])
const inner = new Y.Map(); items.insert(1, [inner]); inner.set('deep', new Y.Map())
const text = new Y.Text(); state.set('text', text)
text.insert(0, 'hello world'); text.insert(5, ' 😀 dear'); text.delete(0, 2)
doc.transact(() => { items.delete(0, 2); form.delete('name') })
state.delete('b')
const other = new Y.Doc(); other.clientID = doc.clientID + 1
Y.applyUpdate(other, Y.encodeStateAsUpdate(doc))
other.getMap('$state').set('n', 'theirs'); state.set('n', 'mine')
Y.applyUpdate(doc, Y.encodeStateAsUpdate(other))
console.log(JSON.stringify({
  updates, full: Buffer.from(Y.encodeStateAsUpdate(doc)).toString('base64'),
  json: state.toJSON(),
}))
"""


def test_updates_from_real_yjs_decode_pass_and_apply():
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "yjs").is_dir():
        pytest.skip("needs node and tests/js/node_modules (npm ci --prefix tests/js)")
    env = {**os.environ, "NODE_PATH": str(JS_DIR / "node_modules")}
    out = subprocess.run(
        [node, "-e", YJS_SCRIPT], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    result = json.loads(out.stdout)
    updates = [base64.b64decode(u) for u in result["updates"]]
    full = base64.b64decode(result["full"])
    server = Server()
    for update in updates:
        decode_update(update)
        server.receive(update)
    server.guard.check(full, may_write_computed=False)
    assert server.render()["$state"] == result["json"]
    rebuilt = UpdateGuard()
    rebuilt.learn(full)
    # $state > form > items > inner map > deep map; Yjs collected the deleted inner ones.
    assert server.guard.max_level == 5
    assert rebuilt.max_level == 3


# --- pycrdt itself (each case in a subprocess: some kill the process) --------------------------

PROBE = r"""
import sys
sys.path.insert(0, {root!r})
from pycrdt import Doc, Map
from tests.yjs_encoder import nested_maps
doc = Doc()
root = doc.get("$state", type=Map)
doc.apply_update(nested_maps({depth}))
print("applied", flush=True)
print(len(str(root)), flush=True)
"""


@pytest.mark.parametrize("depth", [1000, 20_000])
def test_pycrdt_renders_a_deep_doc_or_dies(depth):
    """Documents why the guard exists: str() of a 20,000-deep doc kills the process."""
    root = str(Path(__file__).resolve().parent.parent)

    def stack_8_mib() -> None:  # the usual Linux default, whatever the runner's ulimit
        _, hard = resource.getrlimit(resource.RLIMIT_STACK)
        limit = 8 * 2**20 if hard == resource.RLIM_INFINITY else min(8 * 2**20, hard)
        resource.setrlimit(resource.RLIMIT_STACK, (limit, hard))

    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(root=root, depth=depth)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=stack_8_mib,
    )
    assert out.stdout.startswith("applied")
    if depth == 1000:
        assert out.returncode == 0
    else:
        assert out.returncode < 0  # SIGSEGV: a native stack overflow, no exception


def test_encoder_primitives_match_lib0():
    assert var_uint(0) == b"\x00" and var_uint(300) == b"\xac\x02"
    assert any_value(-1) == b"\x7d\x41"
    assert any_value(Raw(b"\x7e")) == b"\x7e"
    assert decode_update(set_value(-(2**31))).structs[0].content == [-(2**31)]


def test_structs_are_followed_across_clients_in_the_order_yrs_integrates_them():
    """Sections come in descending client order; a section may need a later one first."""

    def chain(levels: int) -> bytes:
        b = UpdateBuilder()
        at: str | tuple[int, int] = "$state"
        for level in range(levels):
            client = 10 + level % 2  # alternate: 11's maps hang under 10's and back
            at = b.item(client, None, TypeRef(TYPE_MAP), parent=at, parent_sub="k")
        return b.encode()

    server = Server()
    server.receive(chain(MAX_DEPTH - 2))
    assert server.guard.max_level == MAX_DEPTH - 1
    assert server.render()["$state"]["k"]["k"]["k"]["k"] is not None
    assert refused(Server().guard, chain(MAX_DEPTH - 1)).code == "too_deep"


def test_many_clients_waiting_on_each_other_stay_fast():
    # 3000 clients, each with one array inside the previous client's; sections come in
    # descending client order, so each one waits for the next section to be integrated.
    b = UpdateBuilder()
    at: str | tuple[int, int] = "$state"
    for client in range(2000, 5000):
        key = "k" if at == "$state" else None
        at = b.item(client, 0, TypeRef(TYPE_ARRAY), parent=at, parent_sub=key)
    update = b.encode()
    start = time.perf_counter()
    UpdateGuard(max_depth=10_000).check(update, may_write_computed=False)
    assert time.perf_counter() - start < 1.0
    assert refused(UpdateGuard(), update).code == "too_deep"
