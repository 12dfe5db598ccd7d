"""UpdateLog on PostgreSQL: the durable log that every replica shares.

An append locks the rows of the batch's panels (in one order, so two batches that share
panels cannot deadlock), numbers its changes and writes all its rows in one statement:
versions stay gapless per panel however many processes write it. A dropped connection or a
server restart surfaces as Unavailable; the committer retries the same batch, and change ids
make that retry commit it exactly once, even when the first try was committed but its answer
was lost.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from adapters.postgres_maintenance import PostgresMaintenance
from crdt_state.errors import Unavailable
from crdt_state.log_rules import (
    BatchPanel,
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
)
from crdt_state.retention import version_compacted
from crdt_state.revocations import Revocation, RevocationKind
from migrations import migration_files

_DIALECT = "postgres"
# The pg_advisory_xact_lock key that serializes migrations: any constant no other lock uses.
_MIGRATION_LOCK = 0x6372_6474  # "crdt"
_NO_LIMIT = 2**63 - 1  # PostgreSQL's largest bigint: "until the newest version"
# Measured with 1,000-row batches, COPY writes ~20% faster than INSERT ... unnest; for a few
# rows its extra round trip (column introspection) costs more than it saves.
_COPY_FROM_ROWS = 64

# Errors after which a retry may succeed: the server is down, restarting, out of connections
# or resources, or rolled our transaction back (serialization failure, deadlock).
_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    TimeoutError,  # connect timeout, command_timeout
    asyncpg.exceptions.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.OperatorInterventionError,  # 57: shutting down, starting up, cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # 40
)

_HISTORY_COLUMNS = (
    "workspace_id",
    "panel_id",
    "version",
    "epoch",
    "change_id",
    "yjs_update",
    "patch",
    "change_type",
    "triggered_by",
    "trigger_source",
    "subject",
    "occurred_at",
)
_INSERT_HISTORY = f"""
    INSERT INTO state_history ({", ".join(_HISTORY_COLUMNS)})
    SELECT w, p, v, e, c, u, j::jsonb, t, b, s, sub, o
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bytea[],
                $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                $12::timestamptz[]) AS r (w, p, v, e, c, u, j, t, b, s, sub, o)
"""
# One probe of the change_id index per id. `change_id = ANY($1)` looks simpler, but for
# 1,000 ids the planner picks a sequential scan that tests every row against every id:
# measured 25-300 ms a batch and growing with the log, against 7-10 ms for this.
# (LIMIT 1 keeps the subquery from being flattened into a join the planner may hash.)
_LOGGED_VERSIONS = """
    SELECT i.change_id, h.version
    FROM unnest($1::text[]) AS i (change_id)
    CROSS JOIN LATERAL (
        SELECT version FROM state_history AS h WHERE h.change_id = i.change_id LIMIT 1
    ) AS h
"""
_ENTRY_COLUMNS = """
    version, epoch, yjs_update, change_type, triggered_by, trigger_source, subject,
    patch::text, occurred_at
"""
_LOCK_PANELS = """
    SELECT p.id, p.workspace_id, p.panel_id, p.epoch, p.version, p.deleted_at IS NOT NULL
    FROM panel_states AS p
    JOIN unnest($1::text[], $2::text[]) AS k (workspace_id, panel_id)
      ON p.workspace_id = k.workspace_id AND p.panel_id = k.panel_id
    ORDER BY p.id
    FOR UPDATE OF p
"""
_ADVANCE_PANELS = """
    UPDATE panel_states AS p
    SET version = u.version, updated_at = u.updated_at, deleted_at = u.deleted_at,
        last_accessed_at = now()
    FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::timestamptz[])
        AS u (id, version, updated_at, deleted_at)
    WHERE p.id = u.id
