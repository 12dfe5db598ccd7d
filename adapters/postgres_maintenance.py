"""LogMaintenance on the PostgreSQL log (docs/RETENTION.md): mixed into PostgresUpdateLog, so
it uses its pool. Marks move in a short transaction of their own (the panel's row is what
appends lock); rows are folded and removed in transactions that lock no panel row."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson

from crdt_state.model import JSONPatch, PanelKey
from crdt_state.retention import CompactionConflict, CompactionPlan, StoredBytes

# VACUUM of a large log takes a while: longer than the pool's command timeout.
_VACUUM_TIMEOUT = 3600.0

_PANEL = "workspace_id = $1 AND panel_id = $2"
_PANEL_ROW = f"""
    SELECT epoch, version, deleted_at, coalesce(compacted_through, 0),
           coalesce(history_through, 0)
    FROM panel_states WHERE {_PANEL}
"""
# The newest checkpoint of the epoch whose version is old enough (a row removed by an earlier
# compaction was older still).
_FOLD_POINT = """
    SELECT c.version FROM state_checkpoints AS c
    LEFT JOIN state_history AS h
      ON h.workspace_id = c.workspace_id AND h.panel_id = c.panel_id AND h.version = c.version
    WHERE c.workspace_id = $1 AND c.panel_id = $2 AND c.epoch = $3
      AND (h.occurred_at IS NULL OR h.occurred_at <= $4)
    ORDER BY c.version DESC LIMIT 1
"""
_DROP_POINT = f"""
    SELECT version FROM state_history
    WHERE {_PANEL} AND version <= $3 AND occurred_at <= $4
    ORDER BY version DESC LIMIT 1
"""
_TOP_FOLDED = f"""
    SELECT octet_length(yjs_update) FROM state_history
    WHERE {_PANEL} AND version <= $3 ORDER BY version DESC LIMIT 1
"""
_UNPATCHED = f"""
    SELECT count(*) FROM state_history
    WHERE {_PANEL} AND version > $3 AND version <= $4 AND patch IS NULL
      AND change_type <> 'deleted'
"""
_STALE = "(epoch <> $3 OR $4 OR version < $5)"
_MEASURE_ROWS = f"""
    SELECT count(*), coalesce(sum(pg_column_size(h.*)), 0),
           coalesce(sum(octet_length(yjs_update)), 0),
           count(*) FILTER (WHERE version <= $3),
           coalesce(sum(pg_column_size(h.*)) FILTER (WHERE version <= $3), 0),
           coalesce(sum(octet_length(yjs_update)) FILTER (WHERE version <= $3), 0),
           coalesce(sum(octet_length(yjs_update)) FILTER (WHERE version > $3 AND version <= $4),
                    0),
           coalesce(sum(octet_length(change_id)) FILTER (WHERE version > $3 AND version <= $4),
                    0)
    FROM state_history AS h WHERE {_PANEL}
"""
_MEASURE_CHECKPOINTS = f"""
    SELECT count(*), coalesce(sum(pg_column_size(state)), 0),
           count(*) FILTER (WHERE {_STALE}),
           coalesce(sum(pg_column_size(state)) FILTER (WHERE {_STALE}), 0)
    FROM state_checkpoints WHERE {_PANEL}
"""
_REMOVE = f"DELETE FROM state_history WHERE {_PANEL} AND version > $3 AND version <= $4"
# A row without a patch keeps its update: history computes its patch from it. A folded row
# gives up its change id too (exactly-once appends need recent ones only).
_FOLD = f"""
    UPDATE state_history SET yjs_update = ''::bytea, change_id = NULL
    WHERE {_PANEL} AND version > $3 AND version <= $4 AND octet_length(yjs_update) > 0
      AND (patch IS NOT NULL OR change_type = 'deleted')
"""
_PRUNE = """
    DELETE FROM state_checkpoints AS c USING panel_states AS p
    WHERE p.workspace_id = $1 AND p.panel_id = $2
      AND c.workspace_id = p.workspace_id AND c.panel_id = p.panel_id
      AND (c.epoch <> p.epoch OR p.deleted_at IS NOT NULL
           OR c.version < coalesce(p.compacted_through, 0))
