"""UpdateLog on a single SQLite file: the log for one-node deployments and for development.

Every sqlite3 call runs on one worker thread owned by the log, so the event loop never
blocks on disk and writes are serialized without locks of our own.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson

from adapters.sqlite_maintenance import SqliteMaintenance
from adapters.sqlite_thread import SerialThread
from crdt_state.errors import Unavailable
from crdt_state.log_rules import (
    BatchPanel,
    StoredView,
    number_batch,
    panel_not_found,
    stale_epoch,
    stored_patch,
    stored_view,
)
from crdt_state.model import (
    Change,
    ChangeType,
    Checkpoint,
    LoadedPanel,
    LogEntry,
    PanelInfo,
    PanelKey,
    PanelListing,
    PanelView,
    SnapshotRecord,
    TriggeredBy,
    utcnow,
)
from crdt_state.retention import version_compacted
from crdt_state.revocations import Revocation, RevocationKind
from migrations import migration_files

T = TypeVar("T")

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_NO_LIMIT = 2**63 - 1  # SQLite's largest integer: "until the newest version"

# Primary result codes worth retrying: busy/locked by another process, disk trouble.
_RETRYABLE = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_CANTOPEN,
}

# Change ids looked up per query: well under SQLite's limit on bound parameters.
_IDS_PER_QUERY = 500

_INSERT_ENTRY = """
    INSERT INTO state_history (
        workspace_id, panel_id, version, epoch, "update", patch, change_type,
        triggered_by, trigger_source, subject, size_bytes, occurred_at, change_id
    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_ENTRY_COLUMNS = """
    version, epoch, "update", change_type, triggered_by, trigger_source, subject, patch,
    occurred_at
"""
_PANEL_COLUMNS = "epoch, version, created_by, created_at, updated_at, deleted_at, compacted_through"


def _micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # a naive time from our own code means UTC
    return (moment - _UNIX_EPOCH) // _MICROSECOND


def _moment(micros: int) -> datetime:
    return _UNIX_EPOCH + timedelta(microseconds=micros)


# Plain dict lookups: Enum(value) costs a microsecond, which adds up over thousands of rows.
_CHANGE_TYPES = {kind.value: kind for kind in ChangeType}
_TRIGGERS = {trigger.value: trigger for trigger in TriggeredBy}


def _entry(row: tuple[Any, ...]) -> LogEntry:
    version, epoch, update, change_type, triggered_by, source, subject, patch, at = row
    return LogEntry(
        version,
        epoch,
        update,
        _CHANGE_TYPES[change_type],
        _TRIGGERS[triggered_by],
        source,
        subject,
        stored_patch(patch),
        _moment(at),
    )


def _history_row(change: Change, version: int) -> tuple[Any, ...]:
    stored = change.patch_for(version)
    patch = None if stored is None else orjson.dumps(stored).decode()
    return (
        change.key.workspace_id,
        change.key.panel_id,
        version,
        change.epoch,
        change.update,
        patch,
        str(change.change_type),
        str(change.triggered_by),
        change.trigger_source,
        change.subject,
        len(change.update),
        _micros(change.occurred_at),
        change.change_id,
    )


@contextmanager
def _transaction(db: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    # IMMEDIATE takes the write lock before we read versions, so another process
    # writing the same file cannot hand out the same version in between.
    db.execute(begin)
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite may have rolled back already (disk full, I/O error)
            db.execute("ROLLBACK")
        raise


def _statements(script: str) -> Iterator[str]:
    """Split a migration into statements (sqlite3 executes one at a time)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip():
        yield pending  # trailing comments run as a no-op; a half statement fails loudly


def _migrate(db: sqlite3.Connection) -> None:
    with _transaction(db):
        exists = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone()
        applied = (
            {number for (number,) in db.execute("SELECT version FROM schema_migrations")}
            if exists
            else set()
        )
        known = migration_files("sqlite")
        unknown = applied - {number for number, _, _ in known}
        if unknown:
            raise RuntimeError(
                f"The database has migrations this server does not know ({sorted(unknown)}); "
                "it was written by a newer version."
            )
        for number, name, sql in known:
            if number in applied:
                continue
            for statement in _statements(sql):
                db.execute(statement)
            db.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (number, name, _micros(utcnow())),
            )


class SqliteUpdateLog(SqliteMaintenance):
    """The UpdateLog port on one SQLite file (WAL, synchronous=FULL); its LogMaintenance
    (retention, compaction) is in sqlite_maintenance.py."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._worker = SerialThread("sqlite-log")
        self._db: sqlite3.Connection | None = None  # created and used on the worker only
        self._closed = False

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> SqliteUpdateLog:
        """Open (creating if needed) the database at `path` and bring its schema up to date."""
        log = cls(path)
        try:
            await log._submit(log._connect)
        except BaseException:
            log._worker.stop()
            raise
        return log

    async def create(self, change: Change) -> PanelInfo | None:
        return await self._run(lambda db: self._create(db, change))

    async def append(self, changes: Sequence[Change], views: Sequence[PanelView] = ()) -> list[int]:
        batch = list(changes)
        # Serialized on the caller's thread: the worker only writes.
        stored = [(view.key, view.epoch, view.version, stored_view(view.view)) for view in views]
        if not batch and not stored:
            return []
        return await self._run(lambda db: self._append(db, batch, stored))

    async def load(self, key: PanelKey, until: int | None = None) -> LoadedPanel | None:
        return await self._run(lambda db: self._load(db, key, until))

    async def read(
        self, key: PanelKey, after: int = 0, until: int | None = None, limit: int = 1000
    ) -> list[LogEntry]:
        if limit <= 0:
            return []
        return await self._run(lambda db: self._read(db, key, after, until, limit))

    async def history(
        self,
        key: PanelKey,
        *,
        limit: int,
        offset: int = 0,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> tuple[list[LogEntry], int]:
        window = (
            _micros(since) if since is not None else -_NO_LIMIT,
            _micros(until) if until is not None else _NO_LIMIT,
        )
        return await self._run(
            lambda db: self._history(db, key, max(limit, 0), max(offset, 0), window)
        )

    async def save_checkpoint(self, key: PanelKey, epoch: str, checkpoint: Checkpoint) -> None:
        await self._run(lambda db: self._save_checkpoint(db, key, epoch, checkpoint))

    async def save_view(self, view: PanelView) -> None:
        stored = stored_view(view.view)  # on the caller's thread: the worker only writes
        entry = (view.key, view.epoch, view.version, stored)
        await self._run(lambda db: self._append(db, [], [entry]))

    async def list_panels(self, workspace_id: str) -> list[PanelListing]:
        return await self._run(lambda db: _list_panels(db, workspace_id))

    async def record_snapshot(self, record: SnapshotRecord) -> None:
        row = (
            record.snapshot_id,
            record.workspace_id,
            record.snapshot_type,
            record.description,
            record.panel_count,
            record.total_size_bytes,
            record.git_commit_hash,
            orjson.dumps(record.panel_versions).decode(),
            record.created_by,
            _micros(record.created_at),
        )
        await self._run(lambda db: _insert_snapshot(db, row))

    async def list_snapshots(self, workspace_id: str, limit: int = 50) -> list[SnapshotRecord]:
        return await self._run(lambda db: _list_snapshots(db, workspace_id, max(limit, 0)))

    async def changed_workspaces(self) -> list[str]:
        return await self._run(_changed_workspaces)

    async def ping(self) -> None:
        await self._run(lambda db: db.execute("SELECT 1").fetchone())

    async def revoke(self, revocation: Revocation) -> Revocation:
        row = (
            str(revocation.kind),
            revocation.value,
            _micros(revocation.revoked_at),
            None if revocation.expires_at is None else _micros(revocation.expires_at),
            revocation.revoked_by,
            revocation.reason,
        )
        stored_id = await self._run(lambda db: _insert_revocation(db, row))
        return replace(revocation, id=stored_id)

    async def revocations_since(self, cursor: int, limit: int = 1000) -> list[Revocation]:
        now = _micros(utcnow())
        return await self._run(lambda db: _revocations_since(db, cursor, now, max(limit, 0)))

    async def purge_revocations(self, now: datetime) -> int:
        before = _micros(now)
        return await self._run(lambda db: _purge_revocations(db, before))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._submit(self._disconnect)
        finally:
            # The close above ran after everything queued before it; nothing is left to wait for.
            self._worker.stop()

    async def _submit(self, work: Callable[[], T]) -> T:
        return await self._worker.submit(work)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(lambda: self._with_db(work))

    # Everything below runs on the worker thread.

    def _with_db(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            raise RuntimeError("The SQLite update log is not open.")
        try:
            return work(self._db)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF in _RETRYABLE:
                raise Unavailable(f"The state database is unavailable: {exc}.") from exc
            raise

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, sqlite3 adds nothing.
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")  # a commit we acknowledge is on disk
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA busy_timeout = 5000")  # another process may hold the lock
            _migrate(db)
        except BaseException:
            db.close()
            raise
        self._db = db

    def _disconnect(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _create(self, db: sqlite3.Connection, change: Change) -> PanelInfo | None:
        key = change.key
        at = _micros(change.occurred_at)
        with _transaction(db):
            logged = _logged_versions(db, [change.change_id])
            if logged:  # a retry of a create that was committed
                return _created_before(db, change, logged[change.change_id])
            row = db.execute(
                "SELECT version, deleted_at FROM panels WHERE workspace_id = ? AND panel_id = ?",
                (key.workspace_id, key.panel_id),
            ).fetchone()
            if row is not None and row[1] is None:
                return None
            version = (0 if row is None else row[0]) + 1
            # A re-created panel is a new doc: the view of the old epoch no longer applies.
            db.execute(
                """
                INSERT INTO panels (workspace_id, panel_id, epoch, version, created_by,
                                    created_at, updated_at, deleted_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, NULL)
                ON CONFLICT (workspace_id, panel_id) DO UPDATE SET
                    epoch = excluded.epoch, version = excluded.version,
                    created_by = excluded.created_by, created_at = excluded.created_at,
                    updated_at = excluded.updated_at, deleted_at = NULL,
                    state = NULL, state_version = NULL, checksum = NULL,
                    state_size_bytes = NULL, state_variable_count = NULL
                """,
                (key.workspace_id, key.panel_id, change.epoch, version, change.subject, at, at),
            )
            db.execute(_INSERT_ENTRY, _history_row(change, version))
        return PanelInfo(key, change.epoch, version, change.subject, _moment(at), _moment(at))

    def _append(
        self,
        db: sqlite3.Connection,
        changes: list[Change],
        views: list[tuple[PanelKey, str, int, StoredView]],
    ) -> list[int]:
        with _transaction(db):
            versions = _append_changes(db, changes) if changes else []
            for key, epoch, version, view in views:
                _write_view(db, key, epoch, version, view)
        return versions

    def _load(self, db: sqlite3.Connection, key: PanelKey, until: int | None) -> LoadedPanel | None:
        panel = (key.workspace_id, key.panel_id)
        with _transaction(db, "BEGIN"):  # one snapshot for the three reads
            row = db.execute(
                f"SELECT {_PANEL_COLUMNS} FROM panels WHERE workspace_id = ? AND panel_id = ?",
                panel,
            ).fetchone()
            if row is None or row[5] is not None:
                return None
            epoch, version, created_by, created_at, updated_at, _, compacted = row
            if until is not None and compacted is not None and until < compacted:
                raise version_compacted(key, until, compacted)
            info = PanelInfo(
                key, epoch, version, created_by, _moment(created_at), _moment(updated_at)
            )
            last = version if until is None else min(until, version)
            found = db.execute(
                "SELECT version, state FROM state_checkpoints"
                " WHERE workspace_id = ? AND panel_id = ? AND epoch = ? AND version <= ?"
                " ORDER BY version DESC LIMIT 1",
                (*panel, epoch, last),
            ).fetchone()
            checkpoint = None if found is None else Checkpoint(version=found[0], state=found[1])
            tail = db.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM state_history"
                " WHERE workspace_id = ? AND panel_id = ? AND version > ? AND version <= ?"
                " AND epoch = ? ORDER BY version",
                (*panel, 0 if checkpoint is None else checkpoint.version, last, epoch),
            ).fetchall()
        return LoadedPanel(info, checkpoint, [_entry(entry) for entry in tail])

    def _read(
        self, db: sqlite3.Connection, key: PanelKey, after: int, until: int | None, limit: int
    ) -> list[LogEntry]:
        rows = db.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM state_history"
            " WHERE workspace_id = ? AND panel_id = ? AND version > ? AND version <= ?"
            " ORDER BY version LIMIT ?",
            (key.workspace_id, key.panel_id, after, _NO_LIMIT if until is None else until, limit),
        ).fetchall()
        return [_entry(row) for row in rows]

    def _history(
        self,
        db: sqlite3.Connection,
        key: PanelKey,
        limit: int,
        offset: int,
        window: tuple[int, int],
    ) -> tuple[list[LogEntry], int]:
        matching = (
            " FROM state_history WHERE workspace_id = ? AND panel_id = ?"
            " AND occurred_at >= ? AND occurred_at <= ? AND version > ?"
        )
        with _transaction(db, "BEGIN"):  # the page and the total from one snapshot
            row = db.execute(
                "SELECT version, coalesce(history_through, 0) FROM panels"
                " WHERE workspace_id = ? AND panel_id = ?",
                (key.workspace_id, key.panel_id),
            ).fetchone()
            version, dropped = (0, 0) if row is None else row
            where = (key.workspace_id, key.panel_id, *window, dropped)
            if window == (-_NO_LIMIT, _NO_LIMIT):
                # Versions are gapless from 1 and only the oldest are ever removed (up to
                # history_through): the count is known, and the page is a range of the
                # primary key (no count, no OFFSET scan).
                rows = db.execute(
                    f"SELECT {_ENTRY_COLUMNS} FROM state_history"
                    " WHERE workspace_id = ? AND panel_id = ? AND version <= ? AND version > ?"
                    " ORDER BY version DESC LIMIT ?",
                    (key.workspace_id, key.panel_id, version - offset, dropped, limit),
                ).fetchall()
                return [_entry(row) for row in rows], version - dropped
            rows = db.execute(
                f"SELECT {_ENTRY_COLUMNS}{matching} ORDER BY version DESC LIMIT ? OFFSET ?",
                (*where, limit, offset),
            ).fetchall()
            (total,) = db.execute(f"SELECT count(*){matching}", where).fetchone()
        return [_entry(row) for row in rows], total

    def _save_checkpoint(
        self, db: sqlite3.Connection, key: PanelKey, epoch: str, checkpoint: Checkpoint
    ) -> None:
        panel = (key.workspace_id, key.panel_id)
        with _transaction(db):
            row = db.execute(
                "SELECT epoch, deleted_at FROM panels WHERE workspace_id = ? AND panel_id = ?",
                panel,
            ).fetchone()
            if row is None:
                raise panel_not_found(key)
            if row[0] != epoch or row[1] is not None:
                raise stale_epoch(key)
            # A checkpoint must sit on a version of this epoch, or load() would mix epochs.
            logged = db.execute(
                "SELECT epoch FROM state_history"
                " WHERE workspace_id = ? AND panel_id = ? AND version = ?",
                (*panel, checkpoint.version),
            ).fetchone()
            if logged is None or logged[0] != epoch:
                raise ValueError(
                    f"Version {checkpoint.version} of panel {key} is not in epoch {epoch}."
                )
            db.execute(
                "INSERT INTO state_checkpoints (workspace_id, panel_id, version, epoch, state,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (*panel, checkpoint.version, epoch, checkpoint.state, _micros(utcnow())),
            )


# Snapshots (the rows beside the Git snapshots; see crdt_state/snapshots.py)

_SNAPSHOT_COLUMNS = (
    "id, workspace_id, snapshot_type, description, panel_count, total_size_bytes,"
    " git_commit_hash, panel_versions, created_by, created_at"
)


def _snapshot_record(row: Sequence[Any]) -> SnapshotRecord:
    snapshot_id, workspace_id, kind, description, count, size, sha, versions, by, at = row
    return SnapshotRecord(
        workspace_id=workspace_id,
        snapshot_id=snapshot_id,
        snapshot_type=kind,
        description=description,
        panel_count=count,
        total_size_bytes=size,
        git_commit_hash=sha,
        panel_versions=orjson.loads(versions),
        created_by=by,
        created_at=_moment(at),
    )


def _list_panels(db: sqlite3.Connection, workspace_id: str) -> list[PanelListing]:
    rows = db.execute(
        "SELECT panel_id, version, epoch, CASE WHEN state_version = version THEN state END"
        " FROM panels WHERE workspace_id = ? AND deleted_at IS NULL ORDER BY panel_id",
        (workspace_id,),
    ).fetchall()
    return [
        PanelListing(panel_id, version, epoch, None if view is None else orjson.loads(view))
        for panel_id, version, epoch, view in rows
    ]


def _insert_snapshot(db: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    with _transaction(db):
        db.execute(
            f"INSERT INTO state_snapshots ({_SNAPSHOT_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )


def _list_snapshots(db: sqlite3.Connection, workspace_id: str, limit: int) -> list[SnapshotRecord]:
    rows = db.execute(
        f"SELECT {_SNAPSHOT_COLUMNS} FROM state_snapshots WHERE workspace_id = ?"
        " ORDER BY created_at DESC, rowid DESC LIMIT ?",
        (workspace_id, limit),
    ).fetchall()
    return [_snapshot_record(row) for row in rows]


def _changed_workspaces(db: sqlite3.Connection) -> list[str]:
    # One pass over the panels, one index probe per workspace for its newest Git snapshot.
    rows = db.execute(
        "SELECT p.workspace_id FROM panels AS p GROUP BY p.workspace_id"
        " HAVING max(p.updated_at) > coalesce(("
        "   SELECT max(s.created_at) FROM state_snapshots AS s"
        "   WHERE s.workspace_id = p.workspace_id AND s.git_commit_hash IS NOT NULL), -1)"
        " ORDER BY p.workspace_id"
    ).fetchall()
    return [workspace_id for (workspace_id,) in rows]


# Revocations (crdt_state/revocations.py). Writes are serialized (BEGIN IMMEDIATE): ids are
# given in commit order, so a replica polling `id > cursor` never skips one.


def _insert_revocation(db: sqlite3.Connection, row: tuple[Any, ...]) -> int:
    with _transaction(db):
        cursor = db.execute(
            "INSERT INTO revocations (kind, value, revoked_at, expires_at, revoked_by, reason)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            row,
        )
        return int(cursor.lastrowid or 0)


def _revocations_since(
    db: sqlite3.Connection, cursor: int, now: int, limit: int
) -> list[Revocation]:
    rows = db.execute(
        "SELECT id, kind, value, revoked_at, expires_at, revoked_by, reason FROM revocations"
        " WHERE id > ? AND (expires_at IS NULL OR expires_at > ?) ORDER BY id LIMIT ?",
        (cursor, now, limit),
    ).fetchall()
    return [
        Revocation(
            RevocationKind(kind),
            value,
            _moment(revoked_at),
            None if expires_at is None else _moment(expires_at),
            revoked_by,
            reason,
            id=row_id,
        )
        for row_id, kind, value, revoked_at, expires_at, revoked_by, reason in rows
    ]


def _purge_revocations(db: sqlite3.Connection, before: int) -> int:
    with _transaction(db):
        return db.execute("DELETE FROM revocations WHERE expires_at <= ?", (before,)).rowcount


def _logged_versions(db: sqlite3.Connection, change_ids: list[str]) -> dict[str, int]:
    """The versions already given to any of these change ids."""
    found: dict[str, int] = {}
    unique = list(dict.fromkeys(change_ids))
    for start in range(0, len(unique), _IDS_PER_QUERY):
        chunk = unique[start : start + _IDS_PER_QUERY]
        found.update(
            db.execute(
                "SELECT change_id, version FROM state_history"
                f" WHERE change_id IN ({', '.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
        )
    return found


def _created_before(db: sqlite3.Connection, change: Change, version: int) -> PanelInfo | None:
    """What create() answered the first time, or None if the panel was re-created since."""
    row = db.execute(
        "SELECT epoch, created_by, created_at, updated_at FROM panels"
        " WHERE workspace_id = ? AND panel_id = ?",
        (change.key.workspace_id, change.key.panel_id),
    ).fetchone()
    if row is None or row[0] != change.epoch:
        return None
    epoch, created_by, created_at, updated_at = row
    return PanelInfo(
        change.key, epoch, version, created_by, _moment(created_at), _moment(updated_at)
    )


def _write_view(
    db: sqlite3.Connection, key: PanelKey, epoch: str, version: int, view: StoredView
) -> None:
    # One guarded UPDATE: a stale epoch, a deleted panel, an equal or newer stored view or
    # a version the log does not have yet all leave the row as it is.
    db.execute(
        "UPDATE panels SET state = ?, state_version = ?, checksum = ?,"
        " state_size_bytes = ?, state_variable_count = ?"
        " WHERE workspace_id = ? AND panel_id = ? AND epoch = ? AND deleted_at IS NULL"
        " AND (state_version IS NULL OR state_version < ?) AND ? <= version",
        (
            view.canonical.decode(),
            version,
            view.checksum,
            len(view.canonical),
            view.leaves,
            key.workspace_id,
            key.panel_id,
            epoch,
            version,
            version,
        ),
    )


def _append_changes(db: sqlite3.Connection, changes: list[Change]) -> list[int]:
    panels: dict[PanelKey, BatchPanel] = {}
    for key in dict.fromkeys(change.key for change in changes):
        row = db.execute(
            "SELECT epoch, version, deleted_at FROM panels WHERE workspace_id = ? AND panel_id = ?",
            (key.workspace_id, key.panel_id),
        ).fetchone()
        if row is not None:
            panels[key] = BatchPanel(row[0], row[1], deleted=row[2] is not None)
    logged = _logged_versions(db, [change.change_id for change in changes])
    numbered = number_batch(changes, panels, logged)
    db.executemany(
        _INSERT_ENTRY, [_history_row(change, version) for change, version in numbered.new]
    )
    db.executemany(
        "UPDATE panels SET version = ?, updated_at = ?, deleted_at = ?"
        " WHERE workspace_id = ? AND panel_id = ?",
        [
            (
                panel.version,
                _micros(panel.updated_at or utcnow()),
                None if panel.deleted_at is None else _micros(panel.deleted_at),
                key.workspace_id,
                key.panel_id,
            )
            for key, panel in panels.items()
            if panel.changed
        ],
    )
    return numbered.versions
