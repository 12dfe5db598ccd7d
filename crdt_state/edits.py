"""Changes made through the JSON face (REST): patch, replace, revert. They run in the room's
task (through `Room.call`), so they see and leave a consistent doc.

Validation comes first, against the JSON view: a CRDT transaction cannot be rolled back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from pycrdt import Doc

from .doc_patch import apply_to_doc, replace_document
from .document import VIEW_ROOTS, PanelDoc
from .errors import InvalidValue, PathNotFound
from .jsonpatch import (
    Operation,
    apply_to_json,
    check_panel_paths,
    format_pointer,
    inverse_patch,
)
from .ports import ChangeType, TriggeredBy
from .room import Room
from .values import check_json


@dataclass(frozen=True, slots=True)
class Attribution:
    triggered_by: TriggeredBy
    trigger_source: str | None
    subject: str | None


@dataclass(slots=True)
class EditResult:
    future: asyncio.Future[int] | None  # the log version, once committed; None: no change
    before: dict[str, Any]
    after: dict[str, Any]
    inverse: list[dict[str, Any]]
    merged: bool  # applied as a concurrent change against an older version


def patch(room: Room, ops: list[Operation], who: Attribution, *, dry_run: bool) -> EditResult:
    """Apply a JSON Patch to the current state: all operations or none, one version."""
    check_panel_paths(ops)
    before = room.view()[0]
    after = apply_to_json(before, ops)  # raises before anything is touched
    inverse = inverse_patch(before, ops)
    if dry_run:
        return EditResult(None, before, after, inverse, merged=False)
    with room.panel.doc.transaction(origin="rest"):
        apply_to_doc(room.panel, ops, before)
    future = _record(room, who, ChangeType.UPDATED)
    return EditResult(future, before, room.view()[0], inverse, merged=False)


def patch_at(
    room: Room,
    ops: list[Operation],
    base: PanelDoc,
    base_version: int,
    who: Attribution,
    *,
    dry_run: bool,
) -> EditResult:
    """Apply a patch computed against an older version, as an offline Yjs client would.

    The patch is applied to the doc as it was at `base_version` (same item ids), and only
    the update that made is merged into the live doc: indices and tests keep the meaning they
    had then, and concurrent edits made since survive.
    """
    check_panel_paths(ops)
    base_view = base.render()
    apply_to_json(base_view, ops)  # indices and tests as they were at base_version
    current = room.view()[0]
    _check_targets_still_exist(ops, current, base_version)
    update = _update_of(base, lambda: apply_to_doc(base, ops, base_view))
    if dry_run:
        scratch = PanelDoc(Doc())
        scratch.doc.apply_update(room.panel.doc.get_update())
        scratch.doc.apply_update(update)
        after = scratch.render()
        return EditResult(None, current, after, _inverse(current, after), merged=True)
    with room.panel.doc.transaction(origin="rest"):
        room.panel.doc.apply_update(update)
    future = _record(room, who, ChangeType.UPDATED)
    after = room.view()[0]
    return EditResult(future, current, after, _inverse(current, after), merged=True)


def replace(
    room: Room,
    view: dict[str, Any],
    who: Attribution,
    *,
    change_type: ChangeType = ChangeType.UPDATED,
) -> EditResult:
    """Make the named roots equal `view`'s, through the minimal structural change."""
    check_view(view)
    before = room.view()[0]
    with room.panel.doc.transaction(origin="rest"):
        for root, value in view.items():
            replace_document(room.panel, root, value, before[root])
    future = _record(room, who, change_type)
    after = room.view()[0]
    return EditResult(future, before, after, _inverse(before, after), merged=False)


def check_view(view: object) -> dict[str, Any]:
    """A full state as PUT sends it: {"$state": {...}, "$computed": {...}}, either optional."""
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
    return view


def _record(room: Room, who: Attribution, change_type: ChangeType) -> asyncio.Future[int] | None:
    return room.record_change(None, who.trigger_source, who.triggered_by, who.subject, change_type)


def _update_of(panel: PanelDoc, edit: Any) -> bytes:
    updates: list[bytes] = []
    subscription = panel.doc.observe(lambda event: updates.append(event.update))
    try:
        with panel.doc.transaction():
            edit()
    finally:
        panel.doc.unobserve(subscription)
    return updates[0] if updates else b"\x00\x00"


def _check_targets_still_exist(ops: list[Operation], current: Any, base_version: int) -> None:
    """A stale patch whose target's container was deleted since cannot mean anything now."""
    for op in ops:
        for tokens in (op.path, op.from_path):
            if not tokens:
                continue
            node = current
            for depth, token in enumerate(tokens[:-1]):
                if isinstance(node, dict) and token in node:
                    node = node[token]
                elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                    node = node[int(token)]
                else:
                    pointer = format_pointer(tokens[: depth + 1])
                    raise PathNotFound(
                        f"{op.label()}: {pointer} was deleted after version {base_version}.",
                        operation=op.index,
                        path=op.pointer,
                    )


def _inverse(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    # Whole-root replaces: exact whatever merge happened in between.
    return [
        {"op": "replace", "path": format_pointer([root]), "value": before[root]}
        for root in VIEW_ROOTS
        if before.get(root) != after.get(root)
    ]
