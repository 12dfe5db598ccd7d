"""The UpdateLog contract, run against every storage backend.

To add a backend, add its name to BACKENDS and a branch to `backend`; every test runs on it.
PostgreSQL tests share one migrated database per session (tests/pg.py), emptied before each.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from pycrdt import Doc, Map, TransactionEvent

from adapters.postgres import PostgresUpdateLog, SchemaOutdated, migrate, schema_status
from adapters.sqlite import SqliteUpdateLog
from crdt_state.errors import PanelNotFound, StaleEpoch, Unavailable
from crdt_state.model import (
    Change,
    ChangeType,
    Checkpoint,
    LoadedPanel,
    PanelKey,
    PanelListing,
    PanelView,
    SnapshotRecord,
    TriggeredBy,
)
from crdt_state.ports import UpdateLog
from crdt_state.replay import rebuild, write_checkpoint
from migrations import migration_files

# Fixtures (clean_pg, pg_dsn) until conftest.py imports them for every module.
from .pg import empty_tables, temporary_database

BACKENDS = ["sqlite", "postgres"]
CHECKPOINT_EVERY = 1_000
LONG_LOG = 100_000

OpenStore = Callable[[], Awaitable[UpdateLog]]


@dataclass(frozen=True, slots=True)
class StoredView:
    """What save_view() left in a panel's row."""

    version: int | None
    view: dict[str, Any] | None
    checksum: str | None
    size_bytes: int | None
    leaves: int | None


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    open: OpenStore  # calling it again reopens the same data
    stored_view: Callable[[PanelKey], Awaitable[StoredView]]


def sqlite_backend(path: Path) -> Backend:
    async def stored_view(key: PanelKey) -> StoredView:
        with sqlite3.connect(path) as db:
            row = db.execute(
                "SELECT state_version, state, checksum, state_size_bytes, state_variable_count"
                " FROM panels WHERE workspace_id = ? AND panel_id = ?",
                (key.workspace_id, key.panel_id),
            ).fetchone()
        db.close()
        version, view, checksum, size, leaves = row
        return StoredView(version, view and orjson.loads(view), checksum, size, leaves)

    return Backend("sqlite", lambda: SqliteUpdateLog.open(path), stored_view)


def postgres_backend(dsn: str) -> Backend:
    async def stored_view(key: PanelKey) -> StoredView:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(
                "SELECT state_version, state::text, checksum, state_size_bytes,"
                " state_variable_count FROM panel_states"
                " WHERE workspace_id = $1 AND panel_id = $2",
                key.workspace_id,
                key.panel_id,
            )
        finally:
            await conn.close()
        version, view, checksum, size, leaves = row
        return StoredView(version, view and orjson.loads(view), checksum, size, leaves)

    # Small pools: the suite opens a store per test, often two at once.
    return Backend("postgres", lambda: PostgresUpdateLog.open(dsn, max_size=4), stored_view)


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """This test's own, empty storage on one backend."""
    if request.param == "sqlite":
        return sqlite_backend(tmp_path / "data" / "state.db")  # open() creates the folder
    if request.param == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        await empty_tables(dsn)
        return postgres_backend(dsn)
    raise ValueError(f"unknown backend {request.param}")


@pytest.fixture
def open_store(backend: Backend) -> OpenStore:
    return backend.open


@pytest.fixture
async def store(open_store: OpenStore) -> AsyncIterator[UpdateLog]:
    log = await open_store()
    yield log
    await log.close()


class Editor:
    """A pycrdt doc whose every change is captured as the update a client would send."""

    def __init__(self) -> None:
        self.doc: Doc = Doc()
        self.state = self.doc.get("state", type=Map)
        self.updates: list[bytes] = []
        self.doc.observe(self._capture)

    def _capture(self, event: TransactionEvent) -> None:
        self.updates.append(event.update)

    def set(self, name: str, value: Any) -> bytes:
        self.state[name] = value
        return self.updates[-1]

    def delete(self, name: str) -> bytes:
        del self.state[name]
        return self.updates[-1]


def state_of(doc: Doc) -> dict[str, Any]:
    return doc.get("state", type=Map).to_py() or {}


def change(key: PanelKey, epoch: str, update: bytes = b"opaque", **fields: Any) -> Change:
    # The log stores updates as opaque bytes; only tests that rebuild docs need real ones.
    return Change(key=key, epoch=epoch, update=update, **fields)


async def created(store: UpdateLog, key: PanelKey, epoch: str = "e1") -> None:
    info = await store.create(change(key, epoch, change_type=ChangeType.CREATED))
    assert info is not None


