"""The history's JSON Patch comes from the CRDT's own change events: replaying it on the JSON
before a change must give exactly the JSON after it, for local and remote (browser) changes."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from pycrdt import Array, Doc, Map, Text

import crdt_state.patch_events
from crdt_state.doc_patch import apply_to_doc
from crdt_state.document import COMPUTED, META, STATE, PanelDoc, new_epoch, put
from crdt_state.jsonpatch import parse_patch
from crdt_state.patch_events import PatchRecorder, render_value
from crdt_state.patch_plan import apply_to_json

SUITE = Path(__file__).parent / "conformance" / "json-patch-tests"


def _exact(value: Any) -> bytes:
    # Byte-equal JSON: 1 and 1.0 differ here, as they do in what the view renders.
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _replays(before: Any, patch: list[dict[str, Any]], after: Any) -> bool:
    return _exact(apply_to_json(before, parse_patch(patch))) == _exact(after)


def _panel(state: dict[str, Any] | None = None) -> PanelDoc:
    panel = PanelDoc()
    panel.initialize(new_epoch(), state or {})
    return panel


def _sync(source: PanelDoc, target: PanelDoc) -> None:
    target.doc.apply_update(source.doc.get_update(target.doc.get_state()))


# -- readable examples ------------------------------------------------------------------------


def test_map_changes_become_add_replace_remove_with_the_rendered_value() -> None:
    panel = _panel({"count": 1, "old": "x"})
    with PatchRecorder(panel) as recorder:
        with panel.doc.transaction():
            panel.roots[STATE]["count"] = 2
            put(panel.roots[STATE], "filters", {"q": "a/b", "n": [1, 2.5]})
            del panel.roots[STATE]["old"]
            panel.roots[COMPUTED]["total"] = 3
        patch = recorder.take()
    assert sorted(patch, key=lambda op: op["path"]) == [
        {"op": "add", "path": "/$computed/total", "value": 3},
        {"op": "replace", "path": "/$state/count", "value": 2},
        {"op": "add", "path": "/$state/filters", "value": {"q": "a/b", "n": [1, 2.5]}},
        {"op": "remove", "path": "/$state/old"},
    ]
    assert recorder.take() == [], "take() empties the recorder"


def test_array_changes_use_running_indices() -> None:
    panel = _panel({"l": ["a", "b", "c", "d"]})
    recorder = PatchRecorder(panel)
    before = panel.render()
    with panel.doc.transaction():
        items = panel.roots[STATE]["l"]
        del items[1]  # a c d
        items.insert(2, "x")  # a c x d
        items.append("e")  # a c x d e
    patch = recorder.take()
    assert patch == [
        {"op": "remove", "path": "/$state/l/1"},
        {"op": "add", "path": "/$state/l/2", "value": "x"},
        {"op": "add", "path": "/$state/l/4", "value": "e"},
    ]
    assert _replays(before, patch, panel.render())


def test_one_transaction_on_several_levels() -> None:
    panel = _panel({"rows": [{"v": 1}, {"v": 2}], "doomed": {"k": [1]}, "keys": {"a/b": {"~": 0}}})
    recorder = PatchRecorder(panel)
    before = panel.render()
    with panel.doc.transaction():
        state = panel.roots[STATE]
        state["rows"].insert(0, Map({"v": 0}))  # indices of later rows shift
        state["rows"][2]["v"] = 20  # the row that was at index 1
        state["rows"][0]["w"] = 1  # a row created in this transaction
        state["doomed"]["k"].append(2)  # edits inside a container deleted below
        del state["doomed"]
        state["keys"]["a/b"]["~"] = 1
        state["fresh"] = Map({})
        state["fresh"]["list"] = Array([1])
    patch = recorder.take()
    assert _replays(before, patch, panel.render())
    assert {"op": "replace", "path": "/$state/rows/2/v", "value": 20} in patch
    assert {"op": "replace", "path": "/$state/keys/a~1b/~0", "value": 1} in patch
    assert {"op": "remove", "path": "/$state/doomed"} in patch
    assert {"op": "add", "path": "/$state/fresh", "value": {"list": [1]}} in patch


def test_changes_from_another_client_are_recorded_too() -> None:
    panel = _panel({"obj": {"a": 1}})
    browser = PanelDoc(Doc())
    _sync(panel, browser)
    recorder = PatchRecorder(panel)
    browser.roots[STATE]["obj"]["b"] = [True, None]
    before = panel.render()
    _sync(browser, panel)
    patch = recorder.take()
    assert patch == [{"op": "add", "path": "/$state/obj/b", "value": [True, None]}]
    assert _replays(before, patch, panel.render())


def test_meta_changes_and_changes_after_close_are_not_recorded() -> None:
    panel = _panel()
    recorder = PatchRecorder(panel)
    panel.roots[META]["epoch"] = "other"
    assert recorder.take() == []
    recorder.close()
    panel.roots[STATE]["a"] = 1
    assert recorder.take() == []


def test_numbers_render_as_the_view_renders_them() -> None:
    # pycrdt hands numbers back as floats; the view prints integral ones as integers.
    assert [render_value(v) for v in (2.0, -0.0, 1.5, 1e20, 2.0**53)] == [2, 0, 1.5, 1e20, 2**53]
    assert _exact(render_value({"a": [1.0, 2.5]})) == b'{"a":[1,2.5]}'


def test_a_text_a_browser_created_is_recorded_as_its_string() -> None:
    panel = _panel()
    panel.roots[STATE]["note"] = Text("hé")
    recorder = PatchRecorder(panel)
    note = panel.roots[STATE]["note"]
    note += "!"
    assert recorder.take() == [{"op": "replace", "path": "/$state/note", "value": "hé!"}]


def test_a_failing_observer_falls_back_to_replacing_the_root(monkeypatch: Any) -> None:
    panel = _panel({"a": 1})
    recorder = PatchRecorder(panel)

    def broken(prefix: str, events: Any) -> list[dict[str, Any]]:
        raise RuntimeError("surprise")

    monkeypatch.setattr(crdt_state.patch_events, "events_to_patch", broken)
    panel.roots[STATE]["b"] = 2  # must not raise into the writer
    monkeypatch.undo()
    assert recorder.take() == [{"op": "replace", "path": "/$state", "value": {"a": 1, "b": 2}}]
    panel.roots[STATE]["c"] = 3
    assert recorder.take() == [{"op": "add", "path": "/$state/c", "value": 3}], "recovers"


def test_rest_patches_are_recorded_exactly_as_applied() -> None:
    # Every successful record of the conformance suite, applied to a doc by apply_to_doc.
    records = []
    for name in ("tests.json", "spec_tests.json"):
        records += json.loads((SUITE / name).read_text("utf-8"))
    checked = 0
    for record in records:
        if "expected" not in record or record.get("disabled"):
            continue
        panel = _panel({"doc": record["doc"]})
        recorder = PatchRecorder(panel)
        raw = [
            {**op, **{m: "/$state/doc" + op[m] for m in ("path", "from") if m in op}}
            for op in record["patch"]
        ]
        ops = parse_patch(raw)
        before = panel.render()
        with panel.doc.transaction(origin="rest"):
            apply_to_doc(panel, ops, before)
        assert _replays(before, recorder.take(), panel.render()), record
        checked += 1
    assert checked > 70


# -- randomized: local and remote transactions ------------------------------------------------

KEYS = ("a", "b", "c", "a/b", "~t", "")
SCALARS = (0, 7, -3, 2**53 - 1, 1.5, 2.0, -0.0, 1e20, "", "s", "é/~", True, False, None)


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth >= 3 or roll < 0.55:
        return rng.choice(SCALARS)
    if roll < 0.75:
        return Map(
            {rng.choice(KEYS): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
        )
    if roll < 0.93:
        return Array([_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))])
    # A plain value stored whole, as a browser's ymap.set(k, {...}) does.
    return {"plain": [rng.choice(SCALARS), {"n": rng.randint(0, 9)}]}


def _containers(node: Map | Array, out: list[Map | Array]) -> list[Map | Array]:
    out.append(node)
    children = node.values() if isinstance(node, Map) else list(node)
    for child in children:
        if isinstance(child, Map | Array):
            _containers(child, out)
    return out


def _random_edit(rng: random.Random, panel: PanelDoc) -> None:
    found: list[Map | Array] = []
    for root in (STATE, COMPUTED):
        _containers(panel.roots[root], found)
    node = rng.choice(found)
    crowded = len(node) > 5
    if isinstance(node, Map):
        keys = list(node.keys())
        if keys and (crowded or rng.random() < 0.3):
            del node[rng.choice(keys)]
        else:
            node[rng.choice(KEYS)] = _random_value(rng)
        return
    roll = rng.random()
    if len(node) and (crowded or roll < 0.35):
        start = rng.randrange(len(node))
        del node[start : min(len(node), start + rng.randint(1, 2))]
    elif len(node) and roll < 0.5:
        index = rng.randrange(len(node))  # replace an item: delete + insert
        del node[index]
        node.insert(index, _random_value(rng))
    else:
        node.insert(rng.randint(0, len(node)), _random_value(rng))


def _random_transaction(rng: random.Random, panel: PanelDoc, browser: PanelDoc) -> None:
    target = browser if rng.random() < 0.4 else panel
    if target is browser and rng.random() < 0.5:
        _sync(panel, browser)  # else the browser edits an older state: a concurrent change
    with target.doc.transaction():
        for _ in range(rng.randint(1, 5)):
            _random_edit(rng, target)
    if target is browser:
        _sync(browser, panel)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_recorded_patches_replay_every_random_transaction(seed: int) -> None:
    rng = random.Random(seed)
    panel = _panel({"list": [1, {"x": 1}], "obj": {"a": {"b": []}}})
    browser = PanelDoc(Doc())
    _sync(panel, browser)
    recorder = PatchRecorder(panel)
    for number in range(150):
        before = panel.render()
        _random_transaction(rng, panel, browser)
        after = panel.render()
        patch = recorder.take()
        assert _replays(before, patch, after), f"seed {seed}, transaction {number}: {patch}"
        assert all(op["path"] not in ("/$state", "/$computed") for op in patch), "no fallback"
