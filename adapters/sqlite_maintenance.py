"""LogMaintenance on the SQLite log (docs/RETENTION.md): mixed into SqliteUpdateLog, so it
runs on the log's worker thread and shares its connection. Another process (`crdt-state
compact` beside a running server) takes turns on the file's write lock (BEGIN IMMEDIATE)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from crdt_state.model import JSONPatch, PanelKey
from crdt_state.retention import CompactionConflict, CompactionPlan, StoredBytes

T = TypeVar("T")

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# Every value of a history row, in bytes (TEXT cast to BLOB counts bytes, not characters).
_ROW_BYTES = """(
    length(CAST(workspace_id AS BLOB)) + length(CAST(panel_id AS BLOB)) + 8
    + length(CAST(epoch AS BLOB)) + length("update") + coalesce(length(CAST(patch AS BLOB)), 0)
    + length(CAST(change_type AS BLOB)) + length(CAST(triggered_by AS BLOB))
    + coalesce(length(CAST(trigger_source AS BLOB)), 0)
    + coalesce(length(CAST(subject AS BLOB)), 0) + 8 + 8
    + coalesce(length(CAST(change_id AS BLOB)), 0)
)"""
_PANEL = "workspace_id = ? AND panel_id = ?"


def _micros(moment: datetime) -> int:  # as adapters/sqlite.py stores times
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _UNIX_EPOCH) // _MICROSECOND


@contextmanager
def _transaction(db: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    db.execute(begin)
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class SqliteMaintenance:
    """The LogMaintenance port of SqliteUpdateLog."""

    if TYPE_CHECKING:

        async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T: ...

    async def maintained_panels(
        self, workspace_id: str | None = None, panel_id: str | None = None
    ) -> list[PanelKey]:
        return await self._run(lambda db: _panels(db, workspace_id, panel_id))

    async def inspect(
        self,
        key: PanelKey,
        *,
        fold_before: datetime | None,
        drop_before: datetime | None,
        measure: bool = False,
    ) -> CompactionPlan | None:
        fold = None if fold_before is None else _micros(fold_before)
        drop = None if drop_before is None else _micros(drop_before)
        return await self._run(lambda db: _inspect(db, key, fold, drop, measure))

    async def keep_patches(self, key: PanelKey, patches: Mapping[int, JSONPatch]) -> None:
        rows = [
            (orjson.dumps(patch).decode(), key.workspace_id, key.panel_id, version)
            for version, patch in patches.items()
        ]
        if rows:
            await self._run(lambda db: _keep_patches(db, rows))

    async def compact(self, plan: CompactionPlan, after: int, until: int) -> tuple[int, int]:
        return await self._run(lambda db: _compact(db, plan, after, until))

    async def prune_checkpoints(self, key: PanelKey) -> int:
        return await self._run(lambda db: _prune(db, key))

    async def reclaim(self) -> None:
        await self._run(_vacuum)


# Everything below runs on the log's worker thread.


def _panels(
    db: sqlite3.Connection, workspace_id: str | None, panel_id: str | None
) -> list[PanelKey]:
    if workspace_id is None:
        rows = db.execute(
            "SELECT workspace_id, panel_id FROM panels ORDER BY workspace_id, panel_id"
        ).fetchall()
    elif panel_id is None:
        rows = db.execute(
            "SELECT workspace_id, panel_id FROM panels WHERE workspace_id = ? ORDER BY panel_id",
            (workspace_id,),
        ).fetchall()
    else:
        rows = db.execute(
            f"SELECT workspace_id, panel_id FROM panels WHERE {_PANEL}", (workspace_id, panel_id)
        ).fetchall()
    return [PanelKey(workspace, panel) for workspace, panel in rows]


def _inspect(
    db: sqlite3.Connection, key: PanelKey, fold: int | None, drop: int | None, measure: bool
) -> CompactionPlan | None:
    panel = (key.workspace_id, key.panel_id)
    with _transaction(db, "BEGIN"):  # one snapshot for every read
        row = db.execute(
            "SELECT epoch, version, deleted_at, coalesce(compacted_through, 0),"
            f" coalesce(history_through, 0) FROM panels WHERE {_PANEL}",
            panel,
        ).fetchone()
        if row is None:
            return None
        epoch, version, deleted_at, folded, dropped = row
        fold_through = max(folded, _fold_point(db, panel, epoch, version, deleted_at, fold))
        drop_through = dropped
        if drop is not None:
            (found,) = db.execute(
                f"SELECT max(version) FROM (SELECT version FROM state_history WHERE {_PANEL}"
                " AND version <= ? AND occurred_at <= ? ORDER BY version DESC LIMIT 1)",
                (*panel, fold_through, drop),
            ).fetchone()
            drop_through = max(dropped, found or 0)
        (lowest,) = db.execute(
            f"SELECT min(version) FROM state_history WHERE {_PANEL}", panel
        ).fetchone()
        drop_from = (lowest or version + 1) - 1
        fold_from = max(_fold_start(db, panel, folded, drop_from), drop_from)
        (unpatched,) = db.execute(
            f"SELECT count(*) FROM state_history WHERE {_PANEL} AND version > ?"
            " AND version <= ? AND patch IS NULL AND change_type <> 'deleted'",
            (*panel, fold_from, fold_through),
        ).fetchone()
        stale = (*panel, epoch, deleted_at is not None, fold_through)
        (stale_count,) = db.execute(
            f"SELECT count(*) FROM state_checkpoints WHERE {_PANEL}"
            " AND (epoch <> ? OR ? OR version < ?)",
            stale,
        ).fetchone()
        stored = expected = None
        if measure:
            stored, expected = _measure(db, panel, stale, fold_through, drop_through)
    return CompactionPlan(
        key=key,
        epoch=epoch,
        version=version,
        deleted=deleted_at is not None,
        folded_through=folded,
        fold_from=min(fold_from, fold_through),
        fold_through=fold_through,
        dropped_through=dropped,
        drop_from=min(drop_from, drop_through),
        drop_through=drop_through,
        unpatched=unpatched,
        stale_checkpoints=stale_count,
        stored=stored,
        expected=expected,
    )


def _fold_point(
    db: sqlite3.Connection,
    panel: tuple[str, str],
    epoch: str,
    version: int,
    deleted_at: int | None,
    fold: int | None,
) -> int:
    """The version whose updates, and every earlier one's, may be folded (0: none)."""
    if fold is None:
        return 0
    if deleted_at is not None:  # nothing loads a deleted panel: all of it, once old enough
        return version if deleted_at <= fold else 0
    # The newest checkpoint of the epoch whose version is old enough (a row removed by an
    # earlier compaction was older still).
    found = db.execute(
        "SELECT c.version FROM state_checkpoints AS c LEFT JOIN state_history AS h"
        " ON h.workspace_id = c.workspace_id AND h.panel_id = c.panel_id"
        " AND h.version = c.version"
        " WHERE c.workspace_id = ? AND c.panel_id = ? AND c.epoch = ?"
        " AND (h.occurred_at IS NULL OR h.occurred_at <= ?)"
        " ORDER BY c.version DESC LIMIT 1",
        (*panel, epoch, fold),
    ).fetchone()
    return 0 if found is None else int(found[0])


