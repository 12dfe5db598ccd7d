"""Rooms load on demand, flush before they unload, and leave nothing behind."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
from pycrdt import Array, Doc, Map

from adapters.git import GitSnapshotRepository
from adapters.local import LocalBus, LocalFanout
from adapters.sqlite import SqliteUpdateLog
from crdt_state.config import Settings
from crdt_state.document import PanelDoc
from crdt_state.model import Attribution, PanelKey, TriggeredBy
from crdt_state.protocol import decode_state_vector
from crdt_state.registry import RoomRegistry
from crdt_state.replay import rebuild
from crdt_state.room import Room
from crdt_state.server import Server

WHO = Attribution(TriggeredBy.USER, "t", "alice")


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def live_docs() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, Room | PanelDoc))


def state_vector(doc: Doc) -> dict[int, int]:
    """A doc's state vector as {client: clock} (its encoding has no fixed order)."""
    return decode_state_vector(doc.get_state())


def small_update(key: str, value: int) -> bytes:
    doc = Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    doc.get("$state", type=Map)[key] = value
    return updates[0]


async def start_server(
    tmp_path: Path, store: SqliteUpdateLog, fanout: LocalFanout, checkpoint_every: int = 1000
) -> Server:
    settings = Settings(
        checkpoint_every=checkpoint_every,
        commit_window_ms=1,
        room_idle_seconds=0,
        snapshot_interval_seconds=0,
        rate_panel_creations=0,  # one subject creates thousands of panels here
    )
    server = Server(store, fanout, GitSnapshotRepository(tmp_path / "git"), settings)
    server.start(probe_seconds=0)
    return server


@pytest.fixture
async def registry(tmp_path: Path):
    store = await SqliteUpdateLog.open(tmp_path / "log.sqlite3")
    server = await start_server(tmp_path, store, LocalFanout())
    yield server.registry
    await server.close()
    await store.close()


async def apply(registry: RoomRegistry, room: Room, update: bytes) -> int:
    change = await room.call(room.apply, update, None, WHO)
    assert change is not None
    return await registry.pipeline.acknowledged(room, change)


async def cycle(registry: RoomRegistry, i: int) -> None:
    key = PanelKey("ws", f"panel-{i}")
    room = await registry.open(key, create=True, subject="alice")
    assert await apply(registry, room, small_update("n", i)) == 2
    await registry.evict(key)


async def test_an_evicted_room_has_flushed_its_writes_and_reloads_them(registry):
    key = PanelKey("ws", "p")
    room = await registry.open(key, create=True, subject="alice")
    for i in range(50):
        await room.call(room.apply, small_update(f"k{i}", i), object(), WHO)  # live: no wait
    await registry.evict(key)  # no explicit wait for the 50 commits: eviction must flush
    assert key not in registry.rooms
    reloaded = await registry.open(key, create=False)
    assert reloaded is not room
    state = await reloaded.call(reloaded.state)
    assert state.version == 51
    assert state.view["$state"] == {f"k{i}": i for i in range(50)}


async def test_a_quiet_room_checkpoints_its_doc_and_a_reload_from_it_is_the_same_doc(
    tmp_path, monkeypatch
):
    import crdt_state.materializer as materializer_module

    async def no_replay(*args: object, **kwargs: object) -> None:
        raise AssertionError("a quiet room replayed the log instead of checkpointing its doc")

    monkeypatch.setattr(materializer_module, "write_checkpoint", no_replay)
    store = await SqliteUpdateLog.open(tmp_path / "log.sqlite3")
    server = await start_server(tmp_path, store, LocalFanout(), checkpoint_every=10)
    rooms = server.registry
    key = PanelKey("ws", "p")
    room = await rooms.open(key, create=True, subject="alice")
    for i in range(25):  # one at a time: the room is quiet after each commit
        assert await apply(rooms, room, small_update(f"k{i % 7}", i)) == i + 2
        await room.call(lambda: None)  # a checkpoint the commit queued in the room has run
        materials = rooms.materializer._rooms[key]
        if materials.checkpointing is not None:
            await materials.checkpointing
    loaded = await store.load(key)
    assert loaded is not None and loaded.checkpoint is not None
    assert loaded.checkpoint.version >= 20
    rebuilt = rebuild(loaded)
    live = Doc()
    live.apply_update(room.encode_state())
    assert state_vector(rebuilt) == state_vector(live)  # the same updates, and
    assert PanelDoc(rebuilt).render() == room.view()
    await server.close()
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
    bus = LocalBus()  # two replicas in one process
    servers = [await start_server(tmp_path / str(n), store, LocalFanout(bus)) for n in range(2)]
    key = PanelKey("ws", "shared")
    first = await servers[0].registry.open(key, create=True, subject="alice")
    second = await servers[1].registry.open(key, create=False)
    assert await apply(servers[0].registry, first, small_update("from", 1)) == 2
    await servers[0].replication.flush()
    view = await second.call(second.view)
    assert view["$state"] == {"from": 1}  # the other replica applied it...
    await servers[1].panels.settle(second)
    assert [entry.version for entry in await store.read(key)] == [1, 2]  # ...and did not log it
    for server in servers:
        await server.close()
    await store.close()


