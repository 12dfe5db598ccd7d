"""LogTransfer on the PostgreSQL log (crdt_state/transfer.py: `crdt-state export` / `import`).

An export reads in one REPEATABLE READ, read-only transaction (one snapshot; appends go on). An
import is one transaction on one connection: the workspace's panel rows are locked (FOR UPDATE)
while they are checked or removed, and a panel another process creates meanwhile makes the
import fail on the unique key, rolled back, rather than mix with it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from adapters.postgres import (
    _CHANGE_TYPES,
    _ENTRY_COLUMNS,
    _HISTORY_COLUMNS,
    _LOAD_HEAD,
    _NO_LIMIT,
    _SAVE_VIEW,
    _TRIGGERS,
    PostgresUpdateLog,
    _entry,
    _patch_text,
    _view_row,
)
from crdt_state.log_rules import stored_patch
from crdt_state.model import Checkpoint, LoadedPanel, PanelInfo, PanelKey, PanelView
from crdt_state.transfer_format import (
    PanelRecord,
    StoredCheckpoint,
    TransferEntry,
    TransferError,
    WorkspaceExists,
)

_PANEL_ROWS = """
    SELECT panel_id, epoch, version, created_by, created_at, updated_at, deleted_at,
           coalesce(compacted_through, 0), coalesce(history_through, 0)
    FROM panel_states WHERE workspace_id = $1 ORDER BY panel_id COLLATE "C"
"""
_CHECKPOINT = """
    SELECT version, epoch, state, created_at FROM state_checkpoints
    WHERE workspace_id = $1 AND panel_id = $2 AND epoch = $3 AND version > $4 AND version <= $5
    ORDER BY version LIMIT 1
"""
_ROWS = f"""
    SELECT {_ENTRY_COLUMNS}, change_id FROM state_history
    WHERE workspace_id = $1 AND panel_id = $2 AND version > $3 ORDER BY version LIMIT $4
"""
_INSERT_PANEL = """
    INSERT INTO panel_states (workspace_id, panel_id, epoch, version, created_by, created_at,
                              updated_at, last_accessed_at, deleted_at, compacted_through,
                              history_through)
    VALUES ($1, $2, $3, $4, $5, $6, $7, now(), $8, $9, $10)
"""
_INSERT_CHECKPOINT = """
    INSERT INTO state_checkpoints (workspace_id, panel_id, version, epoch, state, created_at)
    VALUES ($1, $2, $3, $4, $5, $6)
"""
_TAIL = f"""
    SELECT {_ENTRY_COLUMNS} FROM state_history
    WHERE workspace_id = $1 AND panel_id = $2 AND version > $3 AND version <= $4 AND epoch = $5
    ORDER BY version
