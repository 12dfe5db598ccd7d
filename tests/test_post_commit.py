"""One post-commit path: a REST write, a live Yjs update and a restore from Git all reach the
stored view, the hot cache, the commit notices and the other replicas the same way, and the
hot cache is written at most once per version (exactly once, before the answer, for a write
somebody waits for).

Two replicas in this process share one log (SQLite), one in-process fan-out, a real Redis as
their hot cache and real Git repositories; the cache is wrapped only to count its writes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from pycrdt import Doc, Map

from adapters.git import GitSnapshotRepository
from adapters.local import LocalBus, LocalFanout
from adapters.redis import RedisStateCache
from adapters.sqlite import SqliteUpdateLog
from crdt_state.config import Settings
from crdt_state.model import Attribution, CacheEntry, Notice, PanelKey, TriggeredBy
from crdt_state.room import Room
from crdt_state.server import Server

from . import redis_server

WHO = Attribution(TriggeredBy.AI, "test", "agent")
CLIENT = Attribution(TriggeredBy.USER, "yjs", "alice")


class CountingCache:
    """The real Redis cache, with every write counted by (panel, version)."""

    def __init__(self, cache: RedisStateCache) -> None:
        self.cache = cache
        self.writes: Counter[tuple[PanelKey, int]] = Counter()

    async def get(self, key: PanelKey) -> CacheEntry | None:
        return await self.cache.get(key)

    async def put(self, key: PanelKey, entry: CacheEntry, ttl_seconds: int) -> None:
        self.writes[(key, entry.version)] += 1
        await self.cache.put(key, entry, ttl_seconds)

    async def drop(self, key: PanelKey) -> None:
        await self.cache.drop(key)

    async def close(self) -> None:
        await self.cache.close()


@dataclass
class Rig:
    store: SqliteUpdateLog
    cache: CountingCache
    first: Server
    second: Server
    notices: list[Notice]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = await SqliteUpdateLog.open(tmp_path / "log.sqlite3")
    cache = CountingCache(await RedisStateCache.open(redis_server.url()))
    bus = LocalBus()
    settings = Settings(commit_window_ms=1, room_idle_seconds=0, snapshot_interval_seconds=0)
    servers = [
        Server(
            store, LocalFanout(bus), GitSnapshotRepository(tmp_path / "git"), settings, cache=cache
        )
        for _ in range(2)
    ]
    for server in servers:
        server.start(probe_seconds=0)
    notices: list[Notice] = []
    yield Rig(store, cache, servers[0], servers[1], notices)
    for server in servers:
        await server.close()
    await cache.close()
    await store.close()


async def eventually(check: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not true within {timeout} s"
        await asyncio.sleep(0.01)


async def stored_view_version(rig: Rig, key: PanelKey) -> int | None:
    for listing in await rig.store.list_panels(key.workspace_id):
        if listing.panel_id == key.panel_id and listing.view is not None:
            return listing.version
    return None


async def reaches_everything(rig: Rig, key: PanelKey, version: int, state: dict) -> None:
    """The version committed by the first replica is in the hot cache, announced to notice
    subscribers, applied by the second replica, and kept as the stored view."""
    await rig.first.replication.flush()
    assert any(n.key == key and n.version == version for n in rig.notices)
    other = await rig.second.registry.open(key, create=False)
    await eventually(lambda: other.view()["$state"] == state)
    deadline = time.monotonic() + 5
    while (await stored_view_version(rig, key) or 0) < version:
        assert time.monotonic() < deadline, "the stored view did not reach the version"
        await asyncio.sleep(0.02)
    while (cached := await rig.cache.get(key)) is None or cached.version < version:
        assert time.monotonic() < deadline, "the hot cache did not reach the version"
        await asyncio.sleep(0.02)
    assert cached.state["$state"] == state


def live_update(room: Room, key: str, value: int) -> bytes:
    """A Yjs update as a client makes it, against the room's state."""
    doc: Doc = Doc()
    doc.apply_update(room.encode_state())
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    doc.get("$state", type=Map)[key] = value
    return updates[0]


async def test_rest_live_and_restore_take_one_path_and_write_the_cache_once_per_version(
    rig: Rig,
) -> None:
    workspace = f"ws-{uuid.uuid4().hex[:8]}"
    key = PanelKey(workspace, "p")
    await rig.first.fanout.subscribe_notices(workspace, rig.notices.append)
    await rig.second.registry.open(key, create=True, subject="alice")  # held on both replicas

    # A REST write: answered once it is committed and in the hot cache, written there once.
    written = await rig.first.panels.replace(key, {"$state": {"a": 1}}, WHO)
    assert rig.cache.writes[(key, written.version)] == 1  # before the answer, exactly once
    await reaches_everything(rig, key, written.version, {"a": 1})

    # A live update from a Yjs client: nobody waits for it, it reaches the same places.
    room = await rig.first.registry.open(key, create=False)
    change = await room.call(room.apply, live_update(room, "b", 2), object(), CLIENT)
    assert change is not None and change.outcome is not None
    live_version = await change.outcome
    await reaches_everything(rig, key, live_version, {"a": 1, "b": 2})

    # A restore from a Git snapshot: a forward change like any other.
    snapshot = await rig.first.snapshots.create(workspace, subject="agent")
    assert snapshot.git_commit_hash is not None
    await rig.first.panels.replace(key, {"$state": {"c": 3}}, WHO)
    _, restored = await rig.first.snapshots.restore(workspace, snapshot.git_commit_hash, None, WHO)
    restored_version = restored["p"].version
    assert rig.cache.writes[(key, restored_version)] == 1
    await reaches_everything(rig, key, restored_version, {"a": 1, "b": 2})

    await asyncio.sleep(1.2)  # a view save that was still due comes within 1 s
    assert max(rig.cache.writes.values()) == 1, rig.cache.writes  # never twice a version
    assert rig.second.registry.materializer.cache_writes == 0  # one writer: who committed