@pytest.fixture(scope="module")
def counter_updates() -> list[bytes]:
    """LONG_LOG real updates, each setting the counter to the next number."""
    editor = Editor()
    for number in range(LONG_LOG):
        editor.set("counter", number)
    return editor.updates


async def log_counter(store: UpdateLog, key: PanelKey, updates: list[bytes]) -> None:
    """Log the updates as the server would: batches, a checkpoint at every 1,000th version."""
    first = await store.create(change(key, "e1", updates[0], change_type=ChangeType.CREATED))
    assert first is not None and first.version == 1
    for end in range(CHECKPOINT_EVERY, len(updates) + 1, CHECKPOINT_EVERY):
        start = max(end - CHECKPOINT_EVERY, 1)
        versions = await store.append([change(key, "e1", u) for u in updates[start:end]])
        assert versions == list(range(start + 1, end + 1))
        checkpoint = await write_checkpoint(store, key)
        assert checkpoint is not None and checkpoint.version == end


# Versions


async def test_versions_start_at_one_and_have_no_gaps_across_panels_and_batches(
    store: UpdateLog,
) -> None:
    keys = [PanelKey("ws", f"panel-{n}") for n in range(3)]
    for key in keys:
        info = await store.create(change(key, "e1", change_type=ChangeType.CREATED))
        assert info is not None and info.version == 1 and info.epoch == "e1"
    expected = dict.fromkeys(keys, 1)
    cycle = itertools.cycle(keys)
    for size in [1, 2, 7, 50, 3]:
        batch = [change(next(cycle), "e1", bytes([size, n])) for n in range(size)]
        versions = await store.append(batch)
        for item, version in zip(batch, versions, strict=True):
            expected[item.key] += 1
            assert version == expected[item.key]
    for key in keys:
        entries = await store.read(key)
        assert [e.version for e in entries] == list(range(1, expected[key] + 1))
        loaded = await store.load(key)
        assert loaded is not None and loaded.info.version == expected[key]


async def test_concurrent_appends_to_one_panel_get_distinct_gapless_versions(
    store: UpdateLog,
) -> None:
    key = PanelKey("ws", "busy")
    await created(store, key)
    results = await asyncio.gather(
        *(store.append([change(key, "e1", bytes([n])) for _ in range(5)]) for n in range(20))
    )
    assert sorted(v for versions in results for v in versions) == list(range(2, 102))
    for versions in results:
        assert versions == list(range(versions[0], versions[0] + 5))  # a batch stays together


async def test_an_entry_reads_back_exactly_as_appended(store: UpdateLog) -> None:
    key = PanelKey("ws", "p")
    await created(store, key)
    moment = datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=timezone(timedelta(hours=-5)))
    patch = [{"op": "replace", "path": "/a/0", "value": {"x": [1, 2.5, None, "é"]}}]
    appended = change(
        key,
        "e1",
        b"\x00\xff\x01",
        triggered_by=TriggeredBy.AI,
        trigger_source="assistant",
        subject="user-7",
        patch=patch,
        occurred_at=moment,
    )
    [version] = await store.append([appended])
    [entry] = await store.read(key, after=version - 1)
    assert entry.version == version == 2
    assert (entry.epoch, entry.update, entry.patch) == ("e1", b"\x00\xff\x01", patch)
    assert entry.change_type is ChangeType.UPDATED and entry.triggered_by is TriggeredBy.AI
    assert (entry.trigger_source, entry.subject) == ("assistant", "user-7")
    assert entry.occurred_at == moment and entry.occurred_at.tzinfo is not None


async def test_read_pages_through_the_log(store: UpdateLog) -> None:
    key = PanelKey("ws", "p")
    await created(store, key)
    await store.append([change(key, "e1") for _ in range(9)])
    assert [e.version for e in await store.read(key, after=3, limit=4)] == [4, 5, 6, 7]
    assert [e.version for e in await store.read(key, after=3, until=5)] == [4, 5]
    assert [e.version for e in await store.read(key, after=8)] == [9, 10]
    assert await store.read(key, after=10) == []
    assert await store.read(PanelKey("ws", "missing")) == []


# Creating and failing appends


async def test_a_second_create_of_a_live_panel_returns_none(store: UpdateLog) -> None:
    key = PanelKey("ws", "p")
    await created(store, key)
    assert await store.create(change(key, "e2", change_type=ChangeType.CREATED)) is None
    loaded = await store.load(key)
    assert loaded is not None and loaded.info.epoch == "e1" and loaded.info.version == 1


async def test_load_of_a_missing_panel_is_none(store: UpdateLog) -> None:
    assert await store.load(PanelKey("ws", "missing")) is None