"""
# One statement creates a new panel or re-creates a deleted one (the conflicting row is
# locked, and versions continue); a live panel makes it return no row.
_UPSERT_PANEL = """
    INSERT INTO panel_states AS p (workspace_id, panel_id, epoch, version, created_by,
                                   created_at, updated_at, last_accessed_at)
    VALUES ($1, $2, $3, 1, $4, $5, $5, now())
    ON CONFLICT (workspace_id, panel_id) DO UPDATE SET
        epoch = excluded.epoch, version = p.version + 1, created_by = excluded.created_by,
        created_at = excluded.created_at, updated_at = excluded.updated_at,
        last_accessed_at = excluded.last_accessed_at, deleted_at = NULL,
        state = NULL, state_version = NULL, checksum = NULL, state_size_bytes = NULL,
        state_variable_count = NULL
    WHERE p.deleted_at IS NOT NULL
    RETURNING version, created_at
"""
_LOAD_HEAD = """
    SELECT p.epoch, p.version, p.created_by, p.created_at, p.updated_at, c.version, c.state,
           p.compacted_through
    FROM panel_states AS p
    LEFT JOIN LATERAL (
        SELECT version, state FROM state_checkpoints AS c
        WHERE c.workspace_id = p.workspace_id AND c.panel_id = p.panel_id
          AND c.epoch = p.epoch AND c.version <= LEAST(p.version, $3)
        ORDER BY c.version DESC
        LIMIT 1
    ) AS c ON true
    WHERE p.workspace_id = $1 AND p.panel_id = $2 AND p.deleted_at IS NULL
"""
# Guarded so that a stale epoch, a deleted panel, an equal or newer stored view, or a version
# the log does not have yet leave the row as it is. updated_at is left alone: it tracks the
# log, and the view is only a cache of it.
_SAVE_VIEW = """
    UPDATE panel_states
    SET state = $5::jsonb, state_version = $4, checksum = $6, state_size_bytes = $7,
        state_variable_count = $8
    WHERE workspace_id = $1 AND panel_id = $2 AND epoch = $3 AND deleted_at IS NULL
      AND (state_version IS NULL OR state_version < $4) AND $4 <= version
"""

# The same, inside a batch's transaction: a row another transaction holds is skipped (the view is
# a query cache of the log; the next save brings it), so that view rows never join the lock order
# of the batch's panels (no deadlock between replicas).
_SAVE_VIEW_NOWAIT = """
    UPDATE panel_states
    SET state = $5::jsonb, state_version = $4, checksum = $6, state_size_bytes = $7,
        state_variable_count = $8
    WHERE (workspace_id, panel_id) = (
            SELECT workspace_id, panel_id FROM panel_states
            WHERE workspace_id = $1 AND panel_id = $2 FOR UPDATE SKIP LOCKED)
      AND epoch = $3 AND deleted_at IS NULL
      AND (state_version IS NULL OR state_version < $4) AND $4 <= version
"""

_LIST_PANELS = """
    SELECT panel_id, version, epoch, CASE WHEN state_version = version THEN state::text END
    FROM panel_states
    WHERE workspace_id = $1 AND deleted_at IS NULL
    ORDER BY panel_id
"""
_SNAPSHOT_COLUMNS = """
    id, workspace_id, snapshot_type, description, panel_count, total_size_bytes,
    git_commit_hash, panel_versions::text, created_by, created_at
"""
_INSERT_SNAPSHOT = """
    INSERT INTO state_snapshots (id, workspace_id, snapshot_type, description, panel_count,
                                 total_size_bytes, git_commit_hash, panel_versions, created_by,
                                 created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10)
"""
# One pass over the panels, one index probe per workspace for its newest Git snapshot.
_CHANGED_WORKSPACES = """
    SELECT p.workspace_id FROM panel_states AS p
    GROUP BY p.workspace_id
    HAVING max(p.updated_at) > coalesce((
        SELECT max(s.created_at) FROM state_snapshots AS s
        WHERE s.workspace_id = p.workspace_id AND s.git_commit_hash IS NOT NULL
    ), '-infinity')
    ORDER BY p.workspace_id
