"""JSON Patch: RFC 6902 on plain JSON (public conformance suite), on a panel's Y doc, and undo."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc

from crdt_state.doc_patch import apply_to_doc, replace_document
from crdt_state.document import STATE, PanelDoc, new_epoch
from crdt_state.errors import Forbidden, InvalidPatch, InvalidValue, PathNotFound, TestFailed
from crdt_state.json_edits import check_panel_paths
from crdt_state.jsonpatch import PATCH_ERRORS, json_equal, parse_patch
from crdt_state.patch_plan import apply_to_json, inverse_patch

SUITE = Path(__file__).parent / "conformance" / "json-patch-tests"


def _records() -> list[Any]:
    records = []
    for name in ("tests.json", "spec_tests.json"):
        for number, record in enumerate(json.loads((SUITE / name).read_text("utf-8"))):
            if "patch" in record and not record.get("disabled"):
                label = f"{name}#{number}: {record.get('comment', '')}"[:90]
                records.append(pytest.param(record, id=label))
    return records


RECORDS = _records()
SUCCESSES = [param for param in RECORDS if "expected" in param.values[0]]


def _prefixed(patch: list[Any], prefix: str) -> list[Any]:
    """The record's patch aimed at the record's doc placed under `prefix`."""
    moved = copy.deepcopy(patch)
    for op in moved:
        for member in ("path", "from"):
            if isinstance(op, dict) and isinstance(op.get(member), str):
                op[member] = prefix + op[member]
    return moved


def _panel(state: dict[str, Any]) -> PanelDoc:
    panel = PanelDoc()
    panel.initialize(new_epoch(), state)
    return panel


def _patch_panel(panel: PanelDoc, raw: object) -> Any:
    """What PATCH does: validate everything on the JSON view, then change the doc."""
    before = panel.render()
    ops = parse_patch(raw)
    check_panel_paths(ops)
    after = apply_to_json(before, ops)
    with panel.doc.transaction(origin="test"):
        apply_to_doc(panel, ops, before)
    return after


def _sync(source: PanelDoc, target: PanelDoc) -> None:
    target.doc.apply_update(source.doc.get_update(target.doc.get_state()))


# -- conformance: plain documents -------------------------------------------------------------


@pytest.mark.parametrize("record", RECORDS)
def test_conformance_suite_on_plain_json(record: dict[str, Any]) -> None:
    document = record["doc"]
    untouched = copy.deepcopy(document)
    if "error" in record:
        with pytest.raises(PATCH_ERRORS):
            apply_to_json(document, parse_patch(record["patch"]))
    else:
        result = apply_to_json(document, parse_patch(record["patch"]))
        assert json_equal(result, record["expected"])
    assert json_equal(document, untouched), "the input document must never change"


@pytest.mark.parametrize("record", SUCCESSES)
def test_inverse_patch_restores_the_document(record: dict[str, Any]) -> None:
    ops = parse_patch(record["patch"])
    after = apply_to_json(record["doc"], ops)
    undo = inverse_patch(record["doc"], ops)
    assert json_equal(apply_to_json(after, parse_patch(undo)), record["doc"])


# -- conformance: the same records under /$state/doc of a panel ---------------------------------


def _fits_under_a_key(record: dict[str, Any]) -> bool:
    # A pointer without its leading "/" is a syntax error that a prefix would hide.
    pointers = [
        op.get(m) for op in record["patch"] if isinstance(op, dict) for m in ("path", "from")
    ]
    return not any(isinstance(p, str) and p and not p.startswith("/") for p in pointers)


# Every record fits under a key (scalar documents too), except one: "invalid JSON Pointer token".
PANEL_RECORDS = [param for param in RECORDS if _fits_under_a_key(param.values[0])]


def test_only_the_pointer_syntax_record_is_left_out_of_the_panel_runs() -> None:
    assert len(RECORDS) - len(PANEL_RECORDS) == 1


@pytest.mark.parametrize("record", PANEL_RECORDS)
def test_conformance_suite_on_a_panel_doc(record: dict[str, Any]) -> None:
    panel = _panel({"doc": record["doc"]})
    raw = _prefixed(record["patch"], "/$state/doc")
    if "error" in record:
        state_vector = panel.doc.get_state()
        with pytest.raises(PATCH_ERRORS):
            _patch_panel(panel, raw)
        assert panel.doc.get_state() == state_vector, "a failed patch must change nothing"
        return
    after = _patch_panel(panel, raw)
    rendered = panel.render()
    assert json_equal(rendered[STATE]["doc"], record["expected"])
    assert json_equal(rendered, after), "the doc must agree with the validated JSON view"


@pytest.mark.parametrize("record", SUCCESSES)
def test_inverse_patch_applied_to_the_doc_restores_it(record: dict[str, Any]) -> None:
    panel = _panel({"doc": record["doc"]})
    before = panel.render()
    ops = parse_patch(_prefixed(record["patch"], "/$state/doc"))
    _patch_panel(panel, [op.to_json() for op in ops])
    _patch_panel(panel, inverse_patch(before, ops))
    assert json_equal(panel.render(), before)


# -- errors a caller can act on ---------------------------------------------------------------


def test_errors_name_the_operation_and_path() -> None:
    view = {"$state": {"items": [1, 2, 3]}, "$computed": {}}
    raw = [
        {"op": "test", "path": "/$state/items/0", "value": 1},
        {"op": "add", "path": "/$state/n", "value": 1},
        {"op": "remove", "path": "/$state/items/7"},
    ]
    with pytest.raises(PathNotFound) as failed:
        apply_to_json(view, parse_patch(raw))
    error = failed.value
    assert error.message == (
        "operation 2 (remove /$state/items/7): index 7 is out of range (length 3)."
    )
    assert (error.status, error.code, error.details["operation"]) == (409, "path_not_found", 2)


@pytest.mark.parametrize("index", ["3", "01", "-", "1e0", "9" * 30, "9" * 5000])
def test_array_indices_out_of_range_or_malformed_are_not_found(index: str) -> None:
    with pytest.raises(PathNotFound):
        apply_to_json(
            {"l": [1, 2, 3]}, parse_patch([{"op": "replace", "path": "/l/" + index, "value": 0}])
        )


@pytest.mark.parametrize(
    "raw",
    [
        {"op": "add", "path": "/a", "value": 1},
        ["add"],
        [{"op": "frobnicate", "path": "/a"}],
        [{"op": "add", "path": 3, "value": 1}],
        [{"op": "add", "path": "a", "value": 1}],
        [{"op": "add", "path": "/a~2b", "value": 1}],
        [{"op": "add", "path": "/a~", "value": 1}],
        [{"op": "replace", "path": "/a"}],
        [{"op": "copy", "path": "/a", "from": None}],
        [{"op": "move", "from": "/a", "path": "/a/b"}],
        [{"op": "remove", "path": ""}],
    ],
)
def test_malformed_patches_are_invalid_whatever_the_document(raw: object) -> None:
    with pytest.raises(InvalidPatch) as failed:
        parse_patch(raw)
    assert (failed.value.status, failed.value.code) == (422, "invalid_patch")


def test_test_uses_json_equality() -> None:
    doc = {"n": 1, "b": True, "o": {"x": 1, "y": [1.0]}}
    ok = [
        {"op": "test", "path": "/n", "value": 1.0},
        {"op": "test", "path": "/o", "value": {"y": [1], "x": 1.0}},
    ]
    assert apply_to_json(doc, parse_patch(ok)) is doc
    for wrong in (
        {"op": "test", "path": "/b", "value": 1},
        {"op": "test", "path": "/n", "value": True},
    ):
        with pytest.raises(TestFailed) as failed:
            apply_to_json(doc, parse_patch([wrong]))
        assert failed.value.code == "test_failed"


@pytest.mark.parametrize(
    "raw",
    [
        [{"op": "add", "path": "", "value": {}}],
        [{"op": "add", "path": "/$meta/epoch", "value": "x"}],
        [{"op": "add", "path": "/elsewhere", "value": 1}],
        [{"op": "copy", "from": "/$meta/epoch", "path": "/$state/e"}],
        [{"op": "remove", "path": "/$state"}],
        [{"op": "replace", "path": "/$state", "value": [1]}],
        [{"op": "move", "from": "/$state", "path": "/$computed/s"}],
        [{"op": "copy", "from": "/$state/a", "path": "/$computed"}],
    ],
)
def test_panel_paths_stay_inside_the_view_and_roots_stay_objects(raw: object) -> None:
    with pytest.raises(InvalidPatch):
        check_panel_paths(parse_patch(raw))


def test_a_root_the_caller_may_not_write_is_forbidden() -> None:
    raw = [{"op": "copy", "from": "/$state/a", "path": "/$computed/a"}]
    with pytest.raises(Forbidden) as refused:
        check_panel_paths(parse_patch(raw), writable_roots=("$state",))
    assert refused.value.status == 403


def test_a_root_can_be_replaced_by_an_object_and_tested() -> None:
    ops = parse_patch(
        [
            {"op": "replace", "path": "/$state", "value": {"a": 1}},
            {"op": "test", "path": "/$computed", "value": {}},
        ]
    )
    check_panel_paths(ops)


# -- values the doc cannot hold ---------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, 2**64, b"bytes", {"k": [math.inf]}, {1: "x"}])
def test_values_the_doc_cannot_hold_are_refused_before_the_doc_is_touched(value: Any) -> None:
    panel = _panel({"a": 1})
    state_vector = panel.doc.get_state()
    raw = [
        {"op": "add", "path": "/$state/b", "value": 1},
        {"op": "add", "path": "/$state/c", "value": value},
    ]
    with pytest.raises(InvalidValue) as refused:
        _patch_panel(panel, raw)
    assert refused.value.details["operation"] == 1
    assert refused.value.details["path"].startswith("/$state/c")
    assert panel.doc.get_state() == state_vector


def test_copies_cannot_nest_deeper_than_the_doc_allows() -> None:
    deep: Any = 1
    for _ in range(60):
        deep = {"d": deep}
    panel = _panel({"deep": deep})
    state_vector = panel.doc.get_state()
    with pytest.raises(InvalidValue):
        _patch_panel(
            panel, [{"op": "copy", "from": "/$state/deep", "path": "/$state/deep/d/d/d/d"}]
        )
    assert panel.doc.get_state() == state_vector


# -- the doc: merges keep identity, so concurrent edits survive --------------------------------


def test_replacing_an_object_keeps_a_concurrent_edit_of_a_sibling_field() -> None:
    one = _panel({"obj": {"a": 1, "b": {"c": 2}}})
    two = PanelDoc(Doc())
    _sync(one, two)
    _patch_panel(one, [{"op": "replace", "path": "/$state/obj", "value": {"a": 1, "b": {"c": 3}}}])
    two.roots[STATE]["obj"]["a"] = 5  # another client, at the same time
    _sync(one, two)
    _sync(two, one)
    assert one.render()[STATE]["obj"] == {"a": 5, "b": {"c": 3}}
    assert two.render() == one.render()


def test_replacing_an_array_element_object_merges_into_it() -> None:
    one = _panel({"rows": [{"id": 1, "v": 1}, {"id": 2, "v": 2}]})
    two = PanelDoc(Doc())
    _sync(one, two)
    _patch_panel(one, [{"op": "replace", "path": "/$state/rows/1", "value": {"id": 2, "v": 20}}])
    two.roots[STATE]["rows"][1]["note"] = "hi"
    two.roots[STATE]["rows"].insert(0, {"id": 0})
    _sync(one, two)
    _sync(two, one)
    assert one.render()[STATE]["rows"] == [
        {"id": 0},
        {"id": 1, "v": 1},
        {"id": 2, "v": 20, "note": "hi"},
    ]


def test_array_add_inserts_and_dash_appends() -> None:
    panel = _panel({"l": ["a", "c"]})
    _patch_panel(
        panel,
        [
            {"op": "add", "path": "/$state/l/1", "value": "b"},
            {"op": "add", "path": "/$state/l/-", "value": {"d": [1]}},
            {"op": "move", "from": "/$state/l/0", "path": "/$state/l/-"},
        ],
    )
    assert panel.render()[STATE]["l"] == ["b", "c", {"d": [1]}, "a"]


def test_edits_inside_a_plain_value_stored_whole_by_a_browser() -> None:
    panel = _panel({})
    panel.roots[STATE]["blob"] = {"a": 1, "l": [1, {"x": 2}]}  # not Y types: an opaque value
    after = _patch_panel(
        panel,
        [
            {"op": "add", "path": "/$state/blob/l/1/y", "value": 3},
            {"op": "remove", "path": "/$state/blob/a"},
        ],
    )
    assert panel.render() == after
    assert after[STATE]["blob"] == {"l": [1, {"x": 2, "y": 3}]}


def test_put_is_the_minimal_change() -> None:
    one = _panel({"title": "t", "rows": [{"id": 1}, {"id": 2}, {"id": 3}], "gone": 1})
    two = PanelDoc(Doc())
    _sync(one, two)
    new = {"title": "T", "rows": [{"id": 1}, {"id": 2}, {"id": 4}, {"id": 3}]}
    with one.doc.transaction(origin="put"):
        replace_document(one, STATE, new)
    two.roots[STATE]["rows"][0]["seen"] = True  # kept element: the edit must survive
    two.roots[STATE]["rows"][2]["seen"] = True
    _sync(one, two)
    _sync(two, one)
    rows = one.render()[STATE]["rows"]
    assert rows == [{"id": 1, "seen": True}, {"id": 2}, {"id": 4}, {"id": 3, "seen": True}]
    assert "gone" not in one.render()[STATE]


def test_put_refuses_bad_values_before_touching_the_doc() -> None:
    panel = _panel({"a": 1})
    state_vector = panel.doc.get_state()
    with pytest.raises(InvalidValue):
        replace_document(panel, STATE, {"a": [1, 2**63]})
    with pytest.raises(InvalidValue):
        replace_document(panel, STATE, [1])  # type: ignore[arg-type]
    assert panel.doc.get_state() == state_vector


def test_an_unchanged_replace_writes_nothing() -> None:
    panel = _panel({"obj": {"a": 1, "b": [1, 2]}})
    state_vector = panel.doc.get_state()
    _patch_panel(
        panel, [{"op": "replace", "path": "/$state/obj", "value": {"b": [1.0, 2], "a": 1}}]
    )
    assert panel.doc.get_state() == state_vector


def test_apply_to_doc_joins_the_callers_transaction() -> None:
    panel = _panel({"a": 1})
    updates: list[bytes] = []
    panel.doc.observe(lambda event: updates.append(event.update))
    _patch_panel(
        panel,
        [
            {"op": "replace", "path": "/$state/a", "value": 2},
            {"op": "add", "path": "/$state/b", "value": 3},
        ],
    )
    assert len(updates) == 1, "one request, one transaction, one update"