"""


def _count(status: str) -> int:
    """The row count of a command status ("DELETE 12", "UPDATE 3")."""
    return int(status.split()[-1])


def _utc(moment: datetime) -> datetime:  # a naive time from our own code means UTC
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class PostgresMaintenance:
    """The LogMaintenance port of PostgresUpdateLog."""

    if TYPE_CHECKING:

        def _connection(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

        def _transaction(
            self, **options: Any
        ) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

    async def maintained_panels(
        self, workspace_id: str | None = None, panel_id: str | None = None
    ) -> list[PanelKey]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT workspace_id, panel_id FROM panel_states"
                " WHERE ($1::text IS NULL OR workspace_id = $1)"
                " AND ($2::text IS NULL OR panel_id = $2)"
                " ORDER BY workspace_id, panel_id",
                workspace_id,
                panel_id if workspace_id is not None else None,
            )
        return [PanelKey(workspace, panel) for workspace, panel in rows]

    async def inspect(
        self,
        key: PanelKey,
        *,
        fold_before: datetime | None,
        drop_before: datetime | None,
        measure: bool = False,
    ) -> CompactionPlan | None:
        panel = (key.workspace_id, key.panel_id)
        async with self._transaction(isolation="repeatable_read", readonly=True) as conn:
            row = await conn.fetchrow(_PANEL_ROW, *panel)
            if row is None:
                return None
            epoch, version, deleted_at, folded, dropped = row
            fold_through = folded
            if fold_before is not None:
                if deleted_at is not None:  # nothing loads a deleted panel: all, once old enough
                    point = version if deleted_at <= _utc(fold_before) else 0
                else:
                    point = await conn.fetchval(_FOLD_POINT, *panel, epoch, _utc(fold_before))
                fold_through = max(folded, point or 0)
            drop_through = dropped
            if drop_before is not None:
                found = await conn.fetchval(_DROP_POINT, *panel, fold_through, _utc(drop_before))
                drop_through = max(dropped, found or 0)
            lowest = await conn.fetchval(
                f"SELECT min(version) FROM state_history WHERE {_PANEL}", *panel
            )
            drop_from = (lowest or version + 1) - 1
            fold_from = folded
            if folded > drop_from:
                # Folds go upwards: if the last row up to the mark holds no update, no row
                # before it does (else a run was interrupted: start again from the bottom).
                top = await conn.fetchval(_TOP_FOLDED, *panel, folded)
                fold_from = folded if not top else drop_from
            fold_from = max(fold_from, drop_from)
            unpatched = await conn.fetchval(_UNPATCHED, *panel, fold_from, fold_through)
            stale = (epoch, deleted_at is not None, fold_through)
            stale_count = await conn.fetchval(
                f"SELECT count(*) FROM state_checkpoints WHERE {_PANEL} AND {_STALE}",
                *panel,
                *stale,
            )
            stored = expected = None
            if measure:
                stored, expected = await _measure(conn, panel, stale, fold_through, drop_through)
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

    async def keep_patches(self, key: PanelKey, patches: Mapping[int, JSONPatch]) -> None:
        from adapters.postgres import _jsonb_text  # that module imports this one

        rows = [
            (_jsonb_text(orjson.dumps(patch)), key.workspace_id, key.panel_id, version)
            for version, patch in patches.items()
        ]
        if not rows:
            return
        async with self._transaction() as conn:
            await conn.executemany(
                "UPDATE state_history SET patch = $1::jsonb"
                " WHERE workspace_id = $2 AND panel_id = $3 AND version = $4 AND patch IS NULL",
                rows,
            )

    async def compact(self, plan: CompactionPlan, after: int, until: int) -> tuple[int, int]:
        panel = (plan.key.workspace_id, plan.key.panel_id)
        folded, dropped = await self._mark(plan)
        async with self._transaction() as conn:
            removed = await conn.execute(_REMOVE, *panel, after, min(until, dropped))
            emptied = await conn.execute(_FOLD, *panel, after, min(until, folded))
        return _count(emptied), _count(removed)

    async def _mark(self, plan: CompactionPlan) -> tuple[int, int]:
        """Move the panel's fold and drop marks to the plan's, if they are behind; the marks."""
        panel = (plan.key.workspace_id, plan.key.panel_id)
        async with self._connection() as conn:
            row = await conn.fetchrow(_PANEL_ROW, *panel)
        if row is None:
            return 0, 0
        _, _, _, folded, dropped = row
        if plan.fold_through <= folded and min(plan.drop_through, folded) <= dropped:
            return folded, dropped
        async with self._transaction() as conn:
            row = await conn.fetchrow(_PANEL_ROW + " FOR UPDATE", *panel)
            if row is None:
                return 0, 0
            epoch, _, deleted_at, folded, dropped = row
            if plan.fold_through > folded:
                if deleted_at is None and epoch == plan.epoch and not plan.deleted:
                    # A live panel of the plan's epoch: its loads need the checkpoint at the mark.
                    found = await conn.fetchval(
                        f"SELECT 1 FROM state_checkpoints WHERE {_PANEL} AND version = $3"
                        " AND epoch = $4",
                        *panel,
                        plan.fold_through,
                        epoch,
                    )
                    if found is None:
                        raise CompactionConflict(
                            f"Panel {plan.key}: the checkpoint at version {plan.fold_through} is "
                            "gone; nothing was compacted.",
                            panel=str(plan.key),
                        )
                folded = plan.fold_through
            dropped = max(dropped, min(plan.drop_through, folded))
            await conn.execute(
                f"UPDATE panel_states SET compacted_through = $3, history_through = $4"
                f" WHERE {_PANEL}",
                *panel,
                folded,
                dropped,
            )
        return folded, dropped

    async def prune_checkpoints(self, key: PanelKey) -> int:
        async with self._transaction() as conn:
            return _count(await conn.execute(_PRUNE, key.workspace_id, key.panel_id))

    async def reclaim(self) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "VACUUM (ANALYZE) state_history, state_checkpoints, panel_states",
                timeout=_VACUUM_TIMEOUT,
            )


async def _measure(
    conn: asyncpg.Connection,
    panel: tuple[str, str],
    stale: tuple[str, bool, int],
    fold_through: int,
    drop_through: int,
) -> tuple[StoredBytes, StoredBytes]:
    row = await conn.fetchrow(_MEASURE_ROWS, *panel, drop_through, fold_through)
    rows, row_bytes, update_bytes, gone, gone_bytes, gone_updates, folded, ids = map(int, row)
    row = await conn.fetchrow(_MEASURE_CHECKPOINTS, *panel, *stale)
    checkpoints, checkpoint_bytes, pruned, pruned_bytes = map(int, row)
    stored = StoredBytes(rows, row_bytes, update_bytes, checkpoints, checkpoint_bytes)
    expected = StoredBytes(
        rows - gone,
        row_bytes - gone_bytes - folded - ids,
        update_bytes - gone_updates - folded,
        checkpoints - pruned,
        checkpoint_bytes - pruned_bytes,
    )
    return stored, expected
