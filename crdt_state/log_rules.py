"""Rules every log adapter keeps alike: how a batch is numbered and refused, and the form a
stored JSON view takes. The adapters import them from here, never from each other."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from .errors import PanelNotFound, StaleEpoch
from .model import Change, ChangeType, PanelKey


def panel_not_found(key: PanelKey) -> PanelNotFound:
    return PanelNotFound(f"Panel {key} does not exist or was deleted.", panel=str(key))


def stale_epoch(key: PanelKey) -> StaleEpoch:
    return StaleEpoch(
        f"Panel {key} was deleted or re-created since it was loaded; load it again.",
        panel=str(key),
    )


@dataclass(slots=True)
class BatchPanel:
    """The part of a panel's row that append() checks and advances, change by change."""

    epoch: str
    version: int
    deleted: bool
    changed: bool = False
    updated_at: datetime | None = None
    deleted_at: datetime | None = None


@dataclass(slots=True)
class NumberedBatch:
    versions: list[int]  # one per change of the batch, in order
    new: list[tuple[Change, int]] = field(default_factory=list)  # to write, with their version


def number_batch(
    changes: Sequence[Change], panels: dict[PanelKey, BatchPanel], logged: dict[str, int]
) -> NumberedBatch:
    """Give each change its version; `panels` (locked by the caller) advance as they go.

    A change whose id is in `logged`, or earlier in the batch, gets that version again and is
    not written twice: a retried batch is committed exactly once. Every new change is checked
    before anything is written, so a refused change (PanelNotFound, StaleEpoch) writes nothing.
    """
    known = dict(logged)
    numbered = NumberedBatch(versions=[])
    for change in changes:
        version = known.get(change.change_id)
        if version is None:
            version = _advance(panels.get(change.key), change)
            known[change.change_id] = version
            numbered.new.append((change, version))
        numbered.versions.append(version)
    return numbered


def _advance(panel: BatchPanel | None, change: Change) -> int:
    if panel is None or panel.deleted:
        raise panel_not_found(change.key)
    if change.epoch != panel.epoch:
        raise stale_epoch(change.key)
    panel.version += 1
    panel.changed = True
    panel.updated_at = change.occurred_at
    if change.change_type == ChangeType.DELETED:
        panel.deleted, panel.deleted_at = True, change.occurred_at
    return panel.version


@dataclass(frozen=True, slots=True)
class StoredView:
    """A panel's JSON view as save_view() keeps it."""

    canonical: bytes  # orjson with sorted keys: equal views give equal bytes
    checksum: str  # SHA-256 of `canonical`, hex
    leaves: int  # leaf values (scalars) in the view


def stored_view(view: dict[str, Any]) -> StoredView:
    canonical = orjson.dumps(view, option=orjson.OPT_SORT_KEYS)
    return StoredView(canonical, hashlib.sha256(canonical).hexdigest(), count_leaves(view))


def count_leaves(value: Any) -> int:
    """Scalars in a JSON value; an empty object or array holds none."""
    if isinstance(value, dict):
        return _count_all(value.values())
    if isinstance(value, list):
        return _count_all(value)
    return 1


def _count_all(values: Iterable[Any]) -> int:
    return sum(count_leaves(item) for item in values)


def stored_patch(text: str | bytes | None) -> list[dict[str, Any]] | None:
    """A log row's patch; None (readers compute it in log order) when there is none, or when
    it cannot be read back (an older server stored values nested past what JSON parsers
    take)."""
    if text is None:
        return None
    try:
        patch = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return patch if isinstance(patch, list) else None
