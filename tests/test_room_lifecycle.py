"""Rooms load on demand, flush before they unload, and leave nothing behind."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
from pycrdt import Doc, Map

from adapters.local import LocalFanout
from adapters.sqlite import SqliteUpdateLog
from crdt_state.committer import Committer
from crdt_state.document import PanelDoc
from crdt_state.ports import PanelKey
from crdt_state.protocol import read_var_uint
from crdt_state.registry import RoomRegistry
from crdt_state.replay import rebuild
from crdt_state.room import Room, RoomSettings


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def live_docs() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, Room | PanelDoc))


def state_vector(doc: Doc) -> dict[int, int]:
    """A doc's state vector as {client: clock} (its encoding has no fixed order)."""
    encoded = doc.get_state()
    count, pos = read_var_uint(encoded, 0)
    vector = {}
    for _ in range(count):
        client, pos = read_var_uint(encoded, pos)
        vector[client], pos = read_var_uint(encoded, pos)
    return vector


def small_update(key: str, value: int) -> bytes:
    doc = Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    doc.get("$state", type=Map)[key] = value
    return updates[0]


@pytest.fixture
async def registry(tmp_path: Path):
    store = await SqliteUpdateLog.open(tmp_path / "log.sqlite3")
    committer = Committer(store, window_seconds=0.001)
    committer.start()
    rooms = RoomRegistry(
        store,
        LocalFanout(),
        committer,
        settings=RoomSettings(checkpoint_every=1000),
        idle_seconds=0,
    )
    rooms.start()
    yield rooms
    await rooms.close()
    await committer.close()
    await store.close()


async def cycle(registry: RoomRegistry, i: int) -> None:
    key = PanelKey("ws", f"panel-{i}")
    room = await registry.open(key, create=True, subject="alice")
    future = await room.call(room.apply_update, small_update("n", i), None, trigger_source="test")
    assert await future == 2
    await registry.evict(key)


async def test_an_evicted_room_has_flushed_its_writes_and_reloads_them(registry):
    key = PanelKey("ws", "p")
    room = await registry.open(key, create=True, subject="alice")
    for i in range(50):
        await room.call(room.apply_update, small_update(f"k{i}", i), None, trigger_source="t")
    await registry.evict(key)  # no explicit wait for the 50 commits: eviction must flush
    assert key not in registry.rooms
    reloaded = await registry.open(key, create=False)
    assert reloaded is not room
    view, version, _ = await reloaded.call(reloaded.view)
    assert version == 51
    assert view["$state"] == {f"k{i}": i for i in range(50)}


async def test_a_quiet_room_checkpoints_its_doc_and_a_reload_from_it_is_the_same_doc(
    tmp_path, monkeypatch
):
    import crdt_state.room as room_module

    async def no_replay(*args: object, **kwargs: object) -> None:
        raise AssertionError("a quiet room replayed the log instead of checkpointing its doc")

    monkeypatch.setattr(room_module, "write_checkpoint", no_replay)
    store = await SqliteUpdateLog.open(tmp_path / "log.sqlite3")
    committer = Committer(store, window_seconds=0.001)
    committer.start()
    rooms = RoomRegistry(
        store, LocalFanout(), committer, settings=RoomSettings(checkpoint_every=10), idle_seconds=0
    )
    rooms.start()
    key = PanelKey("ws", "p")
    room = await rooms.open(key, create=True, subject="alice")
    for i in range(25):  # one at a time: the room is quiet after each commit
        future = await room.call(
            room.apply_update, small_update(f"k{i % 7}", i), None, trigger_source="t"
        )
        assert await future == i + 2
        if room._checkpointing is not None:
            await room._checkpointing
    loaded = await store.load(key)
    assert loaded is not None and loaded.checkpoint is not None
    assert loaded.checkpoint.version >= 20
    rebuilt = rebuild(loaded)
    live = room.panel.doc
    assert state_vector(rebuilt) == state_vector(live)  # the same updates, and
    assert PanelDoc(rebuilt).render() == room.panel.render()
    await rooms.close()
    await committer.close()
    await store.close()


async def test_two_thousand_rooms_open_and_close_without_memory_growth(registry):
    for i in range(300):  # warm-up: allocator pools, SQLite cache, imports
        await cycle(registry, i)
    gc.collect()
    baseline = rss_mib()
    alive_before = live_docs()
    for i in range(300, 2300):
        await cycle(registry, i)
    gc.collect()
    grown = rss_mib() - baseline
    assert not registry.rooms
    assert live_docs() == alive_before  # (other tests' objects may linger; none of ours)
    # Each room held a doc, an observer and a task; 2,000 leaked rooms would be far above this.
    assert grown < 12, f"RSS grew {grown:.1f} MiB over 2,000 rooms"


async def test_two_replicas_on_one_fanout_apply_each_others_changes_without_relogging(tmp_path):
    store = await SqliteUpdateLog.open(tmp_path / "shared.sqlite3")
    bus = LocalFanout()
    committer = Committer(store, window_seconds=0.001)
    committer.start()
    replicas = [RoomRegistry(store, bus, committer, idle_seconds=0) for _ in range(2)]
    for replica in replicas:
        replica.start()
    key = PanelKey("ws", "shared")
    first = await replicas[0].open(key, create=True, subject="alice")
    second = await replicas[1].open(key, create=False)
    future = await first.call(first.apply_update, small_update("from", 1), None, trigger_source="t")
    assert await future == 2
    await replicas[0].flush_fanout()
    view, _, _ = await second.call(second.view)
    assert view["$state"] == {"from": 1}  # the other replica applied it...
    await second.settle()
    assert [entry.version for entry in await store.read(key)] == [1, 2]  # ...and did not log it
    for replica in replicas:
        await replica.close()
    await committer.close()
    await store.close()