"""


def _row(row: asyncpg.Record) -> TransferEntry:
    version, epoch, update, change_type, triggered_by, source, subject, patch, at, change_id = row
    return TransferEntry(
        version,
        epoch,
        update,
        _CHANGE_TYPES[change_type],
        _TRIGGERS[triggered_by],
        source,
        subject,
        stored_patch(patch),
        at,
        change_id,
    )


@asynccontextmanager
async def _refusals() -> AsyncIterator[None]:
    """A row the store refuses (a change id or panel it holds already, a row twice in the
    file) fails the import, rolled back, with why."""
    try:
        yield
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise TransferError(
            f"the store refused a row ({exc.message}): a change id or panel it holds already, "
            "or a row twice in the file; nothing was imported"
        ) from exc


class PostgresTransfer:
    """The LogTransfer port of a PostgresUpdateLog (which it opens and closes)."""

    kind = "postgres"

    def __init__(self, log: PostgresUpdateLog) -> None:
        self.log = log

    @classmethod
    async def open(cls, dsn: str) -> PostgresTransfer:
        return cls(await PostgresUpdateLog.open(dsn, max_size=2))

    async def close(self) -> None:
        await self.log.close()

    @asynccontextmanager
    async def read_workspace(self, workspace_id: str) -> AsyncIterator[_Reader]:
        transaction = self.log._transaction(isolation="repeatable_read", readonly=True)
        async with transaction as conn:
            rows = await conn.fetch(_PANEL_ROWS, workspace_id)
            panels = [PanelRecord(PanelKey(workspace_id, row[0]), *tuple(row)[1:]) for row in rows]
            yield _Reader(conn, panels)

    @asynccontextmanager
    async def write_workspace(self, workspace_id: str, *, replace: bool) -> AsyncIterator[_Writer]:
        async with self.log._transaction() as conn:
            found = [
                panel_id
                for (panel_id,) in await conn.fetch(
                    "SELECT panel_id FROM panel_states WHERE workspace_id = $1"
                    " ORDER BY panel_id FOR UPDATE",
                    workspace_id,
                )
            ]
            if found and not replace:
                raise WorkspaceExists(
                    f"workspace {workspace_id} has {len(found)} panels in this store (deleted "
                    "ones count: their history is kept); nothing was imported. Import with "
                    "--replace to replace them, or with --workspace under another id"
                )
            for table in ("state_checkpoints", "state_history", "panel_states"):
                await conn.execute(f"DELETE FROM {table} WHERE workspace_id = $1", workspace_id)
            yield _Writer(conn, found)


class _Reader:
    def __init__(self, conn: asyncpg.Connection, panels: list[PanelRecord]) -> None:
        self._conn, self.panels = conn, panels

    async def checkpoints(self, panel: PanelRecord) -> AsyncGenerator[StoredCheckpoint, None]:
        if panel.deleted_at is not None:
            return
        key, after = panel.key, panel.compacted_through - 1  # from the one at the fold point
        while True:
            found = await self._conn.fetchrow(
                _CHECKPOINT, key.workspace_id, key.panel_id, panel.epoch, after, panel.version
            )
            if found is None:
                return
            yield StoredCheckpoint(*found)
            after = found[0]

    async def entries(self, key: PanelKey, page: int) -> AsyncGenerator[list[TransferEntry], None]:
        after = 0
        while True:
            rows = await self._conn.fetch(_ROWS, key.workspace_id, key.panel_id, after, page)
            if not rows:
                return
            yield [_row(row) for row in rows]
            after = rows[-1][0]


class _Writer:
    def __init__(self, conn: asyncpg.Connection, replaced: list[str]) -> None:
        self._conn, self.replaced = conn, replaced

    async def panel(self, record: PanelRecord) -> None:
        key = record.key
        async with _refusals():
            await self._conn.execute(
                _INSERT_PANEL,
                key.workspace_id,
                key.panel_id,
                record.epoch,
                record.version,
                record.created_by,
                record.created_at,
                record.updated_at,
                record.deleted_at,
                record.compacted_through or None,
                record.history_through or None,
            )

    async def checkpoint(self, key: PanelKey, checkpoint: StoredCheckpoint) -> None:
        async with _refusals():
            await self._conn.execute(
                _INSERT_CHECKPOINT,
                key.workspace_id,
                key.panel_id,
                checkpoint.version,
                checkpoint.epoch,
                checkpoint.state,
                checkpoint.created_at,
            )

    async def entries(self, key: PanelKey, entries: Sequence[TransferEntry]) -> None:
        records: list[tuple[Any, ...]] = [
            (
                key.workspace_id,
                key.panel_id,
                entry.version,
                entry.epoch,
                entry.change_id,
                entry.update,
                _patch_text(entry.patch),
                str(entry.change_type),
                str(entry.triggered_by),
                entry.trigger_source,
                entry.subject,
                entry.occurred_at,
            )
            for entry in entries
        ]
        async with _refusals():
            await self._conn.copy_records_to_table(
                "state_history", records=records, columns=_HISTORY_COLUMNS
            )

    async def view(self, view: PanelView) -> None:
        await self._conn.execute(_SAVE_VIEW, *_view_row(view))

    async def load(self, key: PanelKey) -> LoadedPanel | None:
        """PostgresUpdateLog.load of the latest version, on the import's connection."""
        head = await self._conn.fetchrow(_LOAD_HEAD, key.workspace_id, key.panel_id, _NO_LIMIT)
        if head is None:
            return None
        epoch, version, created_by, created_at, updated_at, at, state, _ = head
        info = PanelInfo(key, epoch, version, created_by, created_at, updated_at)
        checkpoint = None if at is None else Checkpoint(version=at, state=state)
        tail = await self._conn.fetch(
            _TAIL, key.workspace_id, key.panel_id, 0 if at is None else at, version, epoch
        )
        return LoadedPanel(info, checkpoint, [_entry(row) for row in tail])
