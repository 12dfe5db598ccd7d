"""Retention (docs/RETENTION.md): what compaction keeps, and the records the store and the
orchestration (compaction.py) exchange through the LogMaintenance port."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from .errors import StateError
from .model import PanelKey

# Versions younger than this keep their update bytes and their rows whatever the policy says:
# a committer retrying a batch finds its change ids in them (exactly-once appends), and a
# replica catching a room up from the log applies their updates.
GRACE = timedelta(hours=1)
DAY = timedelta(days=1)


class VersionCompacted(StateError):
    """Time travel (or a stale patch, or a revert) to a version the retention policy no longer
    keeps: its update was folded into a later checkpoint."""

    code = "version_compacted"
    status = 410


class CompactionConflict(StateError):
    """The panel changed under a compaction in a way its plan did not foresee (its fold point's
    checkpoint is gone): nothing was done; the next run plans again."""

    code = "compaction_conflict"
    status = 409


def version_compacted(key: PanelKey, version: int, fold_point: int) -> VersionCompacted:
    return VersionCompacted(
        f"Version {version} of panel '{key}' is older than the retention policy keeps for time "
        f"travel (its update was folded into a checkpoint); versions from {fold_point} on can "
        "be read.",
        version=version,
        availableFrom=fold_point,
    )


# -- the policy --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What compaction keeps. None: forever (the default: compaction then only prunes
    checkpoints nothing can load)."""

    history: timedelta | None = None  # history rows (patch, attribution, time)
    time_travel: timedelta | None = None  # None: as long as history

    @classmethod
    def of_days(cls, history: float | None, time_travel: float | None) -> RetentionPolicy:
        for name, days in (("history", history), ("time travel", time_travel)):
            if days is not None and not days >= 0:
                raise ValueError(f"{name} days must be 0 or more, not {days}")
        return cls(
            None if history is None else history * DAY,
            None if time_travel is None else time_travel * DAY,
        )

    @property
    def travel(self) -> timedelta | None:
        return self.time_travel if self.time_travel is not None else self.history

    def fold_before(self, now: datetime) -> datetime | None:
        """Updates of versions older than this may be folded (None: none)."""
        travel = self.travel
        return None if travel is None else now - max(travel, GRACE)

    def drop_before(self, now: datetime) -> datetime | None:
        """History rows older than this may be removed (None: none)."""
        return None if self.history is None else now - max(self.history, GRACE)

    def to_json(self) -> dict[str, Any]:
        def days(span: timedelta | None) -> float | None:
            return None if span is None else span / DAY

        return {"historyDays": days(self.history), "timeTravelDays": days(self.travel)}

    def describe(self) -> str:
        def kept(span: timedelta | None) -> str:
            if span is None:
                return "forever"
            days = span / DAY
            return f"{days:g} day" + ("" if days == 1 else "s")

        return f"history {kept(self.history)}, time travel {kept(self.travel)}"


# -- what the store reports --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredBytes:
    """What a panel keeps in the store. `row_bytes` is every value of its history rows
    (SQLite: the values' lengths, 8 per integer; PostgreSQL: pg_column_size of each row),
    without page and index overhead."""

    rows: int = 0
    row_bytes: int = 0
    update_bytes: int = 0  # the Yjs updates among them
    checkpoints: int = 0
    checkpoint_bytes: int = 0

    @property
    def total(self) -> int:
        return self.row_bytes + self.checkpoint_bytes

    def __add__(self, other: StoredBytes) -> StoredBytes:
        return StoredBytes(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(StoredBytes))
        )

    def to_json(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "rowBytes": self.row_bytes,
            "updateBytes": self.update_bytes,
            "checkpoints": self.checkpoints,
            "checkpointBytes": self.checkpoint_bytes,
            "totalBytes": self.total,
        }


@dataclass(frozen=True, slots=True)
class CompactionPlan:
    """What compacting one panel under a policy would do (LogMaintenance.inspect).

    Rows <= `fold_from` hold no update any more; those in (fold_from, fold_through] lose it.
    Rows <= `drop_from` are gone; those in (drop_from, drop_through] go. `folded_through` and
    `dropped_through` are the marks stored on the panel (0: never compacted)."""

    key: PanelKey
    epoch: str
    version: int
    deleted: bool
    folded_through: int
    fold_from: int
    fold_through: int
    dropped_through: int
    drop_from: int
    drop_through: int
    unpatched: int  # rows in (fold_from, fold_through] without a patch
    stale_checkpoints: int
    stored: StoredBytes | None = None  # now (measured)
    expected: StoredBytes | None = None  # once compacted (estimated)

    @property
    def folds(self) -> bool:
        return self.fold_through > self.fold_from

    @property
    def drops(self) -> bool:
        return self.drop_through > self.drop_from

    @property
    def work(self) -> bool:
        return self.folds or self.drops or self.stale_checkpoints > 0

    @property
    def span(self) -> tuple[int, int]:
        """The versions (after, until] the fold and drop ranges cover."""
        starts = [self.fold_from] * self.folds + [self.drop_from] * self.drops
        ends = [self.fold_through] * self.folds + [self.drop_through] * self.drops
        return (min(starts), max(ends)) if starts else (0, 0)
