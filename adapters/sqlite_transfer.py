"""LogTransfer on the SQLite log (crdt_state/transfer.py: `crdt-state export` / `import`).

It drives a SqliteUpdateLog's connection on the log's worker thread: a read transaction for an
export (WAL: one snapshot, writers go on), one BEGIN IMMEDIATE transaction for an import (it
holds the file's write lock until it commits: a server writing the same file waits meanwhile).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import orjson

from adapters.sqlite import (
    _CHANGE_TYPES,
    _ENTRY_COLUMNS,
    _INSERT_ENTRY,
    _NO_LIMIT,
    _TRIGGERS,
    SqliteUpdateLog,
    _micros,
    _moment,
    _write_view,
)
from crdt_state.log_rules import stored_patch, stored_view
from crdt_state.model import Checkpoint, LoadedPanel, LogEntry, PanelKey, PanelView
from crdt_state.transfer_format import (
    PanelRecord,
    StoredCheckpoint,
    TransferEntry,
    TransferError,
    WorkspaceExists,
)

T = TypeVar("T")
Run = Callable[[Callable[[sqlite3.Connection], T]], Any]

_PANEL = "workspace_id = ? AND panel_id = ?"
_PANEL_ROWS = """
    SELECT panel_id, epoch, version, created_by, created_at, updated_at, deleted_at,
           coalesce(compacted_through, 0), coalesce(history_through, 0)
    FROM panels WHERE workspace_id = ? ORDER BY panel_id
"""
_ROWS = f"SELECT {_ENTRY_COLUMNS}, change_id FROM state_history WHERE {_PANEL}"


def _fetch(sql: str, *params: Any) -> Callable[[sqlite3.Connection], list[Any]]:
    return lambda db: db.execute(sql, params).fetchall()


def _row(row: Sequence[Any]) -> TransferEntry:
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
        _moment(at),
        change_id,
    )


def _panel_record(workspace_id: str, row: Sequence[Any]) -> PanelRecord:
    panel_id, epoch, version, created_by, created_at, updated_at, deleted_at, *marks = row
    return PanelRecord(
        PanelKey(workspace_id, panel_id),
        epoch,
        version,
        created_by,
        _moment(created_at),
        _moment(updated_at),
        None if deleted_at is None else _moment(deleted_at),
        *marks,
    )


class SqliteTransfer:
    """The LogTransfer port of a SqliteUpdateLog (which it opens and closes)."""

    kind = "sqlite"

    def __init__(self, log: SqliteUpdateLog) -> None:
        self.log = log

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> SqliteTransfer:
        return cls(await SqliteUpdateLog.open(path))

    async def close(self) -> None:
        await self.log.close()

    @asynccontextmanager
    async def read_workspace(self, workspace_id: str) -> AsyncIterator[_Reader]:
        run = self.log._run
        await run(lambda db: db.execute("BEGIN"))  # the snapshot starts with the first read
        try:
            rows = await run(_fetch(_PANEL_ROWS, workspace_id))
            panels = [_panel_record(workspace_id, row) for row in rows]
            yield _Reader(run, panels)
        finally:
            await run(_end)

    @asynccontextmanager
    async def write_workspace(self, workspace_id: str, *, replace: bool) -> AsyncIterator[_Writer]:
        run = self.log._run
        await run(lambda db: db.execute("BEGIN IMMEDIATE"))
        try:
            replaced = await run(lambda db: _clear(db, workspace_id, replace))
            yield _Writer(run, replaced)
            await run(lambda db: db.execute("COMMIT"))
        except BaseException:
            await run(_end)
            raise


def _end(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK")


class _Reader:
    def __init__(self, run: Run[Any], panels: list[PanelRecord]) -> None:
        self._run, self.panels = run, panels

    async def checkpoints(self, panel: PanelRecord) -> AsyncGenerator[StoredCheckpoint, None]:
        if panel.deleted_at is not None:
            return
        after = panel.compacted_through - 1  # the one at the fold point is the first usable
        while True:
            found = await self._run(
                _fetch(
                    "SELECT version, epoch, state, created_at FROM state_checkpoints"
                    f" WHERE {_PANEL} AND epoch = ? AND version > ? AND version <= ?"
                    " ORDER BY version LIMIT 1",
                    panel.key.workspace_id,
                    panel.key.panel_id,
                    panel.epoch,
                    after,
                    panel.version,
                )
            )
            if not found:
                return
            version, epoch, state, created_at = found[0]
            yield StoredCheckpoint(version, epoch, state, _moment(created_at))
            after = version

    async def entries(self, key: PanelKey, page: int) -> AsyncGenerator[list[TransferEntry], None]:
        after = 0
        while True:
            rows = await self._run(
                _fetch(
                    f"{_ROWS} AND version > ? ORDER BY version LIMIT ?",
                    key.workspace_id,
                    key.panel_id,
                    after,
                    page,
                )
            )
            if not rows:
                return
            yield [_row(row) for row in rows]
            after = rows[-1][0]


def _clear(db: sqlite3.Connection, workspace_id: str, replace: bool) -> list[str]:
    """The workspace's panel ids, after removing its rows (`replace`), else refusing them."""
    found = [
        panel_id
        for (panel_id,) in db.execute(
            "SELECT panel_id FROM panels WHERE workspace_id = ? ORDER BY panel_id",
            (workspace_id,),
        )
    ]
    if found and not replace:
        raise WorkspaceExists(
            f"workspace {workspace_id} has {len(found)} panels in this store (deleted ones "
            "count: their history is kept); nothing was imported. Import with --replace to "
            "replace them, or with --workspace under another id"
        )
    for table in ("state_checkpoints", "state_history", "panels"):
        db.execute(f"DELETE FROM {table} WHERE workspace_id = ?", (workspace_id,))
    return found


