"""The UpdateLog contract, run against every storage backend.

To add a backend, add its name to BACKENDS and a branch to `open_store`; every test runs on it.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map, TransactionEvent

from adapters.sqlite import SqliteUpdateLog
from crdt_state.errors import PanelNotFound, StaleEpoch
from crdt_state.ports import (
    Change,
    ChangeType,
    Checkpoint,
    LoadedPanel,
    PanelKey,
    TriggeredBy,
    UpdateLog,
)
from crdt_state.replay import rebuild, write_checkpoint
from migrations import migration_files

BACKENDS = ["sqlite"]
CHECKPOINT_EVERY = 1_000
LONG_LOG = 100_000

OpenStore = Callable[[], Awaitable[UpdateLog]]


@pytest.fixture(params=BACKENDS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    """Opens a store on this test's own storage; calling it again reopens the same data."""
    if request.param == "sqlite":
        path = tmp_path / "data" / "state.db"  # a missing folder: open() creates it
        return lambda: SqliteUpdateLog.open(path)
    raise ValueError(f"unknown backend {request.param}")


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