"""


class SchemaOutdated(RuntimeError):
    """The database lacks migrations this server needs: an operator must run migrate."""

    def __init__(self, current: int, latest: int) -> None:
        super().__init__(
            f"the database schema is at version {current}, this server needs {latest}: "
            "run `crdt-state migrate`"
        )
        self.current = current
        self.latest = latest


def _unavailable(exc: BaseException) -> Unavailable:
    return Unavailable(f"The state database is unavailable: {exc!r}.")


def _outage(exc: BaseException, conn: asyncpg.Connection | None) -> bool:
    """Whether `exc` means the database or our connection to it failed, not the request."""
    if any(isinstance(link, _TRANSIENT) for link in _chain(exc)):
        return True
    # A connection lost mid-transaction fails the next call on it (the rollback, say) with a
    # client-side error that names no outage: ask the connection itself.
    lost_too = (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)
    return isinstance(exc, lost_too) and conn is not None and _lost(conn)


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and the errors it was raised from or while handling, nearest first."""
    links: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in links:
        links.append(link)
        link = link.__cause__ or link.__context__
    return links


def _lost(conn: asyncpg.Connection) -> bool:
    """Whether a pooled connection died (the pool takes a dead one back at once)."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:  # "released back to the pool": it was closed under us
        return True


def _aware(moment: datetime) -> datetime:
    # A naive time from our own code means UTC (asyncpg would take it as local time).
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _jsonb_text(encoded: bytes) -> str:
    """JSON text PostgreSQL's jsonb accepts: it cannot hold U+0000, which JSON allows.

    The rare string holding one keeps U+FFFD in its place; the Yjs update stays the truth.
    """
    if b"\\u0000" not in encoded:
        return encoded.decode()
    cleaned = _without_nul(orjson.loads(encoded))
    return orjson.dumps(cleaned, option=orjson.OPT_SORT_KEYS).decode()


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {_without_nul(name): _without_nul(item) for name, item in value.items()}
    return value


def _patch_text(patch: list[dict[str, Any]] | None) -> str | None:
    return None if patch is None else _jsonb_text(orjson.dumps(patch))


# Plain dict lookups: Enum(value) costs a microsecond, which adds up over thousands of rows.
_CHANGE_TYPES = {kind.value: kind for kind in ChangeType}
_TRIGGERS = {trigger.value: trigger for trigger in TriggeredBy}


def _entry(row: asyncpg.Record) -> LogEntry:
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
        at,
    )


def _history_record(change: Change, version: int) -> tuple[Any, ...]:
    return (
        change.key.workspace_id,
        change.key.panel_id,
        version,
        change.epoch,
        change.change_id,
        change.update,
        _patch_text(change.patch_for(version)),
        str(change.change_type),
        str(change.triggered_by),
        change.trigger_source,
        change.subject,
        _aware(change.occurred_at),
    )


async def _insert_history(conn: asyncpg.Connection, new: list[tuple[Change, int]]) -> None:
    records = [_history_record(change, version) for change, version in new]
    if len(records) >= _COPY_FROM_ROWS:
        await conn.copy_records_to_table("state_history", records=records, columns=_HISTORY_COLUMNS)
    else:
        await conn.execute(
            _INSERT_HISTORY, *(list(column) for column in zip(*records, strict=True))
        )


async def _logged_versions(conn: asyncpg.Connection, change_ids: list[str]) -> dict[str, int]:
    """The versions already given to any of these change ids."""
    rows = await conn.fetch(_LOGGED_VERSIONS, change_ids)
    return {change_id: version for change_id, version in rows}


async def _lock_panels(
    conn: asyncpg.Connection, changes: list[Change]
) -> dict[PanelKey, tuple[int, BatchPanel]]:
    """Lock the rows of the batch's panels until commit; missing panels are left out."""
    keys = list(dict.fromkeys(change.key for change in changes))
    rows = await conn.fetch(
        _LOCK_PANELS, [key.workspace_id for key in keys], [key.panel_id for key in keys]
    )
    return {
        PanelKey(workspace_id, panel_id): (row_id, BatchPanel(epoch, version, deleted=deleted))
        for row_id, workspace_id, panel_id, epoch, version, deleted in rows
    }


