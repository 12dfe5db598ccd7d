"""Large writes (json_edits.write_in_bulk): made on a scratch copy of the panel's doc, one
transaction per change, and applied as one update. They must leave exactly what the same
write made in one transaction leaves, as the panel's own items, and fill long arrays in
linear time (found by the fuzzer: pycrdt's one-transaction fill is quadratic)."""

from __future__ import annotations

import gc
import time
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc

from crdt_state.document import PanelDoc
from crdt_state.json_edits import patch_edit, replace_edit, write_in_bulk
from crdt_state.jsonpatch import parse_patch
from crdt_state.protocol import decode_state_vector
from crdt_state.values import count_values

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-1000, 1000), st.text(max_size=4), st.floats(0, 1)
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=8), st.dictionaries(st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=40,
)
objects = st.dictionaries(st.text(max_size=3), values, max_size=5)


def panel_with(state: dict[str, Any]) -> PanelDoc:
    panel = PanelDoc()
    panel.initialize("epoch", state)
    return panel


def copy_of(panel: PanelDoc) -> PanelDoc:
    doc: Doc[Any] = Doc(client_id=panel.doc.client_id)
    doc.apply_update(panel.doc.get_update())
    return PanelDoc(doc)


def json(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))


@settings(max_examples=60, deadline=None)
@given(before=objects, after=objects)
def test_a_bulk_put_leaves_what_a_one_transaction_put_leaves(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    one, bulk = panel_with(before), None
    bulk = copy_of(one)
    edit = replace_edit({"$state": after})(one.render())
    with one.doc.transaction():
        edit.write(one)
    update = write_in_bulk(bulk, edit.write)
    watcher = copy_of(bulk)  # a peer that only ever sees the update
    bulk.doc.apply_update(update)
    watcher.doc.apply_update(update)
    assert bulk.render() == one.render() == watcher.render()
    assert bulk.render()["$state"] == json(edit.after["$state"])


@settings(max_examples=60, deadline=None)
@given(before=objects, items=st.lists(values, max_size=12), data=st.data())
def test_a_bulk_patch_leaves_what_a_one_transaction_patch_leaves(
    before: dict[str, Any], items: list[Any], data: st.DataObject
) -> None:
    before = {**before, "list": items}
    one = panel_with(before)
    bulk = copy_of(one)
    length = len(items)
    ops = data.draw(
        st.lists(
            st.one_of(
                st.builds(
                    lambda value: {"op": "add", "path": "/$state/list/-", "value": value}, values
                ),
                st.builds(
                    lambda index, value: {
                        "op": "add",
                        "path": f"/$state/list/{index}",
                        "value": value,
                    },
                    st.integers(0, length),
                    values,
                ),
                st.builds(
                    lambda value: {"op": "add", "path": "/$state/other", "value": value}, objects
                ),
            ),
            max_size=6,
        )
    )
    edit = patch_edit(parse_patch(ops, 1000), None, 10**9)(one.render())
    with one.doc.transaction():
        edit.write(one)
    bulk.doc.apply_update(write_in_bulk(bulk, edit.write))
    assert bulk.render() == one.render() == json(edit.after)


def test_the_bulk_update_is_made_of_the_panels_own_items() -> None:
    panel = panel_with({"a": [1, 2]})
    clock_before = panel.doc.get_state()
    edit = replace_edit({"$state": {"a": list(range(5000))}})(panel.render())
    assert edit.bulky
    update = write_in_bulk(panel, edit.write)
    assert panel.render()["$state"]["a"] == [1, 2]  # the panel itself is not touched
    panel.doc.apply_update(update)
    assert panel.render()["$state"]["a"] == list(range(5000))
    assert panel.doc.get_state() != clock_before
    # One client, the panel's: a second bulk write continues its clock.
    other = Doc()
    other.apply_update(panel.doc.get_update())
    assert set(decode_state_vector(other.get_state())) == {panel.doc.client_id}


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda n: list(range(n)), id="integers"),
        pytest.param(lambda n: [{} for _ in range(n)], id="objects"),
        pytest.param(lambda n: [n if n % 3 else {"n": n} for n in range(n)], id="mixed"),
    ],
)
def test_a_long_array_fills_in_time_linear_in_its_length(make: Any) -> None:
    """4x the elements must cost well under 16x (quadratic) the time; a one-transaction fill
    of 16,000 integers took ~7 s."""

    def fill_time(n: int) -> float:
        panel = panel_with({})
        edit = replace_edit({"$state": {"a": make(n)}})(panel.render())
        gc.collect()
        gc.disable()  # a full collection landing in one run is not the write's cost
        try:
            started = time.perf_counter()
            panel.doc.apply_update(write_in_bulk(panel, edit.write))
            took = time.perf_counter() - started
        finally:
            gc.enable()
        assert panel.render()["$state"]["a"] == json(make(n))
        return took

    fill_time(500)  # warm up
    small = min(fill_time(4000) for _ in range(3))
    large = min(fill_time(16000) for _ in range(2))
    assert large < 8 * small, f"4,000: {small * 1000:.0f} ms, 16,000: {large * 1000:.0f} ms"


def test_count_values_weighs_containers_and_stops_at_the_limit() -> None:
    assert count_values([1, "a", None], 100) == 5 + 3
    assert count_values({"a": {}, "b": []}, 100) == 15
    assert count_values([[] for _ in range(10**6)], 1000) <= 1000 + 5