async def test_append_to_a_missing_panel_raises_and_writes_nothing_of_the_batch(
    store: UpdateLog,
) -> None:
    key = PanelKey("ws", "p")
    await created(store, key)
    batch = [change(key, "e1"), change(PanelKey("ws", "missing"), "e1")]
    with pytest.raises(PanelNotFound):
        await store.append(batch)
    assert [e.version for e in await store.read(key)] == [1]
    assert await store.append([change(key, "e1")]) == [2]


async def test_stale_epoch_raises_and_writes_nothing_of_the_batch(store: UpdateLog) -> None:
    first, second = PanelKey("ws", "a"), PanelKey("ws", "b")
    await created(store, first)
    await created(store, second)
    with pytest.raises(StaleEpoch):
        await store.append([change(first, "e1"), change(second, "old"), change(first, "e1")])
    assert [e.version for e in await store.read(first)] == [1]
    assert [e.version for e in await store.read(second)] == [1]


async def test_append_to_a_deleted_panel_raises(store: UpdateLog) -> None:
    key = PanelKey("ws", "p")
    await created(store, key)
    assert await store.append([change(key, "e1", change_type=ChangeType.DELETED)]) == [2]
    with pytest.raises(PanelNotFound):
        await store.append([change(key, "e1")])
    assert await store.load(key) is None
    assert [e.change_type for e in await store.read(key)] == [
        ChangeType.CREATED,
        ChangeType.DELETED,
    ]


async def test_a_change_after_a_delete_in_the_same_batch_fails_the_whole_batch(
    store: UpdateLog,
) -> None:
    key = PanelKey("ws", "p")
    await created(store, key)
    with pytest.raises(PanelNotFound):
        await store.append([change(key, "e1", change_type=ChangeType.DELETED), change(key, "e1")])
    loaded = await store.load(key)
    assert loaded is not None and loaded.info.version == 1


async def test_recreating_a_deleted_panel_starts_a_new_epoch_and_continues_versions(
    store: UpdateLog,
) -> None:
    key = PanelKey("ws", "p")
    before = Editor()
    await store.create(change(key, "e1", before.set("old", 1), change_type=ChangeType.CREATED))
    await store.append([change(key, "e1", before.set("old", 2))])
    await write_checkpoint(store, key)
    await store.append([change(key, "e1", change_type=ChangeType.DELETED)])

    after = Editor()
    info = await store.create(
        change(key, "e2", after.set("new", 1), change_type=ChangeType.CREATED, subject="bob")
    )
    assert info is not None
    assert (info.epoch, info.version, info.created_by) == ("e2", 4, "bob")
    assert await store.append([change(key, "e2", after.set("new", 2))]) == [5]
    with pytest.raises(StaleEpoch):
        await store.append([change(key, "e1")])

    loaded = await store.load(key)
    assert loaded is not None and loaded.info.version == 5
    assert loaded.checkpoint is None  # the old epoch's checkpoint is not this doc's past
    assert [e.version for e in loaded.tail] == [4, 5]
    assert state_of(rebuild(loaded)) == {"new": 2}
    assert [e.epoch for e in await store.read(key)] == ["e1"] * 3 + ["e2"] * 2


# Durability


async def test_everything_survives_close_and_reopen(
    store: UpdateLog, open_store: OpenStore
) -> None:
    live, gone = PanelKey("ws", "live"), PanelKey("ws", "gone")
    editor = Editor()
    await store.create(change(live, "e1", editor.set("n", 0), change_type=ChangeType.CREATED))
    await store.append([change(live, "e1", editor.set("n", n)) for n in range(1, 5)])
    await write_checkpoint(store, live)
    await store.append([change(live, "e1", editor.set("n", 5))])
    await created(store, gone)
    await store.append([change(gone, "e1", change_type=ChangeType.DELETED)])
    before = await store.load(live)
    history = await store.read(live)
    await store.close()

    reopened = await open_store()
    try:
        assert await reopened.load(live) == before
        assert await reopened.read(live) == history
        assert await reopened.load(gone) is None
        assert await reopened.append([change(live, "e1", editor.set("n", 6))]) == [7]
        loaded = await reopened.load(live)
        assert loaded is not None and state_of(rebuild(loaded)) == {"n": 6}
    finally:
        await reopened.close()


async def test_sqlite_applies_each_migration_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    for _ in range(2):
        await (await SqliteUpdateLog.open(path)).close()
    with sqlite3.connect(path) as db:
        applied = db.execute("SELECT version, name FROM schema_migrations").fetchall()
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()
    assert applied == [(number, name) for number, name, _ in migration_files("sqlite")]