async def _advance_panels(conn: asyncpg.Connection, panels: list[tuple[int, BatchPanel]]) -> None:
    changed = [(row_id, panel) for row_id, panel in panels if panel.changed]
    await conn.execute(
        _ADVANCE_PANELS,
        [row_id for row_id, _ in changed],
        [panel.version for _, panel in changed],
        [panel.updated_at for _, panel in changed],
        [panel.deleted_at for _, panel in changed],
    )


async def _created_before(
    conn: asyncpg.Connection, change: Change, version: int
) -> PanelInfo | None:
    """What create() answered the first time, or None if the panel was re-created since."""
    row = await conn.fetchrow(
        "SELECT epoch, created_by, created_at, updated_at FROM panel_states"
        " WHERE workspace_id = $1 AND panel_id = $2",
        change.key.workspace_id,
        change.key.panel_id,
    )
    if row is None or row[0] != change.epoch:
        return None
    epoch, created_by, created_at, updated_at = row
    return PanelInfo(change.key, epoch, version, created_by, created_at, updated_at)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset when a connection goes back to the pool (asyncpg still rolls back an
    open transaction): this log sets no session state, listens to nothing and takes only
    transaction-scoped locks. asyncpg's default reset costs one more round trip per append
    (about 7 in all): measured 216 -> 266 one-change appends a second without it."""


# Schema


async def _connect(dsn: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn)
    except _TRANSIENT as exc:
        raise _unavailable(exc) from exc


async def _applied(conn: asyncpg.Connection) -> set[int]:
    if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
        return set()
    return {number for (number,) in await conn.fetch("SELECT version FROM schema_migrations")}


def _latest() -> int:
    return max((number for number, _, _ in migration_files(_DIALECT)), default=0)


def _missing(applied: set[int]) -> list[int]:
    # Migrations the database has and this server does not know are fine: they are additive,
    # so replicas of the previous release keep working while a new one rolls out.
    return [number for number, _, _ in migration_files(_DIALECT) if number not in applied]


async def migrate(dsn: str) -> list[str]:
    """Apply the pending migrations in one transaction; the names applied, oldest first.

    Safe to run from several processes at once: they take turns on an advisory lock, and
    the later ones find nothing left to do.
    """
    conn = await _connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            applied = await _applied(conn)
            names: list[str] = []
            for number, name, sql in migration_files(_DIALECT):
                if number in applied:
                    continue
                await conn.execute(sql)  # no arguments: several statements in one go
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", number, name
                )
                names.append(f"{number:04d}_{name}")
            return names
    finally:
        await conn.close()


async def schema_status(dsn: str) -> tuple[int, int]:
    """(the newest migration the database has, the newest this server knows); 0 for none."""
    conn = await _connect(dsn)
    try:
        return max(await _applied(conn), default=0), _latest()
    finally:
        await conn.close()


class PostgresUpdateLog(PostgresMaintenance):
    """The UpdateLog port on PostgreSQL, through a pool of asyncpg connections; its
    LogMaintenance (retention, compaction) is in postgres_maintenance.py."""

    def __init__(self, pool: asyncpg.Pool, *, close_timeout: float = 10.0) -> None:
        self._pool = pool
        self._close_timeout = close_timeout
        self._closed = False

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        command_timeout: float | None = 60.0,
    ) -> PostgresUpdateLog:
        """Connect a pool to `dsn`; SchemaOutdated unless every migration has been applied."""
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                command_timeout=command_timeout,
                server_settings={"application_name": "crdt-state"},
                reset=_keep_session,
            )
        except _TRANSIENT as exc:
            raise _unavailable(exc) from exc
        log = cls(pool)
        try:
            await log._check_schema()
        except BaseException:
            pool.terminate()
            raise
        return log

    async def create(self, change: Change) -> PanelInfo | None:
        key = change.key
        async with self._transaction() as conn:
            logged = await _logged_versions(conn, [change.change_id])
            if logged:  # a retry of a create that was committed
                return await _created_before(conn, change, logged[change.change_id])
            row = await conn.fetchrow(
                _UPSERT_PANEL,
                key.workspace_id,
                key.panel_id,
                change.epoch,
                change.subject,
                _aware(change.occurred_at),
            )
            if row is None:
                return None
            version, created_at = row
            await _insert_history(conn, [(change, version)])
        return PanelInfo(key, change.epoch, version, change.subject, created_at, created_at)

    async def append(self, changes: Sequence[Change], views: Sequence[PanelView] = ()) -> list[int]:
        batch = list(changes)
        rows = [_view_row(view) for view in views]
        if not batch and not rows:
            return []
        versions: list[int] = []
        async with self._transaction() as conn:
            if batch:
                locked = await _lock_panels(conn, batch)
                # Looked up after the locks: a concurrent try of the same batch has committed.
                logged = await _logged_versions(conn, [change.change_id for change in batch])
                panels = {k: panel for k, (_, panel) in locked.items()}
                numbered = number_batch(batch, panels, logged)
                if numbered.new:
                    await _insert_history(conn, numbered.new)
                    await _advance_panels(conn, list(locked.values()))
                versions = numbered.versions
            if rows:
                await conn.executemany(_SAVE_VIEW_NOWAIT, rows)
        return versions

    async def load(self, key: PanelKey, until: int | None = None) -> LoadedPanel | None:
        # One snapshot for both reads: an append in between cannot show through.
        async with self._transaction(isolation="repeatable_read", readonly=True) as conn:
            head = await conn.fetchrow(
                _LOAD_HEAD, key.workspace_id, key.panel_id, _NO_LIMIT if until is None else until
            )
            if head is None:
                return None
            epoch, version, created_by, created_at, updated_at, at, state, compacted = head
            if until is not None and compacted is not None and until < compacted:
                raise version_compacted(key, until, compacted)
            info = PanelInfo(key, epoch, version, created_by, created_at, updated_at)
            checkpoint = None if at is None else Checkpoint(version=at, state=state)
            tail = await conn.fetch(
                f"SELECT {_ENTRY_COLUMNS} FROM state_history"
                " WHERE workspace_id = $1 AND panel_id = $2 AND version > $3 AND version <= $4"
                " AND epoch = $5 ORDER BY version",
                key.workspace_id,
                key.panel_id,
                0 if at is None else at,
                version if until is None else min(until, version),
                epoch,
            )
        return LoadedPanel(info, checkpoint, [_entry(row) for row in tail])

    async def read(
        self, key: PanelKey, after: int = 0, until: int | None = None, limit: int = 1000
    ) -> list[LogEntry]:
        if limit <= 0:
            return []
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_ENTRY_COLUMNS} FROM state_history"
                " WHERE workspace_id = $1 AND panel_id = $2 AND version > $3 AND version <= $4"
                " ORDER BY version LIMIT $5",
                key.workspace_id,
                key.panel_id,
                after,
                _NO_LIMIT if until is None else until,
                limit,
            )
        return [_entry(row) for row in rows]

    async def history(
        self,
        key: PanelKey,
        *,
        limit: int,
        offset: int = 0,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> tuple[list[LogEntry], int]:
        # NULL bounds: "open on that side" (timestamptz has -infinity, but NULL is simpler).
        where = (
            key.workspace_id,
            key.panel_id,
            None if since is None else _aware(since),
            None if until is None else _aware(until),
        )
        matching = (
            " FROM state_history WHERE workspace_id = $1 AND panel_id = $2"
            " AND ($3::timestamptz IS NULL OR occurred_at >= $3)"
            " AND ($4::timestamptz IS NULL OR occurred_at <= $4) AND version > $5"
        )
        # The page and the total from one snapshot.
        async with self._transaction(isolation="repeatable_read", readonly=True) as conn:
            row = await conn.fetchrow(
                "SELECT version, coalesce(history_through, 0) FROM panel_states"
                " WHERE workspace_id = $1 AND panel_id = $2",
                key.workspace_id,
                key.panel_id,
            )
            version, dropped = (0, 0) if row is None else row
            if since is None and until is None:
                # Versions are gapless from 1 and only the oldest are ever removed (up to
                # history_through): the count is known, and the page is a range of the
                # primary key (no count, no OFFSET scan).
                rows = await conn.fetch(
                    f"SELECT {_ENTRY_COLUMNS} FROM state_history"
                    " WHERE workspace_id = $1 AND panel_id = $2 AND version <= $3"
                    " AND version > $4 ORDER BY version DESC LIMIT $5",
                    key.workspace_id,
                    key.panel_id,
                    version - max(offset, 0),
                    dropped,
                    max(limit, 0),
                )
                return [_entry(row) for row in rows], version - dropped
            rows = await conn.fetch(
                f"SELECT {_ENTRY_COLUMNS}{matching} ORDER BY version DESC LIMIT $6 OFFSET $7",
                *where,
                dropped,
                max(limit, 0),
                max(offset, 0),
            )
            total = await conn.fetchval(f"SELECT count(*){matching}", *where, dropped)
        return [_entry(row) for row in rows], total

    async def save_checkpoint(self, key: PanelKey, epoch: str, checkpoint: Checkpoint) -> None:
        # No lock on the panel: a re-create racing this write leaves a checkpoint of the old
        # epoch behind, which load() never uses (it only takes the current epoch's).
        async with self._transaction() as conn:
            row = await conn.fetchrow(
                "SELECT epoch, deleted_at IS NOT NULL FROM panel_states"
                " WHERE workspace_id = $1 AND panel_id = $2",
                key.workspace_id,
                key.panel_id,
            )
            if row is None:
                raise panel_not_found(key)
            if row[0] != epoch or row[1]:
                raise stale_epoch(key)
            # A checkpoint must sit on a version of this epoch, or load() would mix epochs.
            logged = await conn.fetchval(
                "SELECT epoch FROM state_history"
                " WHERE workspace_id = $1 AND panel_id = $2 AND version = $3",
                key.workspace_id,
                key.panel_id,
                checkpoint.version,
            )
            if logged != epoch:
                raise ValueError(
                    f"Version {checkpoint.version} of panel {key} is not in epoch {epoch}."
                )
            await conn.execute(
                "INSERT INTO state_checkpoints (workspace_id, panel_id, version, epoch, state)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                key.workspace_id,
                key.panel_id,
                checkpoint.version,
                epoch,
                checkpoint.state,
            )

    async def save_view(self, view: PanelView) -> None:
        row = _view_row(view)
        async with self._connection() as conn:
            await conn.execute(_SAVE_VIEW, *row)

    async def list_panels(self, workspace_id: str) -> list[PanelListing]:
        async with self._connection() as conn:
            rows = await conn.fetch(_LIST_PANELS, workspace_id)
        return [
            PanelListing(panel_id, version, epoch, None if view is None else orjson.loads(view))
            for panel_id, version, epoch, view in rows
        ]

    async def record_snapshot(self, record: SnapshotRecord) -> None:
        async with self._connection() as conn:
            await conn.execute(
                _INSERT_SNAPSHOT,
                uuid.UUID(record.snapshot_id),
                record.workspace_id,
                record.snapshot_type,
                record.description,
                record.panel_count,
                record.total_size_bytes,
                record.git_commit_hash,
                _jsonb_text(orjson.dumps(record.panel_versions)),
                record.created_by,
                _aware(record.created_at),
            )

    async def list_snapshots(self, workspace_id: str, limit: int = 50) -> list[SnapshotRecord]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_SNAPSHOT_COLUMNS} FROM state_snapshots WHERE workspace_id = $1"
                " ORDER BY created_at DESC, id LIMIT $2",
                workspace_id,
                max(limit, 0),
            )
        return [_snapshot_record(row) for row in rows]

    async def changed_workspaces(self) -> list[str]:
        async with self._connection() as conn:
            rows = await conn.fetch(_CHANGED_WORKSPACES)
        return [workspace_id for (workspace_id,) in rows]

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.fetchval("SELECT 1")

    async def revoke(self, revocation: Revocation) -> Revocation:
        async with self._transaction() as conn:
            # Inserts take turns (readers do not wait): ids become visible in the order they
            # are given, so a replica polling `id > cursor` never passes one still uncommitted.
            await conn.execute("LOCK TABLE revocations IN SHARE ROW EXCLUSIVE MODE")
            stored_id = await conn.fetchval(
                "INSERT INTO revocations (kind, value, revoked_at, expires_at, revoked_by, reason)"
                " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                str(revocation.kind),
                revocation.value,
                _aware(revocation.revoked_at),
                None if revocation.expires_at is None else _aware(revocation.expires_at),
                revocation.revoked_by,
                revocation.reason,
            )
        return replace(revocation, id=stored_id)

    async def revocations_since(self, cursor: int, limit: int = 1000) -> list[Revocation]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT id, kind, value, revoked_at, expires_at, revoked_by, reason"
                " FROM revocations WHERE id > $1 AND (expires_at IS NULL OR expires_at > now())"
                " ORDER BY id LIMIT $2",
                cursor,
                max(limit, 0),
            )
        return [
            Revocation(
                RevocationKind(kind),
                value,
                revoked_at,
                expires_at,
                revoked_by,
                reason,
                id=row_id,
            )
            for row_id, kind, value, revoked_at, expires_at, revoked_by, reason in rows
        ]

    async def purge_revocations(self, now: datetime) -> int:
        async with self._connection() as conn:
            status = await conn.execute(
                "DELETE FROM revocations WHERE expires_at <= $1", _aware(now)
            )
        return int(status.split()[-1])

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wait_for(self._pool.close(), self._close_timeout)
        except TimeoutError:
            self._pool.terminate()  # a connection still busy (or hung): do not wait forever

    async def _check_schema(self) -> None:
        async with self._connection() as conn:
            applied = await _applied(conn)
        if _missing(applied):
            raise SchemaOutdated(max(applied, default=0), _latest())

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; trouble reaching the database becomes Unavailable."""
        conn: asyncpg.Connection | None = None
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except Exception as exc:
            if not _outage(exc, conn):
                raise  # ours (PanelNotFound, StaleEpoch...) or a bug: not worth a retry
            await self._expire_connections()
            raise _unavailable(exc) from exc

    @asynccontextmanager
    async def _transaction(self, **options: Any) -> AsyncIterator[asyncpg.Connection]:
        async with self._connection() as conn, conn.transaction(**options):
            yield conn

    async def _expire_connections(self) -> None:
        # After a restart every idle connection of the pool is dead: make the retry open
        # fresh ones instead of trying the dead ones one by one.
        await self._pool.expire_connections()


def _snapshot_record(row: asyncpg.Record) -> SnapshotRecord:
    snapshot_id, workspace_id, kind, description, count, size, sha, versions, by, at = row
    return SnapshotRecord(
        workspace_id=workspace_id,
        snapshot_id=str(snapshot_id),
        snapshot_type=kind,
        description=description,
        panel_count=count,
        total_size_bytes=size,
        git_commit_hash=sha,
        panel_versions=orjson.loads(versions) if isinstance(versions, str) else versions,
        created_by=by,
        created_at=_aware(at),
    )


def _view_row(view: PanelView) -> tuple[Any, ...]:
    stored = stored_view(view.view)
    return (
        view.key.workspace_id,
        view.key.panel_id,
        view.epoch,
        view.version,
        _jsonb_text(stored.canonical),
        stored.checksum,
        len(stored.canonical),
        stored.leaves,
    )