def _fold_start(db: sqlite3.Connection, panel: tuple[str, str], folded: int, lowest: int) -> int:
    """Rows up to this hold no update. Folds go upwards: if the last row up to the mark has
    none, no row before it has (else a run was interrupted: start again from the bottom)."""
    if folded <= lowest:
        return folded
    top = db.execute(
        f'SELECT length("update") FROM state_history WHERE {_PANEL} AND version <= ?'
        " ORDER BY version DESC LIMIT 1",
        (*panel, folded),
    ).fetchone()
    return folded if top is None or top[0] == 0 else lowest


def _measure(
    db: sqlite3.Connection,
    panel: tuple[str, str],
    stale: tuple[Any, ...],
    fold_through: int,
    drop_through: int,
) -> tuple[StoredBytes, StoredBytes]:
    rows, row_bytes, update_bytes, gone, gone_bytes, gone_updates, folded, ids = db.execute(
        f'SELECT count(*), coalesce(sum({_ROW_BYTES}), 0), coalesce(sum(length("update")), 0),'
        " count(*) FILTER (WHERE version <= ?),"
        f" coalesce(sum({_ROW_BYTES}) FILTER (WHERE version <= ?), 0),"
        ' coalesce(sum(length("update")) FILTER (WHERE version <= ?), 0),'
        ' coalesce(sum(length("update")) FILTER (WHERE version > ? AND version <= ?), 0),'
        " coalesce(sum(length(CAST(change_id AS BLOB))) FILTER (WHERE version > ?"
        " AND version <= ?), 0)"
        f" FROM state_history WHERE {_PANEL}",
        (*[drop_through] * 4, fold_through, drop_through, fold_through, *panel),
    ).fetchone()
    checkpoints, checkpoint_bytes, pruned, pruned_bytes = db.execute(
        "SELECT count(*), coalesce(sum(length(state)), 0),"
        " count(*) FILTER (WHERE epoch <> ? OR ? OR version < ?),"
        " coalesce(sum(length(state)) FILTER (WHERE epoch <> ? OR ? OR version < ?), 0)"
        f" FROM state_checkpoints WHERE {_PANEL}",
        (*stale[2:], *stale[2:], *stale[:2]),
    ).fetchone()
    stored = StoredBytes(rows, row_bytes, update_bytes, checkpoints, checkpoint_bytes)
    expected = StoredBytes(
        rows - gone,
        row_bytes - gone_bytes - folded - ids,
        update_bytes - gone_updates - folded,
        checkpoints - pruned,
        checkpoint_bytes - pruned_bytes,
    )
    return stored, expected