async def test_sqlite_upgrades_a_database_of_the_first_schema_keeping_its_log(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    number, name, sql = migration_files("sqlite")[0]
    with sqlite3.connect(path) as db:
        db.executescript(sql)
        db.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (number, name))
        db.execute("INSERT INTO panels VALUES ('ws', 'p', 'e1', 2, NULL, 0, 0, NULL)")
        for version in (1, 2):  # rows without a change id
            db.execute(
                "INSERT INTO state_history VALUES"
                " ('ws', 'p', ?, 'e1', x'00', NULL, 'updated', 'user', NULL, NULL, 1, 0)",
                (version,),
            )
    db.close()
    store = await SqliteUpdateLog.open(path)
    try:
        key = PanelKey("ws", "p")
        batch = [change(key, "e1"), change(key, "e1")]
        assert await store.append(batch) == [3, 4]
        assert await store.append(batch) == [3, 4]
        assert [e.version for e in await store.read(key)] == [1, 2, 3, 4]
    finally:
        await store.close()


# Checkpoints and time travel


async def test_load_is_the_newest_checkpoint_plus_the_entries_after_it(store: UpdateLog) -> None:
    key = PanelKey("ws", "p")
    editor = Editor()
    await store.create(change(key, "e1", editor.set("n", 1), change_type=ChangeType.CREATED))
    await store.append([change(key, "e1", editor.set("n", n)) for n in range(2, 6)])
    checkpoint = await write_checkpoint(store, key)
    assert checkpoint is not None and checkpoint.version == 5
    restored: Doc = Doc()
    restored.apply_update(checkpoint.state)
    assert state_of(restored) == {"n": 5}
    assert await write_checkpoint(store, key) is None  # nothing new since
    await store.append([change(key, "e1", editor.set("n", n)) for n in range(6, 9)])

    loaded = await store.load(key)
    assert loaded is not None and loaded.checkpoint is not None
    assert loaded.checkpoint.version == 5
    assert [e.version for e in loaded.tail] == [6, 7, 8]
    assert state_of(rebuild(loaded)) == state_of(editor.doc) == {"n": 8}


async def test_a_checkpoint_of_an_old_epoch_is_refused(store: UpdateLog) -> None:
    key = PanelKey("ws", "p")
    await created(store, key)
    await store.append([change(key, "e1", change_type=ChangeType.DELETED)])
    await created(store, key, epoch="e2")
    with pytest.raises(StaleEpoch):
        await store.save_checkpoint(key, "e1", Checkpoint(2, b"old"))


async def test_a_second_checkpoint_at_the_same_version_is_ignored(store: UpdateLog) -> None:
    key = PanelKey("ws", "p")
    await created(store, key)
    await store.save_checkpoint(key, "e1", Checkpoint(1, b"first"))
    await store.save_checkpoint(key, "e1", Checkpoint(1, b"second"))
    loaded = await store.load(key)
    assert loaded is not None and loaded.checkpoint == Checkpoint(1, b"first")
    assert loaded.tail == []


async def test_load_until_gives_the_doc_as_it_was_after_that_many_updates(
    store: UpdateLog,
) -> None:
    key = PanelKey("ws", "p")
    editor = Editor()
    states = [state_of(editor.doc)]
    update = editor.set("0", 0)
    states.append(state_of(editor.doc))
    await store.create(change(key, "e1", update, change_type=ChangeType.CREATED))
    for n in range(1, 30):
        # Keys come and go so that an old state is not a subset of a newer one.
        update = editor.delete(str(n - 2)) if n % 4 == 0 else editor.set(str(n), n)
        states.append(state_of(editor.doc))
        await store.append([change(key, "e1", update)])
        if n % 10 == 0:
            await write_checkpoint(store, key)

    loaded_at_25 = await store.load(key, until=25)
    assert loaded_at_25 is not None and loaded_at_25.checkpoint is not None
    assert (loaded_at_25.checkpoint.version, len(loaded_at_25.tail)) == (21, 4)
    assert loaded_at_25.info.version == 30
    for version in range(1, 31):
        loaded = await store.load(key, until=version)
        assert loaded is not None
        assert state_of(rebuild(loaded)) == states[version], version


async def test_a_long_log_loads_from_a_recent_checkpoint(
    store: UpdateLog, counter_updates: list[bytes]
) -> None:
    key = PanelKey("ws", "long")
    await log_counter(store, key, counter_updates)

    loaded = await store.load(key)
    assert loaded is not None and loaded.info.version == LONG_LOG
    assert loaded.checkpoint is not None and len(loaded.tail) <= CHECKPOINT_EVERY
    assert loaded.checkpoint.version + len(loaded.tail) == LONG_LOG
    assert state_of(rebuild(loaded)) == {"counter": LONG_LOG - 1}

    past = await store.load(key, until=54_321)
    assert past is not None and past.checkpoint is not None
    assert (past.checkpoint.version, len(past.tail)) == (54_000, 321)
    assert state_of(rebuild(past)) == {"counter": 54_320}


