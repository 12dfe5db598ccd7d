"""Patches in log order, for entries whose patch the writer could not know.

A replica records each change's JSON Patch against its own doc. When another replica wrote
the same panel in between, that patch need not be the change's effect in log order, so the
log keeps none; here it is computed by replaying the log: state at N-1, then update N.
"""

from __future__ import annotations

from pycrdt import Doc

from .document import UNRENDERABLE, PanelDoc
from .model import ChangeType, LogEntry, PanelKey
from .patch_events import PatchRecorder
from .ports import UpdateLog
from .replay import rebuild
from .values import MAX_DEPTH, nests_deeper

# Replaying a short gap of the log beats rebuilding from a checkpoint.
GAP_REPLAY_LIMIT = 200


async def fill_patches(log: UpdateLog, key: PanelKey, entries: list[LogEntry]) -> None:
    """Give every entry of `entries` (any order) a patch, computing missing ones in place."""
    missing = sorted(
        (e for e in entries if e.patch is None and e.change_type != ChangeType.DELETED),
        key=lambda e: e.version,
    )
    panel: PanelDoc | None = None
    at = 0
    for entry in missing:
        if panel is None or not at < entry.version <= at + GAP_REPLAY_LIMIT:
            panel, at = await _doc_before(log, key, entry)
        else:
            for step in await log.read(
                key, after=at, until=entry.version - 1, limit=GAP_REPLAY_LIMIT
            ):
                panel.doc.apply_update(step.update)
            at = entry.version - 1
        entry.patch = _patch_of(panel, entry.update)
        at = entry.version


async def _doc_before(log: UpdateLog, key: PanelKey, entry: LogEntry) -> tuple[PanelDoc, int]:
    loaded = await log.load(key, until=entry.version - 1) if entry.version > 1 else None
    if loaded is None or (loaded.tail and loaded.tail[-1].epoch != entry.epoch):
        return PanelDoc(Doc()), entry.version - 1
    return PanelDoc(rebuild(loaded)), entry.version - 1


def _patch_of(panel: PanelDoc, update: bytes) -> list[dict[str, object]]:
    with PatchRecorder(panel) as recorder:
        panel.doc.apply_update(update)
        patch = recorder.take()
    # A log written before updates were checked may hold values too deep to show.
    for op in patch:
        if "value" in op and nests_deeper(op["value"], MAX_DEPTH):
            op["value"] = UNRENDERABLE
    return patch