def _keep_patches(db: sqlite3.Connection, rows: list[tuple[str, str, str, int]]) -> None:
    with _transaction(db):
        db.executemany(
            f"UPDATE state_history SET patch = ? WHERE {_PANEL} AND version = ? AND patch IS NULL",
            rows,
        )


def _compact(
    db: sqlite3.Connection, plan: CompactionPlan, after: int, until: int
) -> tuple[int, int]:
    panel = (plan.key.workspace_id, plan.key.panel_id)
    with _transaction(db):
        row = db.execute(
            "SELECT epoch, deleted_at, coalesce(compacted_through, 0),"
            f" coalesce(history_through, 0) FROM panels WHERE {_PANEL}",
            panel,
        ).fetchone()
        if row is None:
            return 0, 0
        epoch, deleted_at, folded, dropped = row
        if plan.fold_through > folded:
            if deleted_at is None and epoch == plan.epoch and not plan.deleted:
                # A live panel of the plan's epoch: its loads need the checkpoint at the mark.
                found = db.execute(
                    f"SELECT 1 FROM state_checkpoints WHERE {_PANEL} AND version = ? AND epoch = ?",
                    (*panel, plan.fold_through, epoch),
                ).fetchone()
                if found is None:
                    raise CompactionConflict(
                        f"Panel {plan.key}: the checkpoint at version {plan.fold_through} is "
                        "gone; nothing was compacted.",
                        panel=str(plan.key),
                    )
            folded = plan.fold_through
            db.execute(f"UPDATE panels SET compacted_through = ? WHERE {_PANEL}", (folded, *panel))
        drop_through = min(plan.drop_through, folded)
        if drop_through > dropped:
            dropped = drop_through
            db.execute(f"UPDATE panels SET history_through = ? WHERE {_PANEL}", (dropped, *panel))
        removed = db.execute(
            f"DELETE FROM state_history WHERE {_PANEL} AND version > ? AND version <= ?",
            (*panel, after, min(until, dropped)),
        ).rowcount
        # A row without a patch keeps its update: history computes its patch from it. A folded
        # row gives up its change id too (exactly-once appends need recent ones only).
        emptied = db.execute(
            f"UPDATE state_history SET \"update\" = x'', change_id = NULL WHERE {_PANEL}"
            ' AND version > ? AND version <= ? AND length("update") > 0'
            " AND (patch IS NOT NULL OR change_type = 'deleted')",
            (*panel, after, min(until, folded)),
        ).rowcount
    return emptied, removed


def _prune(db: sqlite3.Connection, key: PanelKey) -> int:
    panel = (key.workspace_id, key.panel_id)
    with _transaction(db):
        row = db.execute(
            "SELECT epoch, deleted_at IS NOT NULL, coalesce(compacted_through, 0)"
            f" FROM panels WHERE {_PANEL}",
            panel,
        ).fetchone()
        if row is None:
            return 0
        return db.execute(
            f"DELETE FROM state_checkpoints WHERE {_PANEL} AND (epoch <> ? OR ? OR version < ?)",
            (*panel, *row),
        ).rowcount


def _vacuum(db: sqlite3.Connection) -> None:
    db.execute("VACUUM")  # rewrites the file without its free pages
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