async def test_a_rebuild_from_a_checkpoint_equals_the_full_replay(
    store: UpdateLog, counter_updates: list[bytes]
) -> None:
    key = PanelKey("ws", "long")
    await log_counter(store, key, counter_updates)
    loaded = await store.load(key)
    assert loaded is not None
    everything = await store.read(key, limit=LONG_LOG)
    assert len(everything) == LONG_LOG
    replayed = rebuild(LoadedPanel(loaded.info, None, everything))
    from_checkpoint = rebuild(loaded)
    assert state_of(from_checkpoint) == state_of(replayed) == {"counter": LONG_LOG - 1}
    assert from_checkpoint.get_state() == replayed.get_state()
    assert from_checkpoint.get_update() == replayed.get_update()


# Exactly once: change ids


async def test_a_retried_batch_gets_its_versions_back_and_is_not_logged_twice(
    store: UpdateLog,
) -> None:
    first, second = PanelKey("ws", "a"), PanelKey("ws", "b")
    await created(store, first)
    await created(store, second)
    batch = [change(first, "e1", b"1"), change(second, "e1", b"2"), change(first, "e1", b"3")]
    versions = await store.append(batch)
    assert versions == [2, 2, 3]
    # The commit succeeded but its answer was lost: the committer sends the same batch again.
    assert await store.append(batch) == versions
    assert [e.update for e in await store.read(first)] == [b"opaque", b"1", b"3"]
    assert [e.update for e in await store.read(second)] == [b"opaque", b"2"]

    # Part of a batch logged, part new: the new changes continue the numbering.
    mixed = [batch[2], change(first, "e1", b"4"), batch[0]]
    assert await store.append(mixed) == [3, 4, 2]
    assert [e.version for e in await store.read(first)] == [1, 2, 3, 4]
    loaded = await store.load(first)
    assert loaded is not None and loaded.info.version == 4


async def test_a_change_twice_in_one_batch_is_logged_once(store: UpdateLog) -> None:
    key = PanelKey("ws", "p")
    await created(store, key)
    once = change(key, "e1", b"once")
    assert await store.append([once, change(key, "e1", b"other"), once]) == [2, 3, 2]
    assert [e.update for e in await store.read(key, after=1)] == [b"once", b"other"]


async def test_a_logged_change_keeps_its_version_after_its_panel_is_deleted(
    store: UpdateLog,
) -> None:
    key = PanelKey("ws", "p")
    await created(store, key)
    logged = change(key, "e1")
    assert await store.append([logged]) == [2]
    assert await store.append([change(key, "e1", change_type=ChangeType.DELETED)]) == [3]
    assert await store.append([logged]) == [2]  # a late retry: already in, nothing refused
    with pytest.raises(PanelNotFound):
        await store.append([logged, change(key, "e1")])


async def test_a_retried_create_answers_as_the_first_time(store: UpdateLog) -> None:
    key = PanelKey("ws", "p")
    creation = change(key, "e1", change_type=ChangeType.CREATED, subject="ann")
    info = await store.create(creation)
    assert info is not None and info.version == 1
    again = await store.create(creation)
    assert again is not None and (again.epoch, again.version, again.created_by) == (
        "e1",
        1,
        "ann",
    )
    assert [e.version for e in await store.read(key)] == [1]
    # Someone else's create of the live panel still loses.
    assert await store.create(change(key, "e2", change_type=ChangeType.CREATED)) is None


# The JSON view kept beside the log


