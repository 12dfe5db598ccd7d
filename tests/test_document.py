"""The document model: what a panel can hold, and how JSON maps onto Yjs types."""

from __future__ import annotations

import math

import pytest
from pycrdt import Array, Doc, Map

from crdt_state.document import COMPUTED, META, STATE, PanelDoc, new_epoch, put
from crdt_state.errors import InvalidValue
from crdt_state.values import MAX_SAFE_INTEGER, check_json


@pytest.mark.parametrize(
    "value, path",
    [
        ({"x": math.nan}, "/x"),
        ({"x": math.inf}, "/x"),
        ({"x": [1, MAX_SAFE_INTEGER + 1]}, "/x/1"),
        ({"x": -(2**63)}, "/x"),
        ({"x": b"bytes"}, "/x"),
        ({"x": {1: "non-string key"}}, "/x"),
        ({"a/b": {"~": "\ud800"}}, "/a~1b/~0"),
        ({"x": {1, 2}}, "/x"),
        # Whole floats the doc would show as integers beyond ±(2^53−1).
        ({"x": 1e18}, "/x"),
        ({"x": -float(2**53)}, "/x"),
        ({"x": float(2**63)}, "/x"),
    ],
)
def test_values_the_doc_cannot_hold_are_refused_with_their_pointer(value, path):
    with pytest.raises(InvalidValue) as refused:
        check_json(value)
    assert refused.value.details["path"] == path
    assert refused.value.code == "invalid_value"


def test_json_values_at_the_edges_are_accepted():
    check_json(
        {
            "max": MAX_SAFE_INTEGER,
            "min": -MAX_SAFE_INTEGER,
            "f": 1.5,
            "n": None,
            "b": True,
            "s": "ü",
            "a": [[], {}],
            "e": "",
            "whole float": float(MAX_SAFE_INTEGER),
            "big float": 1e300,  # shown as a float, never as an integer
        }
    )


def test_every_number_accepted_reads_back_as_a_number_that_would_be_accepted():
    """The view never shows a number that a client could not send back."""
    panel = PanelDoc()
    values = [float(MAX_SAFE_INTEGER), -float(MAX_SAFE_INTEGER), 1e300, 2.5, 1e19, 3.0]
    state = {f"k{n}": value for n, value in enumerate(values)}
    panel.initialize(new_epoch(), state)
    check_json(panel.render())


def test_deep_nesting_is_refused_before_it_can_overflow_anything():
    value: dict = {}
    node = value
    for _ in range(100):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(InvalidValue):
        check_json(value)


def test_objects_become_maps_and_arrays_become_arrays_recursively():
    doc = Doc()
    root = doc.get("r", type=Map)
    put(root, "v", {"list": [{"a": 1}], "obj": {"b": [2]}})
    assert isinstance(root["v"], Map)
    assert isinstance(root["v"]["list"], Array)
    assert isinstance(root["v"]["list"][0], Map)
    assert isinstance(root["v"]["obj"]["b"], Array)


def test_two_concurrent_edits_to_two_fields_of_one_object_both_survive():
    base = PanelDoc()
    base.initialize(new_epoch(), {"filter": {"field": "a", "value": 1}})
    a, b = PanelDoc(), PanelDoc()
    a.doc.apply_update(base.doc.get_update())
    b.doc.apply_update(base.doc.get_update())
    a.roots[STATE]["filter"]["field"] = "z"
    b.roots[STATE]["filter"]["value"] = 2
    a.doc.apply_update(b.doc.get_update())
    assert a.render()[STATE] == {"filter": {"field": "z", "value": 2}}


def test_the_json_view_has_state_and_computed_and_keeps_integers_integral():
    panel = PanelDoc()
    epoch = new_epoch()
    panel.initialize(epoch, {"count": 3, "ratio": 0.5})
    view = panel.render()
    assert view == {STATE: {"count": 3, "ratio": 0.5}, COMPUTED: {}}
    assert isinstance(view[STATE]["count"], int)
    assert panel.epoch == epoch
    assert panel.roots[META]["epoch"] == epoch  # server metadata stays out of the view


def test_initial_state_is_validated_before_the_doc_is_touched():
    panel = PanelDoc()
    with pytest.raises(InvalidValue):
        panel.initialize(new_epoch(), {"ok": 1, "bad": math.nan})
    assert panel.doc.get_state() == b"\x00"  # nothing was written