@pytest.mark.parametrize("edits", [1, 5, 40, 400])
async def test_the_view_read_after_many_changes_is_the_docs_render(registry, edits):
    """The view catches up when it is read: replaying the changes' patches (a few) or
    rendering afresh (many); either way it is what the doc renders to."""
    key = PanelKey("ws", f"view-{edits}")
    room = await registry.open(key, create=True, subject="alice")
    await room.call(room.view)  # the view exists: the changes below bring it up to date
    client = Doc()
    updates: list[bytes] = []
    client.observe(lambda event: updates.append(event.update))
    state = client.get("$state", type=Map)
    with client.transaction():
        state["rows"] = Array()
        state["cells"] = Map()
    await room.call(room.apply, updates[-1], object(), WHO)
    rows: list[int] = []
    for i in range(edits):
        with client.transaction():
            state["rows"].append(Map({"i": i, "tags": Array([str(i)])}))
            rows.append(i)
            if i % 3 == 2:
                del state["rows"][0]
                del rows[0]
            state["cells"][f"c{i % 5}"] = i
        await room.call(room.apply, updates[-1], object(), WHO)
    view = await room.call(room.view)
    assert [row["i"] for row in view["$state"]["rows"]] == rows
    assert view["$state"]["cells"] == {f"c{i % 5}": i for i in range(edits)}
    live = Doc()
    live.apply_update(await room.call(room.encode_state))
    assert view == PanelDoc(live).render()


async def test_a_small_view_of_a_long_history_is_rendered_afresh_not_replayed(
    registry, monkeypatch
):
    """What the view's catch-up costs follows the view, not the doc's history: a 10-key panel
    overwritten thousands of times (a doc of tens of KB, a view of ~100 bytes) renders in the
    time of a couple of replayed operations, so a read after many changes renders it afresh
    instead of replaying them all."""
    from crdt_state import room as room_module

    key = PanelKey("ws", "long-history")
    room = await registry.open(key, create=True, subject="alice")
    client = Doc()
    updates: list[bytes] = []
    client.observe(lambda event: updates.append(event.update))
    state = client.get("$state", type=Map)
    for i in range(3000):
        state[f"k{i % 10}"] = i
        await room.call(room.apply, updates[-1], object(), WHO)
    assert room.size > 30_000  # the history
    await room.call(room.view)  # rendered: the changes below wait for the next read
    replayed: list[int] = []
    real = room_module._replayed

    def counting(view, patches, key):  # type: ignore[no-untyped-def]
        replayed.append(sum(len(patch) for patch in patches))
        return real(view, patches, key)

    monkeypatch.setattr(room_module, "_replayed", counting)
    for i in range(60):
        state[f"k{i % 10}"] = -i
        await room.call(room.apply, updates[-1], object(), WHO)
    view = await room.call(room.view)
    assert sum(replayed) <= room_module.UNSEEN_OPS_MIN
    assert view["$state"] == {f"k{i}": -(50 + i) for i in range(10)}
    live = Doc()
    live.apply_update(await room.call(room.encode_state))
    assert view == PanelDoc(live).render()