class _Writer:
    def __init__(self, run: Run[Any], replaced: list[str]) -> None:
        self._run, self.replaced = run, replaced

    async def panel(self, record: PanelRecord) -> None:
        key = record.key
        row = (
            key.workspace_id,
            key.panel_id,
            record.epoch,
            record.version,
            record.created_by,
            _micros(record.created_at),
            _micros(record.updated_at),
            None if record.deleted_at is None else _micros(record.deleted_at),
            record.compacted_through or None,
            record.history_through or None,
        )
        await self._write(
            "INSERT INTO panels (workspace_id, panel_id, epoch, version, created_by, created_at,"
            " updated_at, deleted_at, compacted_through, history_through)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [row],
        )

    async def checkpoint(self, key: PanelKey, checkpoint: StoredCheckpoint) -> None:
        row = (
            key.workspace_id,
            key.panel_id,
            checkpoint.version,
            checkpoint.epoch,
            checkpoint.state,
            _micros(checkpoint.created_at),
        )
        await self._write(
            "INSERT INTO state_checkpoints (workspace_id, panel_id, version, epoch, state,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [row],
        )

    async def entries(self, key: PanelKey, entries: Sequence[TransferEntry]) -> None:
        rows = [
            (
                key.workspace_id,
                key.panel_id,
                entry.version,
                entry.epoch,
                entry.update,
                None if entry.patch is None else orjson.dumps(entry.patch).decode(),
                str(entry.change_type),
                str(entry.triggered_by),
                entry.trigger_source,
                entry.subject,
                len(entry.update),
                _micros(entry.occurred_at),
                entry.change_id,
            )
            for entry in entries
        ]
        await self._write(_INSERT_ENTRY, rows)

    async def view(self, view: PanelView) -> None:
        stored = stored_view(view.view)
        await self._run(lambda db: _write_view(db, view.key, view.epoch, view.version, stored))

    async def load(self, key: PanelKey) -> LoadedPanel | None:
        return await self._run(lambda db: _load(db, key))

    async def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        def write(db: sqlite3.Connection) -> None:
            try:
                db.executemany(sql, rows)
            except sqlite3.IntegrityError as exc:
                raise TransferError(
                    f"the store refused a row ({exc}): a change id or panel it holds already, "
                    "or a row twice in the file; nothing was imported"
                ) from exc

        await self._run(write)


def _load(db: sqlite3.Connection, key: PanelKey) -> LoadedPanel | None:
    """SqliteUpdateLog.load of the latest version, inside the open transaction."""
    panel = (key.workspace_id, key.panel_id)
    row = db.execute(
        f"SELECT epoch, version, created_by, created_at, updated_at, deleted_at FROM panels"
        f" WHERE {_PANEL}",
        panel,
    ).fetchone()
    if row is None or row[5] is not None:
        return None
    epoch, version, created_by, created_at, updated_at, _ = row
    record = PanelRecord(
        key, epoch, version, created_by, _moment(created_at), _moment(updated_at), None, 0, 0
    )
    found = db.execute(
        f"SELECT version, state FROM state_checkpoints WHERE {_PANEL} AND epoch = ?"
        " AND version <= ? ORDER BY version DESC LIMIT 1",
        (*panel, epoch, version),
    ).fetchone()
    checkpoint = None if found is None else Checkpoint(found[0], found[1])
    tail = db.execute(
        f"{_ROWS} AND version > ? AND version <= ? AND epoch = ? ORDER BY version LIMIT ?",
        (*panel, 0 if checkpoint is None else checkpoint.version, version, epoch, _NO_LIMIT),
    ).fetchall()
    entries: list[LogEntry] = [_row(entry) for entry in tail]
    return LoadedPanel(record.info, checkpoint, entries)