def expected_view(view: dict[str, Any]) -> tuple[str, int]:
    canonical = orjson.dumps(view, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest(), len(canonical)


async def test_save_view_keeps_the_newest_view_of_the_current_epoch(
    store: UpdateLog, backend: Backend
) -> None:
    key = PanelKey("ws", "p")
    await created(store, key)
    await store.append([change(key, "e1") for _ in range(3)])
    before = (await store.load(key), await store.read(key))
    assert await backend.stored_view(key) == StoredView(None, None, None, None, None)

    view = {"$state": {"b": [1, 2, {"c": None}], "a": "x", "e": {}}, "$computed": {"n": 1.5}}
    await store.save_view(PanelView(key, "e1", 3, view))
    checksum, size = expected_view(view)
    assert await backend.stored_view(key) == StoredView(3, view, checksum, size, 5)

    newer = {"$state": {"a": "y"}, "$computed": {}}
    await store.save_view(PanelView(key, "e1", 2, {"$state": {"old": True}}))  # older: ignored
    await store.save_view(PanelView(key, "e1", 3, {"$state": {"same": True}}))  # equal: ignored
    await store.save_view(
        PanelView(key, "e0", 4, {"$state": {"stale": True}})
    )  # old epoch: ignored
    await store.save_view(
        PanelView(key, "e1", 9, {"$state": {"future": True}})
    )  # not logged: ignored
    await store.save_view(PanelView(PanelKey("ws", "missing"), "e1", 1, newer))  # no panel: ignored
    assert (await backend.stored_view(key)).view == view
    await store.save_view(PanelView(key, "e1", 4, newer))
    assert (await backend.stored_view(key)).version == 4
    assert (await backend.stored_view(key)).view == newer

    # A cache beside the log: what load and read answer does not change.
    assert (await store.load(key), await store.read(key)) == before


async def test_views_ride_in_an_append_and_obey_the_same_guards(
    store: UpdateLog, backend: Backend
) -> None:
    key, other = PanelKey("ws", "p"), PanelKey("ws", "q")
    await created(store, key)
    await created(store, other)
    view = {"$state": {"a": 1}, "$computed": {}}
    # The view of version 2 rides in the transaction that logs version 2.
    versions = await store.append([change(key, "e1")], views=[PanelView(key, "e1", 2, view)])
    assert versions == [2]
    assert (await backend.stored_view(key)).version == 2
    assert (await backend.stored_view(key)).view == view
    # Views alone, no change: still written; the stale ones are ignored as by save_view.
    assert (
        await store.append(
            [],
            views=[
                PanelView(key, "e1", 1, {"$state": {"older": True}}),
                PanelView(other, "e1", 1, {"$state": {"q": True}}),
                PanelView(other, "e0", 1, {"$state": {"stale": True}}),
            ],
        )
        == []
    )
    assert (await backend.stored_view(key)).view == view
    assert (await backend.stored_view(other)).view == {"$state": {"q": True}}
    # A refused batch writes nothing, its views included.
    with pytest.raises(StaleEpoch):
        await store.append(
            [change(key, "e0")], views=[PanelView(other, "e1", 1, {"$state": {"lost": 1}})]
        )
    assert (await backend.stored_view(other)).view == {"$state": {"q": True}}


async def test_a_deleted_panel_keeps_no_new_view_and_a_recreated_one_starts_without(
    store: UpdateLog, backend: Backend
) -> None:
    key = PanelKey("ws", "p")
    await created(store, key)
    await store.save_view(PanelView(key, "e1", 1, {"$state": {"v": 1}}))
    await store.append([change(key, "e1", change_type=ChangeType.DELETED)])
    await store.save_view(PanelView(key, "e1", 2, {"$state": {"v": 2}}))
    assert (await backend.stored_view(key)).version == 1
    await created(store, key, epoch="e2")
    assert (await backend.stored_view(key)).view is None
    await store.save_view(PanelView(key, "e2", 3, {"$state": {"v": 3}}))
    assert (await backend.stored_view(key)).view == {"$state": {"v": 3}}


async def test_a_nul_character_in_a_patch_or_view_does_not_stop_the_log(
    store: UpdateLog, backend: Backend
) -> None:
    # JSON allows U+0000 in strings; PostgreSQL's jsonb cannot hold it and keeps U+FFFD.
    kept = "\ufffd" if backend.name == "postgres" else "\x00"
    key = PanelKey("ws", "p")
    await created(store, key)
    patch = [{"op": "add", "path": "/a\x00", "value": "x\x00y"}]
    [version] = await store.append([change(key, "e1", patch=patch)])
    [entry] = await store.read(key, after=1)
    assert entry.patch == [{"op": "add", "path": f"/a{kept}", "value": f"x{kept}y"}]
    view = {"$state": {"k\x00": "v\x00"}}
    await store.save_view(PanelView(key, "e1", version, view))
    stored = await backend.stored_view(key)
    assert stored.view == {"$state": {f"k{kept}": f"v{kept}"}}
    assert stored.checksum == expected_view(view)[0]  # of the view as the doc holds it


# PostgreSQL: several processes, schema


async def append_in_random_batches(
    log: UpdateLog, changes: list[Change], rng: random.Random
) -> list[tuple[list[Change], list[int]]]:
    """Append `changes` in concurrent batches of random sizes; each batch with its versions."""
    batches: list[list[Change]] = []
    rest = list(changes)
    while rest:
        size = rng.randint(1, 40)
        batches.append(rest[:size])
        rest = rest[size:]
    results = await asyncio.gather(*(log.append(batch) for batch in batches))
    return list(zip(batches, results, strict=True))


async def test_two_processes_appending_to_the_same_panels_get_gapless_versions(
    clean_pg: str,
) -> None:
    rng = random.Random(7)
    keys = [PanelKey("ws", "shared"), PanelKey("ws", "other")]
    first = await PostgresUpdateLog.open(clean_pg, max_size=5)
    second = await PostgresUpdateLog.open(clean_pg, max_size=5)
    try:
        for key in keys:
            await created(first, key)
        # Batches mix both panels in random order: row locks taken in one order, no deadlock.
        work = {
            log: [change(rng.choice(keys), "e1", f"{name}-{n}".encode()) for n in range(500)]
            for log, name in [(first, "a"), (second, "b")]
        }
        results = await asyncio.gather(
            *(append_in_random_batches(log, changes, rng) for log, changes in work.items())
        )
        given: dict[bytes, tuple[PanelKey, int]] = {}
        for batches in results:
            for batch, versions in batches:
                for item, version in zip(batch, versions, strict=True):
                    given[item.update] = (item.key, version)
                for key in keys:  # a batch's changes to one panel get consecutive versions
                    mine = [v for item, v in zip(batch, versions, strict=True) if item.key == key]
                    assert not mine or mine == list(range(mine[0], mine[0] + len(mine)))
        assert len(given) == 1000
        # The two writers really raced: by version, the log switches between them often.
        order = sorted(given.items(), key=lambda item: (str(item[1][0]), item[1][1]))
        writers = [update[:1] for update, _ in order]
        assert sum(a != b for a, b in itertools.pairwise(writers)) > 10
        for key in keys:
            entries = await first.read(key, limit=2000)
            assert [e.version for e in entries] == list(range(1, len(entries) + 1))
            # Every change exactly once, at the version its append answered.
            assert {e.update: (key, e.version) for e in entries[1:]} == {
                update: at for update, at in given.items() if at[0] == key
            }
    finally:
        await first.close()
        await second.close()


async def test_opening_a_database_nobody_listens_for_is_unavailable() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(Unavailable):
        await PostgresUpdateLog.open(f"postgresql://postgres@127.0.0.1:{port}/none")


async def test_opening_a_database_without_the_schema_says_to_migrate() -> None:
    async with temporary_database() as dsn:
        latest = len(migration_files("postgres"))
        assert await schema_status(dsn) == (0, latest)
        with pytest.raises(SchemaOutdated, match=r"run `crdt-state migrate`") as raised:
            await PostgresUpdateLog.open(dsn)
        assert str(raised.value) == (
            f"the database schema is at version 0, this server needs {latest}: "
            "run `crdt-state migrate`"
        )


async def test_two_concurrent_migrations_apply_each_migration_once() -> None:
    async with temporary_database() as dsn:
        results = await asyncio.gather(migrate(dsn), migrate(dsn), migrate(dsn))
        names = [f"{number:04d}_{name}" for number, name, _ in migration_files("postgres")]
        assert sorted(results, key=len) == [[], [], names]
        assert await migrate(dsn) == []
        assert await schema_status(dsn) == (len(names), len(names))
        log = await PostgresUpdateLog.open(dsn)
        try:
            await log.ping()
            assert await log.create(change(PanelKey("ws", "p"), "e1")) is not None
        finally:
            await log.close()


async def test_history_pages_newest_first_within_a_time_window(store: UpdateLog) -> None:
    key = PanelKey("ws", "p")
    start = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(0)))
    at = [start + timedelta(minutes=n) for n in range(6)]
    await store.create(change(key, "e1", change_type=ChangeType.CREATED, occurred_at=at[0]))
    await store.append([change(key, "e1", occurred_at=at[n]) for n in (1, 2)])
    await store.append([change(key, "e1", change_type=ChangeType.DELETED, occurred_at=at[3])])
    await store.create(change(key, "e2", change_type=ChangeType.CREATED, occurred_at=at[4]))
    await store.append([change(key, "e2", occurred_at=at[5])])

    page, total = await store.history(key, limit=2)
    assert ([e.version for e in page], total) == ([6, 5], 6)
    page, total = await store.history(key, limit=10, offset=2)
    assert [(e.version, e.epoch) for e in page] == [(4, "e1"), (3, "e1"), (2, "e1"), (1, "e1")]
    # Both ends of the window are included.
    page, total = await store.history(key, limit=10, since=at[2], until=at[4])
    assert ([e.version for e in page], total) == ([5, 4, 3], 3)
    east_of_utc = at[2].astimezone(timezone(timedelta(hours=3)))  # the same moment
    page, total = await store.history(key, limit=1, since=east_of_utc)
    assert ([e.version for e in page], total) == ([6], 4)
    assert await store.history(key, limit=5, offset=10) == ([], 6)
    assert await store.history(PanelKey("ws", "missing"), limit=5) == ([], 0)


