"""A join on any replica gets every update any replica applied before it began.

Two real replicas on PostgreSQL + Redis, real y-websocket clients. A client on the first
writes 20,000 updates as fast as it can; the second replica applies them live and falls behind
in the burst, and the first one's log lags behind what it applied (its commits are slow on
purpose in some tests). Joiners on both replicas must hold, at the moment their provider
reports synced, every update applied before they began: the log gives what was committed,
the join barrier (crdt_state/join_barrier.py) what the other replicas holding the room applied.
CRDT_STATE_JOIN_RUNS=20 repeats the first test 20 times (the issue's acceptance: 20 of 20);
the suite runs it once.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pycrdt import Doc, Map

from adapters.git import GitSnapshotRepository
from adapters.local import LocalBus, LocalFanout
from adapters.sqlite import SqliteUpdateLog
from crdt_state.config import Settings
from crdt_state.join_barrier import ANSWER_PART_BYTES
from crdt_state.model import Attribution, FanoutMessage, PanelKey, TriggeredBy
from crdt_state.room import Room
from crdt_state.server import Server

from . import redis_server
from .conftest import token
from .pg import logged_version
from .server import ServerProcess
from .yjs_client import YjsClient, YjsClients

RUNS = int(os.environ.get("CRDT_STATE_JOIN_RUNS", "1"))
UPDATES = int(os.environ.get("CRDT_STATE_JOIN_UPDATES", "20000"))
JOINERS = 20
SYNC_WITHIN = 10.0  # seconds for every joiner to sync
SLOW_COMMITS = {"CRDT_STATE_COMMIT_WINDOW_MS": "3000"}  # the log lags what the replica applied

Start = Callable[..., list[ServerProcess]]


@pytest.fixture
async def start(clean_pg: str, tmp_path: Path) -> AsyncIterator[Start]:
    """start(env_a, env_b, ...): one replica per settings given, on one log and one Redis."""
    base = {
        "DATABASE_URL": clean_pg,
        "REDIS_URL": redis_server.url(),
        "CRDT_STATE_RATE_YJS_UPDATES": "0",  # the writer bursts on purpose
    }
    started: list[ServerProcess] = []

    def start(*envs: dict[str, str]) -> list[ServerProcess]:
        for env in envs:
            folder = tmp_path / f"replica{len(started)}"
            started.append(ServerProcess(folder, env={**base, **env}).start())
        return started[-len(envs) :]

    yield start
    for process in started:
        process.stop()


@pytest.fixture
async def replicas(start: Start) -> list[ServerProcess]:
    return start({}, {})


def names() -> tuple[str, str, dict[str, str]]:
    ws = f"join{uuid.uuid4().hex[:8]}"  # Redis channels are shared: one workspace per test
    # Admin: the writer marks the end of its burst in $computed (a tiny root to wait on).
    return ws, "cold", {"token": token("writer", {ws: "admin"})}


async def committed_version(server: ServerProcess, ws: str, panel: str) -> int:
    headers = {"Authorization": f"Bearer {token('reader', {ws: 'read'})}"}
    async with httpx.AsyncClient(headers=headers, timeout=10) as http:
        answer = await http.get(f"{server.http}/api/state/{ws}/{panel}")
        return int(answer.json()["version"]) if answer.status_code == 200 else 0


async def wait_committed(server: ServerProcess, ws: str, panel: str, version: int) -> None:
    deadline = time.monotonic() + 120
    while await committed_version(server, ws, panel) < version:
        assert time.monotonic() < deadline, "the burst was not committed in time"
        await asyncio.sleep(0.1)  # polling another process's log: no event to await


async def burst_applied(node: YjsClients, writer: str, watcher: YjsClient, mark: int) -> None:
    """`UPDATES` updates from `writer`, then the mark `$computed.burst = mark`; returns once
    `watcher` (a client of the writer's replica) has it: that replica applied the whole burst
    (it applies a client's updates in order)."""
    await node.burst(writer, UPDATES, prefix=f"b{mark}k")
    await node.set(writer, ["$computed", "burst"], mark)
    await watcher.wait_for(["$computed", "burst"], mark, within=120)


async def join_all(
    node: YjsClients | list[YjsClients],
    servers: list[ServerProcess],
    ws: str,
    panel: str,
    params: dict[str, str],
    within: float = SYNC_WITHIN,
) -> list[tuple[int | None, float]]:
    """JOINERS clients at once, split over `servers` (and over Node processes when given
    several: joiner n in the n-th one, round robin): (keys at sync, seconds to sync) each."""
    nodes = node if isinstance(node, list) else [node]

    async def join(n: int) -> tuple[int | None, float]:
        started = time.monotonic()
        client = await nodes[n % len(nodes)].connect(
            f"joiner{n}",
            servers[n % len(servers)].yjs_url(ws),
            panel,
            params=params,
            within=within,
        )
        return client.keys_at_sync, time.monotonic() - started

    return await asyncio.gather(*(join(n) for n in range(JOINERS)))


@pytest.mark.parametrize("run", range(RUNS))
async def test_joins_on_both_replicas_get_every_committed_update_at_sync(
    replicas: list[ServerProcess], run: int
) -> None:
    first, second = replicas
    ws, panel, params = names()
    async with YjsClients() as node:
        await node.connect("holder", second.yjs_url(ws), panel, params=params)
        await node.connect("writer", first.yjs_url(ws), panel, params=params)
        await node.burst("writer", UPDATES)
        await wait_committed(first, ws, panel, 1 + UPDATES)
        joined = await join_all(node, replicas, ws, panel, params)
    keys = [count for count, _ in joined]
    assert keys == [UPDATES] * JOINERS, f"keys at sync: {keys}"
    assert max(took for _, took in joined) < SYNC_WITHIN


async def test_a_join_gets_what_another_replica_applied_and_has_not_committed(
    start: Start, clean_pg: str
) -> None:
    """The first replica's commits wait 3 s; the second does not hold the panel (it loads it
    from the log for the join, after the first one published its live updates)."""
    first, second = start(SLOW_COMMITS, {})
    ws, panel, params = names()
    async with YjsClients() as node:
        writer = await node.connect("writer", first.yjs_url(ws), panel, params=params)
        watcher = await node.connect("watcher", first.yjs_url(ws), panel, params=params)
        for n in range(3):
            await writer.set(["$state", f"k{n}"], n)
        await watcher.wait_for(["$state", "k2"], 2)  # the first replica applied all three
        assert await logged_version(clean_pg, ws, panel) == 1  # only the panel's creation
        joiner = await node.connect("joiner", second.yjs_url(ws), panel, params=params)
        assert joiner.keys_at_sync == 3
        assert await logged_version(clean_pg, ws, panel) == 1, "committed before the join"


async def test_joins_during_a_burst_get_every_update_applied_before_they_began(
    start: Start,
) -> None:
    """The second replica holds the panel and lags behind the burst; the first one's log lags
    behind what it applied. Joiners on both start as soon as the first applied the burst."""
    replicas = start(SLOW_COMMITS, {})
    first, second = replicas
    ws, panel, params = names()
    async with YjsClients() as node:
        await node.connect("holder", second.yjs_url(ws), panel, params=params)
        await node.connect("writer", first.yjs_url(ws), panel, params=params)
        watcher = await node.connect("watcher", first.yjs_url(ws), panel, params=params)
        await burst_applied(node, "writer", watcher, 1)
        joined = await join_all(node, replicas, ws, panel, params)
    keys = [count for count, _ in joined]
    assert keys == [UPDATES] * JOINERS, f"keys at sync: {keys}"
    assert max(took for _, took in joined) < SYNC_WITHIN


async def test_joins_right_after_bursts_on_one_room_finish_their_sync(
    replicas: list[ServerProcess],
) -> None:
    """The issue's repeated W4 on one room: a burst through the first replica and, right
    after its last update was sent, 20 joiners over both replicas (the second loads the room
    mid-burst); then the same again. Every joiner syncs within SYNC_WITHIN. (On the second
    replica they used to take 10 to 30 s and more the second time: the first burst had left
    that room's log watermark far behind, each joiner read the log again from there, ten such
    reads at once held the connection pool, and a read cancelled at the join's bound held its
    connection until the query ended. Later, on a loaded machine, joins took 5 to 18 s and
    one on the second replica was served a stale state, 1 run in 3: the first replica's loop
    ran the writer's burst without a turn for its fan-out reader, so the join barrier's
    question and answer queued behind thousands of messages and the join fell back to the
    log. With one core kept busy they now sync in 0.2 to 5 s.) The joiners of each replica
    live in a Node process of their own, as browsers would: joined mid-burst, each applies
    the rest of the burst live: one process for all 22 clients once answered nothing for
    13 s with one core kept busy, the servers having served every join (most likely out of
    CPU: 10 joiners each applying thousands of live updates, 20 syncing 40,000 keys)."""
    first = replicas[0]
    ws, panel, params = names()
    async with YjsClients() as node, YjsClients() as even, YjsClients() as odd:
        await node.connect("writer", first.yjs_url(ws), panel, params=params)
        watcher = await node.connect("watcher", first.yjs_url(ws), panel, params=params)
        rounds = []
        for mark in (1, 2):
            await node.burst("writer", UPDATES, prefix=f"b{mark}k")
            await node.set("writer", ["$computed", "burst"], mark)
            rounds.append(await join_all([even, odd], replicas, ws, panel, params))
            for n in range(JOINERS):
                await (even, odd)[n % 2].destroy(f"joiner{n}")
            await watcher.wait_for(["$computed", "burst"], mark, within=120)
    took = [[round(seconds, 1) for _, seconds in joined] for joined in rounds]
    assert max(max(seconds) for seconds in took) < SYNC_WITHIN, f"seconds: {took}"
    keys = [count or 0 for count, _ in rounds[1]]  # the first burst was applied before
    assert min(keys) >= UPDATES, f"keys at sync: {keys}"


@pytest.fixture
async def in_process(tmp_path: Path) -> AsyncIterator[tuple[Server, Server, SqliteUpdateLog]]:
    """Two replicas in this process on one log and one in-process bus; the first one's
    commits wait 2 s."""
    store = await SqliteUpdateLog.open(tmp_path / "log.sqlite3")
    bus = LocalBus()
    servers = [
        Server(
            store,
            LocalFanout(bus),
            GitSnapshotRepository(tmp_path / f"git{window}"),
            Settings(commit_window_ms=window, room_idle_seconds=0, snapshot_interval_seconds=0),
        )
        for window in (2_000, 1)
    ]
    for server in servers:
        server.start(probe_seconds=0)
    yield servers[0], servers[1], store
    for server in servers:
        await server.close()
    await store.close()


async def applied_uncommitted(
    server: Server, panel: str, fill: Callable[[Map], None]
) -> tuple[PanelKey, Room, bytes]:
    """A new panel on `server`, and one client update to it (`fill` writes its `$state`),
    applied by the room and not committed yet (the fixture's first replica waits 2 s)."""
    key = PanelKey(f"ws{uuid.uuid4().hex[:8]}", panel)
    room = await server.registry.open(key, create=True, subject="alice")
    doc: Doc = Doc()
    doc.apply_update(room.encode_state())
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    with doc.transaction():
        fill(doc.get("$state", type=Map))
    client = Attribution(TriggeredBy.USER, "yjs", "alice")
    await room.call(room.apply, updates[0], object(), client)
    return key, room, updates[0]


BACKLOG = 600  # queued steps of 2 ms: 1.2 s of work, inside BARRIER_SECONDS


async def test_a_join_barrier_is_answered_ahead_of_the_holders_backlog(
    in_process: tuple[Server, Server, SqliteUpdateLog],
) -> None:
    """The first replica applied a client's update (not committed: its commits wait 2 s), then
    its room got a backlog of queued work. A join on the second asks what its room lacks: the
    first answers ahead of the backlog (Actor.post_first), so the join has the update while
    the backlog is still being worked off; behind it, the join would wait for all of it (and
    past BARRIER_SECONDS go without the update)."""
    first, second, _ = in_process

    def fill(values: Map) -> None:
        values["applied"] = "not committed"

    key, room, _ = await applied_uncommitted(first, "busy", fill)

    drained: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def busy(step: int) -> None:
        time.sleep(0.002)  # work of the room's own: the room's task is busy, not waiting
        if step == BACKLOG - 1:
            drained.set_result(time.monotonic())

    answered: list[float] = []
    answer = first.replication.joins.answer

    def timed_answer(holder: Room, message: FanoutMessage) -> None:
        answered.append(time.monotonic())
        answer(holder, message)

    first.replication.joins.answer = timed_answer  # type: ignore[method-assign,assignment]
    assert all(room.post(busy, step) for step in range(BACKLOG))

    other = await second.registry.open(key, create=False)
    await second.replication.current(other, 5.0)
    state = await other.call(other.view)
    assert state["$state"] == {"applied": "not committed"}
    assert answered, "the first replica never answered the barrier"
    assert not drained.done(), "the join waited for the holder's backlog"
    assert answered[0] < await drained


async def test_a_large_answer_to_a_join_barrier_comes_in_bounded_parts(
    in_process: tuple[Server, Server, SqliteUpdateLog],
) -> None:
    """The first replica applied (and has not committed) a client's update of about 2 MiB;
    a join on the second gets it, sent as several wire messages of at most
    ANSWER_PART_BYTES (and their header)."""
    first, second, store = in_process

    def fill(values: Map) -> None:
        for n in range(20_000):
            values[f"k{n}"] = f"{n:0100d}"

    key, _, update = await applied_uncommitted(first, "big", fill)
    assert len(update) > 3 * ANSWER_PART_BYTES
    assert [entry.version for entry in await store.read(key)] == [1]  # not committed

    sizes: list[int] = []
    publish_all = first.fanout.publish_all

    async def measured(batch: Any) -> None:
        sizes.extend(len(item[1].payload) for item in batch if not hasattr(item, "version"))
        await publish_all(batch)

    first.fanout.publish_all = measured  # type: ignore[method-assign]
    other = await second.registry.open(key, create=False)
    await second.replication.current(other, 5.0)
    state = await other.call(other.view)
    assert len(state["$state"]) == 20_000
    assert len(sizes) >= 4 and max(sizes) <= ANSWER_PART_BYTES + 64, sizes
