"""The Redis adapters against a real Redis: delivery, order, malformed frames, lost replicas,
reconnection (a killed connection, and Redis stopped and started for real), and the cache.

Every test uses its own workspace id, so tests never see each other's messages; replica ids
are unique too, since all replicas of all tests share the heartbeat channel.
"""

from __future__ import annotations

import asyncio
import inspect
import statistics
import struct
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from adapters.redis import (
    PACK_BYTES,
    PACK_UPDATES,
    RedisFanout,
    RedisStateCache,
    cache_key,
    decode_frame,
    decode_frames,
    encode_frame,
    encode_packed,
    live_channel,
    notice_channel,
)
from crdt_state.errors import Unavailable
from crdt_state.model import (
    CacheEntry,
    ChangeType,
    FanoutKind,
    FanoutMessage,
    Notice,
    PanelKey,
    TriggeredBy,
)

from . import redis_server

HEARTBEAT = 0.1
LOST_AFTER = 0.5
WAIT = 5.0  # the longest any expected delivery may take before a test fails

Opener = Callable[..., Awaitable[RedisFanout]]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = WAIT) -> None:
    """Wait until check() (sync or async) is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await _holds(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        await asyncio.sleep(0.005)


async def _holds(check: Callable[[], bool | Awaitable[bool]]) -> bool:
    result = check()
    return bool(await result) if inspect.isawaitable(result) else bool(result)


def update(payload: bytes, origin: str) -> FanoutMessage:
    return FanoutMessage(FanoutKind.UPDATE, payload, origin)


def notice(workspace: str, version: int, change_type: ChangeType = ChangeType.UPDATED) -> Notice:
    return Notice(
        PanelKey(workspace, "p"),
        version,
        "e1",
        change_type,
        None,
        TriggeredBy.USER,
        None,
        None,
        datetime(2026, 1, 1, tzinfo=UTC),
        f"{version:032x}",
        "replica",
    )


def entry(version: int) -> CacheEntry:
    return CacheEntry(version, "e1", {"$state": {"a": [1, "é"]}}, datetime(2026, 1, 1, tzinfo=UTC))


@pytest.fixture
async def admin() -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url())
    yield client
    await client.aclose()


@pytest.fixture
async def open_fanout() -> AsyncIterator[Opener]:
    """Opens fan-outs with short heartbeats; closes them all at the end."""
    opened: list[RedisFanout] = []

    async def opener(replica_id: str | None = None) -> RedisFanout:
        fanout = await RedisFanout.open(
            redis_server.url(),
            replica_id or unique("replica"),
            heartbeat_seconds=HEARTBEAT,
            lost_after_seconds=LOST_AFTER,
        )
        opened.append(fanout)
        return fanout

    yield opener
    for fanout in opened:
        await fanout.close()


@pytest.fixture
def key() -> PanelKey:
    return PanelKey(unique("ws"), "panel-1")


# -- names and frames ----------------------------------------------------------------------


def test_channel_names() -> None:
    assert live_channel(PanelKey("ws", "p")) == "crdt:live:ws:p"
    assert notice_channel("ws") == "state-updates:ws"
    assert cache_key(PanelKey("ws", "p")) == "state:ws:p"
    # Ids holding ':' (or the escape character) never share a channel.
    names = {
        live_channel(PanelKey(workspace, panel))
        for workspace, panel in [("a:b", "c"), ("a", "b:c"), ("a%3Ab", "c"), ("a", "b%3Ac")]
    }
    assert len(names) == 4


def test_frame_round_trip() -> None:
    codes = set()
    for kind in FanoutKind:
        message = FanoutMessage(kind, b"\x00payload\xff", "réplica-1")
        frame = encode_frame(message)
        assert frame[0] != 0 and frame[1] == len("réplica-1".encode())
        codes.add(frame[0])
        assert decode_frame(frame) == message
    assert len(codes) == len(FanoutKind)  # one code per kind
    assert decode_frame(encode_frame(FanoutMessage(FanoutKind.DELETED, b"", "r"))).payload == b""
    with pytest.raises(ValueError):
        encode_frame(update(b"", "x" * 256))


def test_packed_frames_round_trip_and_reject_overruns() -> None:
    payloads = [b"", b"a", b"\x00" * 70_000, b"last"]
    frame = encode_packed("réplica", payloads)
    assert decode_frames(frame) == [update(p, "réplica") for p in payloads]
    assert decode_frames(encode_frame(update(b"one", "r"))) == [update(b"one", "r")]
    for cut in (len(frame) - 1, len(frame) - len(b"last") - 2):  # inside an update, a length
        with pytest.raises(ValueError):
            decode_frames(frame[:cut])


# -- delivery ------------------------------------------------------------------------------


async def test_thousand_frames_arrive_in_order(open_fanout: Opener, key: PanelKey) -> None:
    a, b = await open_fanout(), await open_fanout()
    latencies: list[float] = []
    received: list[int] = []

    def on_frame(message: FanoutMessage) -> None:
        assert message.origin == b.replica_id and message.kind == FanoutKind.UPDATE
        number, sent_at = struct.unpack(">Id", message.payload)
        latencies.append(time.perf_counter() - sent_at)
        received.append(number)

    await a.subscribe(key, on_frame)
    started = time.perf_counter()
    for number in range(1000):
        stamped = update(struct.pack(">Id", number, time.perf_counter()), b.replica_id)
        await b.publish_all([(key, stamped)])
    await eventually(lambda: len(received) >= 1000)
    elapsed = time.perf_counter() - started
    assert received == list(range(1000))
    assert statistics.median(latencies) < 0.05, f"median latency {statistics.median(latencies)}"
    assert elapsed < 15, f"1,000 frames took {elapsed:.2f} s"  # lenient: CI machines are busy


async def test_own_frames_come_back_with_own_origin(open_fanout: Opener, key: PanelKey) -> None:
    a = await open_fanout()
    received: list[FanoutMessage] = []
    await a.subscribe(key, received.append)
    sent = [
        FanoutMessage(FanoutKind.UPDATE, b"u", a.replica_id),
        FanoutMessage(FanoutKind.AWARENESS, b"aw", a.replica_id),
        FanoutMessage(FanoutKind.DELETED, b"", a.replica_id),
    ]
    for message in sent:
        await a.publish_all([(key, message)])
    await eventually(lambda: len(received) == 3)
    assert received == sent  # the core filters by origin; the transport delivers everything


async def test_notices_arrive_in_order_as_notices(open_fanout: Opener) -> None:
    a, b = await open_fanout(), await open_fanout()
    workspace = unique("ws")
    received: list[Notice] = []
    await a.subscribe_notices(workspace, received.append)
    other: list[Notice] = []
    await a.subscribe_notices(unique("ws"), other.append)
    sent = [notice(workspace, n) for n in range(200)]
    for item in sent:
        await b.publish_all([item])
    await eventually(lambda: len(received) == 200)
    assert received == sent and other == []


async def test_a_published_batch_arrives_in_order_on_both_streams(open_fanout: Opener) -> None:
    a, b = await open_fanout(), await open_fanout()
    workspace = unique("ws")
    key = PanelKey(workspace, "p")
    arrived: list[Any] = []  # one list: the order across the two streams is kept too
    await a.subscribe(key, arrived.append)
    await a.subscribe_notices(workspace, arrived.append)
    batch: list[Any] = []
    for n in range(50):
        batch.append((key, update(struct.pack(">I", n), b.replica_id)))
        batch.append(notice(workspace, n))
    await b.publish_all(batch)
    await eventually(lambda: len(arrived) == 100)
    assert arrived == [item if isinstance(item, Notice) else item[1] for item in batch]


async def test_a_burst_travels_packed_and_arrives_whole_in_order(
    open_fanout: Opener, admin: Redis
) -> None:
    """Consecutive updates of one panel and origin in one batch go as a few Redis messages
    (at most PACK_UPDATES or PACK_BYTES each); a notice, another panel or another kind
    between them ends a run. Subscribers see every update, in order, as if sent alone."""
    a, b = await open_fanout(), await open_fanout()
    workspace = unique("ws")
    key, other = PanelKey(workspace, "p"), PanelKey(workspace, "q")
    arrived: list[Any] = []
    await a.subscribe(key, arrived.append)
    await a.subscribe(other, arrived.append)
    await a.subscribe_notices(workspace, arrived.append)
    raw = admin.pubsub()  # what travels on the wire for `key`
    await raw.subscribe(live_channel(key))
    await raw.get_message(timeout=WAIT)  # the subscribe confirmation
    big = b"\xee" * (PACK_BYTES // 2)
    batch: list[Any] = [(key, update(struct.pack(">I", n), b.replica_id)) for n in range(600)]
    batch += [(key, update(big + bytes([n]), b.replica_id)) for n in range(3)]  # 2 frames
    batch += [notice(workspace, 1), (key, update(b"after notice", b.replica_id))]
    batch += [(other, update(b"q", b.replica_id)), (key, update(b"back", b.replica_id))]
    batch += [(key, FanoutMessage(FanoutKind.AWARENESS, b"aw", b.replica_id))]
    batch += [(key, update(b"other origin", a.replica_id)), (key, update(b"z", b.replica_id))]
    await b.publish_all(batch)
    await eventually(lambda: len(arrived) == len(batch))
    assert arrived == [item if isinstance(item, Notice) else item[1] for item in batch]
    frames = []
    while (message := await raw.get_message(timeout=1)) is not None:
        frames.append(message["data"])
    await raw.aclose()
    # 600 small and 3 of half PACK_BYTES: 256, 256, 88 + the first big, then one per big
    # one; then one frame each for the rest (each ends a run or is alone in its own).
    assert [len(decode_frames(f)) for f in frames] == [PACK_UPDATES, 256, 89, 1, 1] + [1] * 5


async def test_notice_channel_is_readable_by_outsiders(open_fanout: Opener, admin: Redis) -> None:
    a = await open_fanout()
    workspace = unique("ws")
    outsider = admin.pubsub()
    await outsider.subscribe(f"state-updates:{workspace}")
    assert (await outsider.get_message(timeout=WAIT) or {})["type"] == "subscribe"
    await a.publish_all([notice(workspace, 1, ChangeType.DELETED)])
    message = await outsider.get_message(timeout=WAIT)
    await outsider.aclose()
    assert message is not None and orjson.loads(message["data"])["type"] == "state_deleted"


async def test_colliding_ids_stay_apart(open_fanout: Opener) -> None:
    a = await open_fanout()
    workspace = unique("ws")
    first, second = PanelKey(f"{workspace}:b", "c"), PanelKey(workspace, "b:c")
    to_first: list[FanoutMessage] = []
    to_second: list[FanoutMessage] = []
    await a.subscribe(first, to_first.append)
    await a.subscribe(second, to_second.append)
    await a.publish_all([(first, update(b"1", "x"))])
    await a.publish_all([(second, update(b"2", "x"))])
    await eventually(lambda: len(to_first) == 1 and len(to_second) == 1)
    assert to_first[0].payload == b"1" and to_second[0].payload == b"2"


async def test_several_callbacks_and_unsubscribe(
    open_fanout: Opener, key: PanelKey, admin: Redis
) -> None:
    a, b = await open_fanout(), await open_fanout()
    first: list[FanoutMessage] = []
    second: list[FanoutMessage] = []
    subscription_1 = await a.subscribe(key, first.append)
    subscription_2 = await a.subscribe(key, second.append)
    await b.publish_all([(key, update(b"both", b.replica_id))])
    await eventually(lambda: len(first) == 1 and len(second) == 1)

    await subscription_1.close()
    await subscription_1.close()  # idempotent
    await b.publish_all([(key, update(b"second only", b.replica_id))])
    await eventually(lambda: len(second) == 2)
    await subscription_2.close()
    channel = live_channel(key)

    async def unsubscribed() -> bool:
        return int((await admin.pubsub_numsub(channel))[0][1]) == 0

    await eventually(unsubscribed)  # the last close unsubscribed the channel
    await b.publish_all([(key, update(b"nobody", b.replica_id))])
    await asyncio.sleep(0.2)
    assert [m.payload for m in first] == [b"both"]
    assert [m.payload for m in second] == [b"both", b"second only"]


async def test_malformed_messages_are_dropped(
    open_fanout: Opener, key: PanelKey, admin: Redis
) -> None:
    a = await open_fanout()
    frames: list[FanoutMessage] = []
    notices: list[Notice] = []
    await a.subscribe(key, frames.append)
    await a.subscribe_notices(key.workspace_id, notices.append)
    channel = live_channel(key)
    for bad in [b"", b"\x01", b"\x09\x01xpayload", b"\x01\x09short", b"\x01\x02\xff\xfe", b"\x00"]:
        await admin.publish(channel, bad)
    await admin.publish(notice_channel(key.workspace_id), b"{not json")
    await admin.publish(notice_channel(key.workspace_id), b"[1, 2]")
    await admin.publish(notice_channel(key.workspace_id), b'{"type": "state_update"}')
    await a.publish_all([(key, update(b"fine", "x"))])
    fine = notice(key.workspace_id, 7)
    await a.publish_all([fine])
    await eventually(lambda: len(frames) == 1 and len(notices) == 1)
    assert frames[0].payload == b"fine" and notices == [fine]
    assert a.dropped == 9


async def test_failing_callback_does_not_stop_delivery(open_fanout: Opener, key: PanelKey) -> None:
    a = await open_fanout()
    received: list[bytes] = []

    def explode(message: FanoutMessage) -> None:
        raise RuntimeError("subscriber bug")

    async def slow(message: FanoutMessage) -> None:
        await asyncio.sleep(0.001)  # awaited before the next message is handed out
        received.append(message.payload)

    await a.subscribe(key, explode)
    await a.subscribe(key, slow)
    for number in range(20):
        await a.publish_all([(key, update(bytes([number]), "x"))])
    await eventually(lambda: len(received) == 20)
    assert received == [bytes([number]) for number in range(20)]


# -- replicas ------------------------------------------------------------------------------


async def test_replica_lost_once_and_never_while_heartbeating(open_fanout: Opener) -> None:
    a = await open_fanout()
    b_id = unique("b")
    b, c = await open_fanout(b_id), await open_fanout()
    ours = {a.replica_id, b_id, c.replica_id}
    lost: list[str] = []  # other tests' replicas share the channel: keep only ours
    a.on_replica_lost(lambda replica: lost.append(replica) if replica in ours else None)

    await eventually(lambda: {b_id, c.replica_id} <= a.peers)
    await asyncio.sleep(4 * LOST_AFTER)
    assert lost == []  # heartbeating replicas are never lost, and a never reports itself

    await b.close()
    closed_at = time.monotonic()
    await eventually(lambda: lost != [])
    assert time.monotonic() - closed_at <= LOST_AFTER + HEARTBEAT + 0.3
    await asyncio.sleep(2 * LOST_AFTER)
    assert lost == [b_id]  # once per loss

    b_again = await open_fanout(b_id)  # heard again: tracked anew, lost anew
    await eventually(lambda: b_id in a.peers)
    await b_again.close()
    await eventually(lambda: lost == [b_id, b_id])


async def test_frames_count_as_signs_of_life(open_fanout: Opener, key: PanelKey) -> None:
    a = await open_fanout()
    await a.subscribe(key, lambda message: None)
    silent_id = unique("silent")  # publishes frames, never a heartbeat
    await a.publish_all([(key, update(b"", silent_id))])
    await eventually(lambda: silent_id in a.peers)


# -- reconnection --------------------------------------------------------------------------


async def test_reconnects_after_connection_killed(
    open_fanout: Opener, key: PanelKey, admin: Redis
) -> None:
    a, b = await open_fanout(), await open_fanout()
    received: list[bytes] = []
    reconnected = asyncio.Event()
    a.on_reconnected(reconnected.set)
    await a.subscribe(key, lambda message: received.append(message.payload))

    await admin.client_kill_filter(_type="pubsub")
    await asyncio.wait_for(reconnected.wait(), WAIT)
    assert a.reconnects >= 1
    for number in range(10):
        await b.publish_all([(key, update(bytes([number]), b.replica_id))])
    await eventually(lambda: len(received) == 10)
    await asyncio.sleep(0.1)
    assert received == [bytes([number]) for number in range(10)]  # re-subscribed once


async def test_hung_redis(open_fanout: Opener, key: PanelKey, admin: Redis) -> None:
    """Redis accepts connections but answers nothing (CLIENT PAUSE): publishing gives up after
    its socket timeout, the silent connection is replaced, and nobody is reported lost."""
    a, b = await open_fanout(), await open_fanout()
    lost: list[str] = []
    a.on_replica_lost(lambda replica: lost.append(replica) if replica == b.replica_id else None)
    reconnected = asyncio.Event()
    a.on_reconnected(reconnected.set)
    received: list[bytes] = []
    await a.subscribe(key, lambda message: received.append(message.payload))
    await eventually(lambda: b.replica_id in a.peers)

    await admin.execute_command("CLIENT", "PAUSE", 2500, "ALL")
    await assert_unavailable_quickly(b.publish_all([(key, update(b"lost", b.replica_id))]))
    await asyncio.wait_for(reconnected.wait(), WAIT)
    await b.publish_all([(key, update(b"after", b.replica_id))])
    await eventually(lambda: b"after" in received)
    await asyncio.sleep(LOST_AFTER)
    assert lost == []


async def test_redis_restart(open_fanout: Opener, key: PanelKey) -> None:
    """Redis stopped for real: publishing fails fast, the cache misses without raising, and
    once Redis is back both replicas reconnect, re-subscribe and deliver again."""
    a, b = await open_fanout(), await open_fanout()
    cache = await RedisStateCache.open(redis_server.url())
    lost: list[str] = []
    a.on_replica_lost(lambda replica: lost.append(replica) if replica == b.replica_id else None)
    reconnected = {a.replica_id: asyncio.Event(), b.replica_id: asyncio.Event()}
    for fanout in (a, b):
        fanout.on_reconnected(reconnected[fanout.replica_id].set)
    received: list[bytes] = []
    await a.subscribe(key, lambda message: received.append(message.payload))
    await cache.put(key, entry(1), 60)

    with redis_server.stopped():
        await assert_unavailable_quickly(b.publish_all([(key, update(b"lost", b.replica_id))]))
        await assert_unavailable_quickly(b.publish_all([notice(key.workspace_id, 1)]))
        await assert_unavailable_quickly(RedisFanout.open(redis_server.url(), unique("r")))
        assert await cache.get(key) is None and cache.errors == 1
        await cache.put(key, entry(2), 60)
        await cache.drop(key)
        late_key = PanelKey(key.workspace_id, "subscribed-while-down")
        late: list[bytes] = []
        await a.subscribe(late_key, lambda message: late.append(message.payload))

    for event in reconnected.values():
        await asyncio.wait_for(event.wait(), WAIT)
    await b.publish_all([(key, update(b"after", b.replica_id))])
    await b.publish_all([(late_key, update(b"late", b.replica_id))])
    await eventually(lambda: received == [b"after"] and late == [b"late"])
    assert await cache.get(key) is None  # Redis came back empty
    await cache.close()
    assert lost == []  # a deaf replica reports nobody lost


async def assert_unavailable_quickly(operation: Awaitable[Any]) -> None:
    started = time.monotonic()
    with pytest.raises(Unavailable):
        await operation
    assert time.monotonic() - started < 2.0


# -- the cache -----------------------------------------------------------------------------


async def test_cache_put_get_drop(key: PanelKey, admin: Redis) -> None:
    cache = await RedisStateCache.open(redis_server.url())
    stored = entry(3)
    assert await cache.get(key) is None and (cache.hits, cache.misses) == (0, 1)

    await cache.put(key, stored, 30)
    name = f"state:{key.workspace_id}:{key.panel_id}"
    # The design document's shape (Redis Schema), read by other services.
    assert orjson.loads(await admin.get(name)) == {
        "$state": {"a": [1, "é"]},
        "_meta": {"version": 3, "updated_at": "2026-01-01T00:00:00+00:00", "epoch": "e1"},
    }
    assert 0 < await admin.ttl(name) <= 30
    assert await cache.get(key) == stored and cache.hits == 1

    await cache.drop(key)
    assert await admin.exists(name) == 0 and await cache.get(key) is None
    await cache.put(key, stored, 0)  # no lifetime: not cached
    assert await admin.exists(name) == 0
    await admin.set(name, b"{not json", ex=30)  # someone else's garbage is a miss
    assert await cache.get(key) is None and cache.misses == 3
    await admin.set(name, b'{"version": "x"}', ex=30)  # and so is an entry of another shape
    assert await cache.get(key) is None and cache.misses == 4
    await cache.drop(key)
    await cache.close()


async def test_cache_entry_expires(key: PanelKey) -> None:
    cache = await RedisStateCache.open(redis_server.url())
    await cache.put(key, entry(1), 1)
    assert await cache.get(key) == entry(1)
    await asyncio.sleep(1.2)
    assert await cache.get(key) is None
    await cache.close()