# Snapshots: the panels of a workspace, the snapshot rows, what changed since


async def test_list_panels_gives_the_live_panels_with_their_current_view(
    store: UpdateLog,
) -> None:
    current, lagging, gone = (PanelKey("ws", name) for name in ("b-current", "a-lagging", "gone"))
    for key in (current, lagging, gone, PanelKey("other", "x")):
        await created(store, key)
    await store.append([change(current, "e1"), change(current, "e1")])
    await store.save_view(PanelView(current, "e1", 3, {"$state": {"n": 3}, "$computed": {}}))
    await store.save_view(PanelView(lagging, "e1", 1, {"$state": {"old": True}}))
    await store.append([change(lagging, "e1")])  # the stored view is now of version 1 of 2
    await store.append([change(gone, "e1", change_type=ChangeType.DELETED)])

    assert await store.list_panels("ws") == [
        PanelListing("a-lagging", 2, "e1", None),
        PanelListing("b-current", 3, "e1", {"$state": {"n": 3}, "$computed": {}}),
    ]
    await created(store, gone, epoch="e2")  # re-created: listed again, no view yet
    assert PanelListing("gone", 3, "e2", None) in await store.list_panels("ws")
    assert await store.list_panels("nowhere") == []


def snapshot_fields(n: int, at: datetime, **overrides: Any) -> dict[str, Any]:
    return {
        "snapshot_id": str(uuid.UUID(int=n + 1)),
        "snapshot_type": "manual",
        "description": f"number {n}",
        "panel_count": 2,
        "total_size_bytes": 100 + n,
        "git_commit_hash": f"{n:040x}",
        "panel_versions": {"p": n, "ü/q": 7},
        "created_by": "ann",
        "created_at": at,
        **overrides,
    }


