"""JSON Patch on a panel's Y doc: the smallest structural change that gives the patched JSON.

`write_plan` replays a patch already checked on the JSON view (patch_plan.plan_patch, pure)
on the Y doc: objects merge key by key and unchanged values keep their Y identity, so a
concurrent edit of a sibling field survives. `replace_document` does the same for a whole root.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from pycrdt import Array, Map

from .document import VIEW_ROOTS, PanelDoc, put
from .errors import InvalidPatch, InvalidValue
from .jsonpatch import MISSING, Operation, json_equal, json_type
from .patch_events import render_value
from .patch_plan import PatchPlan, Step, apply_to_json, plan_patch
from .values import check_json, escape_token


def write_plan(panel: PanelDoc, plan: PatchPlan) -> None:
    """Replay a checked patch (patch_plan.plan_patch on the panel's current JSON view, after
    check_panel_paths) on the doc, step by step: an error here would leave the transaction
    half done, so nothing is checked here that the plan did not check already.

    Runs in the caller's transaction (pycrdt's doc.transaction() without an origin joins it),
    or, on a bulk scratch copy, one transaction per change.
    """
    with _transaction(panel):
        for step in plan.steps:
            _write_step(panel, step)


def _transaction(panel: PanelDoc) -> AbstractContextManager[Any]:
    return nullcontext() if panel.bulk else panel.doc.transaction()


def apply_to_doc(panel: PanelDoc, ops: Iterable[Operation], before: Any) -> None:
    """Check `ops` against `before` (the panel's current JSON view) and replay them."""
    write_plan(panel, plan_patch(before, ops))


def _write_step(panel: PanelDoc, step: Step) -> None:
    tokens = step.path
    if len(tokens) == 1:  # a root: its object merges key by key
        if step.kind == "remove":
            raise InvalidPatch("A root of the panel cannot be removed.")
        merge_map(panel.roots[tokens[0]], step.old, step.value)
        return
    node, depth = _locate(panel, tokens)
    key = _key(node, tokens[depth])
    if depth < len(tokens) - 1:
        # Inside a plain value (a JS object a browser stored whole): it cannot merge, so it
        # is rewritten from its container with the step applied to it.
        blob = render_value(node[key])
        inner = Operation(-1, step.kind, tokens[depth + 1 :], "", value=step.value)
        assign(node, key, blob, apply_to_json(blob, [inner]))
    elif step.kind == "remove":
        del node[key]
    elif step.kind == "add" and isinstance(node, Array):
        put(node, key, step.value, insert=True)
    else:
        assign(node, key, step.old, step.value)


def _locate(panel: PanelDoc, tokens: Sequence[str]) -> tuple[Map[Any] | Array[Any], int]:
    """The deepest Y container on the way to the parent of `tokens`, and its depth.

    Below it the JSON view may go on inside a plain value (a JS object a browser stored
    whole): that part cannot merge and is rewritten from its container.
    """
    node: Map[Any] | Array[Any] = panel.roots[tokens[0]]
    depth = 1
    while depth < len(tokens) - 1:
        child = node[_key(node, tokens[depth])]
        if not isinstance(child, Map | Array):
            break
        node, depth = child, depth + 1
    return node, depth


def _key(node: Map[Any] | Array[Any], token: str) -> Any:
    if isinstance(node, Map):
        return token
    return len(node) if token == "-" else int(token)


def assign(node: Map[Any] | Array[Any], key: Any, old: Any, new: Any) -> None:
    """Make node[key] hold `new`, given that it holds `old` (MISSING: absent), touching as
    little as possible: equal values stay, objects and arrays are merged into in place."""
    if old is not MISSING and json_equal(old, new):
        return
    child = node[key] if old is not MISSING else None
    if isinstance(child, Map) and isinstance(old, dict) and isinstance(new, dict):
        merge_map(child, old, new)
    elif isinstance(child, Array) and isinstance(old, list) and isinstance(new, list):
        merge_array(child, old, new)
    elif isinstance(node, Map):
        put(node, key, new)
    else:
        del node[key]
        put(node, key, new, insert=True)


def merge_map(ymap: Map[Any], old: dict[str, Any], new: dict[str, Any]) -> None:
    """Turn a Y.Map whose JSON is `old` into `new`, key by key."""
    for key in old:
        if key not in new:
            del ymap[key]
    for key, value in new.items():
        assign(ymap, key, old.get(key, MISSING), value)


def merge_array(yarray: Array[Any], old: list[Any], new: list[Any]) -> None:
    """Keep the equal prefix and suffix; merge a middle of the same length element by
    element, else replace the middle (an unambiguous pairing is not known then)."""
    shortest = min(len(old), len(new))
    start = 0
    while start < shortest and json_equal(old[start], new[start]):
        start += 1
    end = 0
    while end < shortest - start and json_equal(old[-1 - end], new[-1 - end]):
        end += 1
    old_middle, new_middle = old[start : len(old) - end], new[start : len(new) - end]
    if len(old_middle) == len(new_middle):
        for offset, (was, now) in enumerate(zip(old_middle, new_middle, strict=True)):
            assign(yarray, start + offset, was, now)
        return
    if old_middle:
        del yarray[start : start + len(old_middle)]
    for offset, value in enumerate(new_middle):
        put(yarray, start + offset, value, insert=True)


def replace_document(panel: PanelDoc, root: str, new_value: Any, before: Any = MISSING) -> None:
    """PUT: make root `root` hold `new_value` through the minimal structural change.

    `before` is the root's current JSON when the caller has it (saves a render). Values are
    checked before the doc is touched; joins the caller's transaction if there is one.
    """
    if root not in VIEW_ROOTS:
        raise InvalidPatch(f"'{root}' is not a root of the panel's state.")
    if not isinstance(new_value, dict):
        pointer = f"/{escape_token(root)}"
        raise InvalidValue(
            f"{pointer} must be an object, not {json_type(new_value)}.", path=pointer
        )
    check_json(new_value, f"/{escape_token(root)}", 1)
    old = panel.render_root(root) if before is MISSING else before
    with _transaction(panel):
        merge_map(panel.roots[root], old, new_value)
