"""Changes made through the JSON face, as room edits (`Room.edit`): a JSON Patch, or a
replace of whole roots (PUT, revert, restore). Each is checked against the room's current
view before anything touches the doc (a CRDT transaction cannot be rolled back), and that
one check also gives the view the change leaves and its inverse.

A patch computed against an older version is not an edit of the current doc: it is applied
to the doc as it was then, and the update that made is merged (`stale_update`), as an offline
Yjs client's edit would be.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pycrdt import Doc

from .doc_patch import replace_document, write_plan
from .document import VIEW_ROOTS, PanelDoc
from .errors import Forbidden, InvalidPatch, InvalidValue, PathNotFound
from .jsonpatch import Operation, fail, format_pointer, json_type
from .model import JSONObject, JSONPatch, LoadedPanel
from .patch_plan import PatchPlan, plan_patch
from .replay import rebuild
from .values import check_json, count_values, escape_token, natural, normalize_numbers

EMPTY_UPDATE = b"\x00\x00"
# A write of at least this many values (values.count_values) is made on a scratch copy of
# the doc, one transaction per change (write_in_bulk): on the doc itself, in one transaction,
# filling runs of scalars into new arrays costs time quadratic in their length
# (document.fill; 1,000 integers: ~20 ms).
BULK_VALUES = 1000


@dataclass(frozen=True, slots=True)
class PatchEdit:
    before: JSONObject
    plan: PatchPlan

    @property
    def written_bytes(self) -> int:
        return self.plan.written_bytes

    @property
    def bulky(self) -> bool:
        return self.plan.written_values >= BULK_VALUES

    @property
    def after(self) -> JSONObject:
        after: JSONObject = self.plan.after
        return after

    @property
    def inverse(self) -> JSONPatch:
        return self.plan.inverse

    def write(self, panel: PanelDoc) -> None:
        write_plan(panel, self.plan)


def patch_edit(
    ops: list[Operation],
    max_written_bytes: int | None = None,
    max_written_values: int | None = None,
) -> Callable[[JSONObject], PatchEdit]:
    """The edit that applies `ops` (checked by check_panel_paths) to the current view; one
    that would write more than `max_written_bytes` or `max_written_values` (copies multiply
    a small patch) is refused before anything is touched."""

    def prepare(view: JSONObject) -> PatchEdit:
        return PatchEdit(view, plan_patch(view, ops, max_written_bytes, max_written_values))

    return prepare


@dataclass(frozen=True, slots=True)
class ReplaceEdit:
    before: JSONObject
    roots: JSONObject  # the roots given, each replaced whole

    @property
    def written_bytes(self) -> int:
        return len(orjson.dumps(self.roots))

    @property
    def bulky(self) -> bool:
        # The roots given, counted up to the threshold (unchanged parts are not written, but
        # finding them is the write itself).
        return count_values(self.roots, BULK_VALUES) >= BULK_VALUES

    @property
    def after(self) -> JSONObject:
        return {**self.before, **self.roots}

    @property
    def inverse(self) -> JSONPatch:
        return whole_root_inverse(self.before, self.after)

    def write(self, panel: PanelDoc) -> None:
        for root, value in self.roots.items():
            replace_document(panel, root, value, self.before[root])


def replace_edit(view: JSONObject) -> Callable[[JSONObject], ReplaceEdit]:
    """The edit that makes the roots named in `view` (checked by check_view) equal its,
    through the minimal structural change; roots not named are left alone."""

    def prepare(current: JSONObject) -> ReplaceEdit:
        return ReplaceEdit(current, view)

    return prepare


def write_in_bulk(panel: PanelDoc, write: Callable[[PanelDoc], None]) -> bytes:
    """The Yjs update that `write` makes to `panel`, made on a scratch copy of its doc (the
    same client id: the items are the panel's own) one transaction per change, so that new
    arrays fill in linear time. `panel` is not touched: apply the update to it. The update
    also carries the doc's delete set (a few bytes per deleted run)."""
    scratch: Doc[Any] = Doc(client_id=panel.doc.client_id)
    scratch.apply_update(panel.doc.get_update())
    return _written_in_bulk(PanelDoc(scratch, bulk=True), write)


def _written_in_bulk(scratch: PanelDoc, write: Callable[[PanelDoc], None]) -> bytes:
    """`write` made on `scratch` (a doc nobody else uses), one transaction per change; the
    update that made."""
    state = scratch.doc.get_state()
    write(scratch)
    return bytes(scratch.doc.get_update(state))


def check_view(view: object) -> JSONObject:
    """A full state as PUT sends it: {"$state": {...}, "$computed": {...}}, either optional.
    Returns it with numbers as the doc renders them."""
    if not isinstance(view, dict):
        raise InvalidValue("'state' must be an object like {\"$state\": {...}}.", path="")
    for root, value in view.items():
        if root not in VIEW_ROOTS:
            raise InvalidValue(
                f"'state' may only hold the roots {', '.join(VIEW_ROOTS)}, not {root!r}.",
                path=format_pointer([root]),
            )
        if not isinstance(value, dict):
            raise InvalidValue(f"'{root}' must be an object.", path=format_pointer([root]))
    check_json(view)
    normalized: JSONObject = normalize_numbers(view)
    return normalized


def whole_root_inverse(before: JSONObject, after: JSONObject) -> JSONPatch:
    """Whole-root replaces that turn `after` back into `before`: exact whatever merge
    happened in between."""
    return [
        {"op": "replace", "path": format_pointer([root]), "value": before[root]}
        for root in VIEW_ROOTS
        if before.get(root) != after.get(root)
    ]


# -- panel paths -------------------------------------------------------------------------------


def check_panel_paths(ops: Iterable[Operation], writable_roots: Sequence[str] = VIEW_ROOTS) -> None:
    """Every path must lie in a root of the panel's JSON view that the caller may write.

    Outside the view ("", $meta, unknown roots): InvalidPatch. A view root the caller may not
    write: Forbidden. A root itself can be tested, or replaced by (merged with) an object.
    """
    for op in ops:
        _check_root_path(op, op.path, op.pointer, writable_roots)
        if op.from_path is not None:
            _check_root_path(op, op.from_path, op.from_pointer or "", writable_roots)
        if len(op.path) == 1:
            _check_root_target(op)
        if op.op == "move" and op.from_path is not None and len(op.from_path) == 1:
            fail(InvalidPatch, op, f"the root {op.from_pointer} cannot be moved away.")


def _check_root_path(
    op: Operation, tokens: list[str], pointer: str, writable: Sequence[str]
) -> None:
    roots = ", ".join(f"/{escape_token(root)}" for root in writable)
    if not tokens or tokens[0] not in VIEW_ROOTS:
        where = f"'{pointer}'" if pointer else "the whole view"
        fail(InvalidPatch, op, f"{where} is outside the panel's state; paths start with {roots}.")
    if tokens[0] not in writable:
        fail(Forbidden, op, f"{pointer} may not be written here; paths start with {roots}.")


def _check_root_target(op: Operation) -> None:
    if op.op == "remove":
        fail(InvalidPatch, op, "a root cannot be removed; replace it with {} to empty it.")
    if op.op in ("move", "copy"):
        fail(InvalidPatch, op, "a root can only be replaced by an object value.")
    if op.op in ("add", "replace") and not isinstance(op.value, dict):
        fail(InvalidPatch, op, f"a root must stay an object, not {json_type(op.value)}.")


# -- stale patches -------------------------------------------------------------------------


def stale_update(
    loaded: LoadedPanel,
    ops: list[Operation],
    max_written_bytes: int | None = None,
    max_written_values: int | None = None,
) -> bytes:
    """The Yjs update `ops` make to the panel as `loaded` holds it (an older version): indices
    and tests mean what they meant then. Pure: runs on a thread, its doc never leaves it."""
    base = PanelDoc(rebuild(loaded))
    plan = patch_edit(ops, max_written_bytes, max_written_values)(base.render()).plan
    if plan.written_values >= BULK_VALUES:  # `base` is this function's own: no copy
        base.bulk = True
        return _written_in_bulk(base, lambda panel: write_plan(panel, plan))
    updates: list[bytes] = []
    subscription = base.doc.observe(lambda event: updates.append(event.update))
    try:
        with base.doc.transaction():
            write_plan(base, plan)
    finally:
        base.doc.unobserve(subscription)
    return updates[0] if updates else EMPTY_UPDATE


def check_targets_still_exist(ops: list[Operation], current: Any, base_version: int) -> None:
    """A stale patch whose target's container was deleted since cannot mean anything now."""
    for op in ops:
        for tokens in (op.path, op.from_path):
            if not tokens:
                continue
            node = current
            for depth, token in enumerate(tokens[:-1]):
                if isinstance(node, dict) and token in node:
                    node = node[token]
                elif (
                    isinstance(node, list)
                    and (index := natural(token)) is not None
                    and (index < len(node))
                ):
                    node = node[index]
                else:
                    pointer = format_pointer(tokens[: depth + 1])
                    raise PathNotFound(
                        f"{op.label()}: {pointer} was deleted after version {base_version}.",
                        operation=op.index,
                        path=op.pointer,
                    )


def preview_merge(state: bytes, update: bytes) -> JSONObject:
    """The view a merged update would give (a dry run), on a scratch doc."""
    scratch = PanelDoc(Doc())
    scratch.doc.apply_update(state)
    scratch.doc.apply_update(update)
    return scratch.render()