async def test_snapshot_rows_are_recorded_and_listed_newest_first(store: UpdateLog) -> None:
    start = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    rows = [
        snapshot_fields(0, start),
        snapshot_fields(1, start + timedelta(minutes=5), snapshot_type="auto", created_by=None),
        snapshot_fields(2, start + timedelta(minutes=9), git_commit_hash=None, description=None),
    ]
    for row in rows:
        await store.record_snapshot(SnapshotRecord(workspace_id="ws", **row))
    await store.record_snapshot(
        SnapshotRecord(
            workspace_id="other", **snapshot_fields(3, start, snapshot_type="pre_ai_edit")
        )
    )

    listed = await store.list_snapshots("ws", limit=2)
    assert listed == [SnapshotRecord(workspace_id="ws", **row) for row in reversed(rows[1:])]
    assert [r.snapshot_id for r in await store.list_snapshots("ws")] == [
        row["snapshot_id"] for row in reversed(rows)
    ]
    [other] = await store.list_snapshots("other")
    assert other.snapshot_type == "pre_ai_edit"
    assert await store.list_snapshots("nowhere") == []


async def test_changed_workspaces_are_those_changed_after_their_last_git_snapshot(
    store: UpdateLog,
) -> None:
    start = datetime(2026, 1, 2, tzinfo=UTC)
    a, b = PanelKey("a", "p"), PanelKey("b", "p")
    for key in (a, b):
        await store.create(change(key, "e1", change_type=ChangeType.CREATED, occurred_at=start))
    assert await store.changed_workspaces() == ["a", "b"]  # never snapshotted

    later = start + timedelta(minutes=1)
    await store.record_snapshot(SnapshotRecord(workspace_id="a", **snapshot_fields(0, later)))
    await store.record_snapshot(
        SnapshotRecord(workspace_id="b", **snapshot_fields(1, later, git_commit_hash=None))
    )
    assert await store.changed_workspaces() == ["b"]  # a row without a commit does not count

    await store.append([change(a, "e1", occurred_at=later + timedelta(seconds=1))])
    assert await store.changed_workspaces() == ["a", "b"]
    await store.record_snapshot(
        SnapshotRecord(workspace_id="a", **snapshot_fields(2, later + timedelta(seconds=2)))
    )
    await store.record_snapshot(
        SnapshotRecord(workspace_id="b", **snapshot_fields(3, later + timedelta(seconds=2)))
    )
    assert await store.changed_workspaces() == []
    deleted_at = later + timedelta(seconds=3)
    await store.append([change(b, "e1", change_type=ChangeType.DELETED, occurred_at=deleted_at)])
    assert await store.changed_workspaces() == ["b"]  # a deletion is a change too
