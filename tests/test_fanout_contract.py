"""The Fanout contract (crdt_state/ports.py), run against every fan-out.

Each test runs on `local` (adapters.local.LocalFanout: one per replica, on one LocalBus shared
by the replicas of the process) and on `redis` (adapters.redis.RedisFanout: one connection per
replica, against the real Redis of tests/redis_server.py). To add a transport, add its name
to ADAPTERS and a branch to `transport`; every test runs on it.

Redis is shared with other suites, so every test uses its own workspace ids and replica ids.
A test that checks that something did NOT arrive first waits for a marker the same replica
published after it (the first publish_all awaited before the second): both transports keep
that order, so once the marker is in, anything published before it would be too.

"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from adapters.local import LocalBus, LocalFanout
from adapters.redis import RedisFanout
from crdt_state.errors import Unavailable
from crdt_state.model import (
    ChangeType,
    FanoutKind,
    FanoutMessage,
    Notice,
    PanelKey,
    TriggeredBy,
)
from crdt_state.ports import Fanout, Outgoing, Subscription

from . import redis_server

ADAPTERS = ["local", "redis"]
HEARTBEAT = 0.1
LOST_AFTER = 0.5
WAIT = 5.0  # the longest any expected delivery may take before a test fails
LIVE_WITHIN = 2.0  # a subscription must deliver what follows it well within this

Opener = Callable[..., Awaitable[Fanout]]


@dataclass(frozen=True, slots=True)
class Transport:
    """One Fanout implementation, as the tests see it."""

    name: str
    open: Opener  # open(replica_id=None): the fan-out of one more replica
    # One process: may_reach_others knows every listener, and no replica is ever lost.
    single_process: bool
    # What publish_all does after close(): "raises" (Unavailable) or "ignored".
    after_close: str


@pytest.fixture(params=ADAPTERS)
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    """Opens replicas' fan-outs on one transport; closes them all at the end."""
    if request.param == "local":
        bus = LocalBus()
        opened_local: list[LocalFanout] = []

        async def open_local(replica_id: str | None = None) -> Fanout:
            fanout = LocalFanout(bus)  # one per replica, on the bus of the process
            opened_local.append(fanout)
            return fanout

        yield Transport("local", open_local, single_process=True, after_close="ignored")
        for fanout in opened_local:
            await fanout.close()
    elif request.param == "redis":
        opened: list[RedisFanout] = []

        async def open_redis(replica_id: str | None = None) -> Fanout:
            fanout = await RedisFanout.open(
                redis_server.url(),
                replica_id or unique("replica"),
                heartbeat_seconds=HEARTBEAT,
                lost_after_seconds=LOST_AFTER,
            )
            opened.append(fanout)
            return fanout

        yield Transport("redis", open_redis, single_process=False, after_close="raises")
        for fanout in opened:
            await fanout.close()
    else:
        raise ValueError(f"unknown transport {request.param}")


only_redis = pytest.mark.parametrize("transport", ["redis"], indirect=True)


# -- helpers -------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def eventually(check: Callable[[], bool], timeout: float = WAIT) -> None:
    """Wait until check() is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        await asyncio.sleep(0.005)


def live(payload: bytes, kind: FanoutKind = FanoutKind.UPDATE, origin: str = "r") -> FanoutMessage:
    return FanoutMessage(kind, payload, origin)


def notice(
    workspace: str,
    version: int,
    change_type: ChangeType = ChangeType.UPDATED,
    panel: str = "p",
) -> Notice:
    return Notice(
        PanelKey(workspace, panel),
        version,
        "epoch-1",
        change_type,
        None,
        TriggeredBy.USER,
        None,
        None,
        datetime(2026, 1, 1, tzinfo=UTC),
        f"{version:032x}",
        "replica",
    )


class Inbox:
    """What one callback received, in order; `take` is the sync callback, `atake` async."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def take(self, item: Any) -> None:
        self.items.append(item)

    async def atake(self, item: Any) -> None:
        await asyncio.sleep(0)  # a real suspension: the transport must await it
        self.items.append(item)

    def payloads(self) -> list[bytes]:
        return [item.payload for item in self.items]


async def close_all(subscriptions: Sequence[Subscription]) -> None:
    for subscription in subscriptions:
        await subscription.close()


# -- live messages -------------------------------------------------------------------------


async def test_a_live_message_reaches_every_subscriber_of_its_panel_and_no_other(
    transport: Transport,
) -> None:
    a, b, c = await transport.open(), await transport.open(), await transport.open()
    workspace = unique("ws")
    panel = PanelKey(workspace, "panel:1")
    # Keys a careless channel name would mix up with `panel`: a prefix, an extension, the same
    # text once joined with ':' (or with ':' escaped), the same panel id in another workspace.
    others = [
        PanelKey(workspace, "panel"),
        PanelKey(workspace, "panel:1:x"),
        PanelKey(f"{workspace}:panel", "1"),
        PanelKey(workspace, "panel%3A1"),
        PanelKey(f"{workspace}%3Apanel", "1"),
        PanelKey(unique("ws"), "panel:1"),
    ]
    subscribers = {name: Inbox() for name in ("a", "b", "c")}
    for fanout, name in ((a, "a"), (b, "b"), (c, "c")):
        await fanout.subscribe(panel, subscribers[name].take)
    bystanders = {key: Inbox() for key in others}
    for key, inbox in bystanders.items():
        await c.subscribe(key, inbox.take)

    sent = [
        live(bytes(range(256))),
        live(b"", FanoutKind.AWARENESS, origin="réplica-ü"),
        live(b"gone", FanoutKind.DELETED),
    ]
    await a.publish_all([(panel, message) for message in sent])
    markers = [live(f"marker {n}".encode()) for n in range(len(others))]
    await a.publish_all(list(zip(others, markers, strict=True)))

    await eventually(lambda: all(inbox.items for inbox in bystanders.values()))
    await eventually(lambda: all(len(inbox.items) >= 3 for inbox in subscribers.values()))
    for name, inbox in subscribers.items():
        assert inbox.items == sent, name  # every subscriber, each message once, as sent
    for (key, inbox), marker in zip(bystanders.items(), markers, strict=True):
        assert inbox.items == [marker], key  # nothing of `panel` reached another panel


async def test_a_counted_message_says_how_many_other_replicas_hold_its_panel(
    transport: Transport,
) -> None:
    """What a join barrier relies on: the count of the other replicas subscribed to the panel
    (the publisher's own subscription left out), and every one of them gets the message."""
    a, b, c = await transport.open(), await transport.open(), await transport.open()
    panel = PanelKey(unique("ws"), "p")
    assert await a.publish_counted(panel, live(b"nobody")) == 0
    own = Inbox()
    await a.subscribe(panel, own.take)
    assert await a.publish_counted(panel, live(b"only me")) == 0
    holders = {name: Inbox() for name in ("b", "c")}
    await b.subscribe(panel, holders["b"].take)
    await c.subscribe(panel, holders["c"].take)
    await c.subscribe(PanelKey(unique("ws"), "p"), Inbox().take)  # another panel: not counted
    barrier = live(b"barrier", FanoutKind.BARRIER, origin="a")
    assert await a.publish_counted(panel, barrier) == 2
    await eventually(lambda: all(inbox.items for inbox in holders.values()))
    for name, inbox in holders.items():
        assert inbox.items == [barrier], name


# -- notices -------------------------------------------------------------------------------


async def test_notices_reach_their_workspace_subscribers_as_equal_notices_and_no_other(
    transport: Transport,
) -> None:
    a, b = await transport.open(), await transport.open()
    workspace = unique("ws")
    sent = [
        Notice(
            PanelKey(workspace, "panel:ü"),
            7,
            "epoch-é",
            ChangeType.UPDATED,
            [{"op": "add", "path": "/a~1b", "value": {"x": [1, "é", None, 2.5, True]}}],
            TriggeredBy.AI,
            "agent:7",
            "alice",
            datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=timezone(timedelta(hours=2))),
            "c0ffee",
            "replica-9",
        ),
        notice(workspace, 8, ChangeType.DELETED, panel="other"),
        notice(workspace, 9, ChangeType.REVERTED),
    ]
    first, second, third = Inbox(), Inbox(), Inbox()
    await a.subscribe_notices(workspace, first.take)
    await b.subscribe_notices(workspace, second.take)
    await b.subscribe_notices(workspace, third.atake)
    # Other workspaces (one a prefix of this one), and the live stream of this workspace.
    other_workspaces = [unique("ws"), workspace[:-1], f"{workspace}x"]
    bystanders = {name: Inbox() for name in other_workspaces}
    for name, inbox in bystanders.items():
        await a.subscribe_notices(name, inbox.take)
    panel_inbox = Inbox()
    await a.subscribe(PanelKey(workspace, "panel:ü"), panel_inbox.take)

    await b.publish_all(sent)
    markers = [notice(name, 1) for name in other_workspaces]
    await b.publish_all(markers)
    await b.publish_all([(PanelKey(workspace, "panel:ü"), live(b"marker"))])

    await eventually(lambda: all(len(inbox.items) >= 3 for inbox in (first, second, third)))
    await eventually(lambda: all(inbox.items for inbox in bystanders.values()))
    await eventually(lambda: bool(panel_inbox.items))
    for inbox in (first, second, third):
        assert inbox.items == sent
        assert all(type(item) is Notice for item in inbox.items)
    for inbox, marker in zip(bystanders.values(), markers, strict=True):
        assert inbox.items == [marker]
    assert panel_inbox.items == [live(b"marker")]  # notices never go down the live stream


# -- order ---------------------------------------------------------------------------------


async def test_one_batch_of_live_messages_and_notices_arrives_as_one_ordered_sequence(
    transport: Transport,
) -> None:
    a, b = await transport.open(), await transport.open()
    workspace = unique("ws")
    key, elsewhere = PanelKey(workspace, "p"), PanelKey(workspace, "q")
    arrived: list[Any] = []  # one list for both streams: their relative order counts
    await a.subscribe(key, arrived.append)
    await a.subscribe_notices(workspace, arrived.append)
    batch: list[Outgoing] = []
    for n in range(60):
        batch.append((key, live(n.to_bytes(2, "big"))))
        if n % 3 == 0:
            batch.append(notice(workspace, n))
        if n % 4 == 0:
            batch.append((elsewhere, live(b"not subscribed")))
        if n % 5 == 0:
            batch.append((key, live(b"", FanoutKind.AWARENESS)))
    expected = [
        item if isinstance(item, Notice) else item[1]
        for item in batch
        if isinstance(item, Notice) or item[0] == key
    ]
    await b.publish_all(batch)
    await eventually(lambda: len(arrived) >= len(expected))
    assert arrived == expected


# -- subscriptions -------------------------------------------------------------------------


async def test_several_callbacks_on_one_topic_all_receive_and_closing_one_stops_only_it(
    transport: Transport,
) -> None:
    a, b = await transport.open(), await transport.open()
    workspace = unique("ws")
    key = PanelKey(workspace, "p")
    sync_a, async_a, other_a, on_b = Inbox(), Inbox(), Inbox(), Inbox()
    closing = await a.subscribe(key, sync_a.take)
    staying = [
        await a.subscribe(key, async_a.atake),
        await a.subscribe(key, other_a.take),
        await b.subscribe(key, on_b.take),
    ]
    notices_1, notices_2 = Inbox(), Inbox()
    closing_notices = await a.subscribe_notices(workspace, notices_1.take)
    staying_notices = await b.subscribe_notices(workspace, notices_2.atake)
    everyone = (sync_a, async_a, other_a, on_b)

    await b.publish_all([(key, live(b"1")), notice(workspace, 1)])
    await eventually(lambda: all(inbox.items for inbox in everyone))
    await eventually(lambda: bool(notices_1.items and notices_2.items))

    await closing.close()
    await closing.close()  # idempotent
    await closing_notices.close()
    await closing_notices.close()
    await b.publish_all([(key, live(b"2")), notice(workspace, 2)])
    await eventually(lambda: all(len(inbox.items) == 2 for inbox in everyone[1:]))
    await eventually(lambda: len(notices_2.items) == 2)
    assert sync_a.payloads() == [b"1"]
    assert [inbox.payloads() for inbox in everyone[1:]] == [[b"1", b"2"]] * 3
    assert [n.version for n in notices_1.items] == [1]
    assert [n.version for n in notices_2.items] == [1, 2]

    # Every subscription of the topic closed: nothing more; subscribed again: delivered again.
    await close_all([*staying, staying_notices])
    await b.publish_all([(key, live(b"3")), notice(workspace, 3)])
    again = Inbox()
    await a.subscribe(key, again.take)
    await b.publish_all([(key, live(b"4"))])
    await eventually(lambda: bool(again.items))
    assert again.payloads() == [b"4"]
    assert [inbox.payloads() for inbox in everyone] == [[b"1"]] + [[b"1", b"2"]] * 3
    assert len(notices_2.items) == 2


async def test_subscribe_returns_once_the_subscription_is_live(transport: Transport) -> None:
    a, b = await transport.open(), await transport.open()
    for n in range(20):
        workspace = unique("ws")
        key = PanelKey(workspace, f"p{n}")
        messages, notices = Inbox(), Inbox()
        await a.subscribe(key, messages.take)
        await b.publish_all([(key, live(b"right after"))])  # no wait in between
        await a.subscribe_notices(workspace, notices.take)
        await b.publish_all([notice(workspace, n)])
        await eventually(lambda: bool(messages.items and notices.items), LIVE_WITHIN)  # noqa: B023

    # Two callbacks subscribing to a new topic at once: both are live when both returned.
    key = PanelKey(unique("ws"), "together")
    first, second = Inbox(), Inbox()
    await asyncio.gather(a.subscribe(key, first.take), a.subscribe(key, second.take))
    await b.publish_all([(key, live(b"both"))])
    await eventually(lambda: bool(first.items and second.items), LIVE_WITHIN)


# -- callbacks -----------------------------------------------------------------------------


async def test_slow_async_callbacks_are_awaited_in_order_and_nothing_is_lost(
    transport: Transport,
) -> None:
    """Back-pressure, not drops: a callback that sleeps delays what follows on its subscription;
    every message still arrives, once, in order, and the callback never runs twice at once."""
    a, b = await transport.open(), await transport.open()
    key = PanelKey(unique("ws"), "p")
    received: list[int] = []
    running = 0
    most_running = 0

    async def slow(message: FanoutMessage) -> None:
        nonlocal running, most_running
        running += 1
        most_running = max(most_running, running)
        number = int.from_bytes(message.payload, "big")
        if number % 10 == 0:
            await asyncio.sleep(0.02)  # slower than the publisher
        else:
            await asyncio.sleep(0)
        received.append(number)
        running -= 1

    await a.subscribe(key, slow)
    for number in range(100):  # one by one...
        await b.publish_all([(key, live(number.to_bytes(2, "big")))])
    for start in range(100, 200, 20):  # ...and in batches
        await b.publish_all([(key, live(n.to_bytes(2, "big"))) for n in range(start, start + 20)])
    await eventually(lambda: len(received) >= 200)
    await asyncio.sleep(0.05)  # nothing more comes (no duplicate)
    assert received == list(range(200))
    assert most_running == 1  # awaited in order: never entered again before it returned


class SubscriberBug(Exception):
    """What the broken callbacks of the test below raise."""


async def test_a_raising_callback_stops_neither_other_subscribers_nor_later_messages(
    transport: Transport,
) -> None:
    a, b = await transport.open(), await transport.open()
    workspace = unique("ws")
    key = PanelKey(workspace, "p")

    def explode(item: object) -> None:
        raise SubscriberBug("sync subscriber bug")

    async def explode_later(item: object) -> None:
        await asyncio.sleep(0)
        raise SubscriberBug("async subscriber bug")

    same_replica, other_replica, notices = Inbox(), Inbox(), Inbox()
    await a.subscribe(key, explode)
    await a.subscribe(key, same_replica.take)
    await a.subscribe(key, explode_later)
    await b.subscribe(key, other_replica.take)
    await a.subscribe_notices(workspace, explode)
    await a.subscribe_notices(workspace, notices.take)

    first: list[Outgoing] = [(key, live(bytes([n]))) for n in range(10)]
    await b.publish_all([*first, notice(workspace, 1)])
    await b.publish_all([(key, live(b"later")), notice(workspace, 2)])
    expected = [bytes([n]) for n in range(10)] + [b"later"]
    await eventually(lambda: len(same_replica.items) >= 11 and len(other_replica.items) >= 11)
    await eventually(lambda: len(notices.items) >= 2)
    assert same_replica.payloads() == expected
    assert other_replica.payloads() == expected
    assert [n.version for n in notices.items] == [1, 2]


# -- may_reach_others ----------------------------------------------------------------------


async def test_may_reach_others_is_true_whenever_another_replica_listens(
    transport: Transport,
) -> None:
    """The publisher holds the panel (its own subscription, as the core does). False would let
    it skip publishing: only allowed when no other replica could hear the message."""
    a, b = await transport.open(), await transport.open()
    workspace = unique("ws")
    key = PanelKey(workspace, "p")
    own, theirs = Inbox(), Inbox()
    await a.subscribe(key, own.take)
    if transport.single_process:  # it knows its listeners: alone, it says so
        assert a.may_reach_others(key) is False

    theirs_subscription = await b.subscribe(key, theirs.take)
    assert a.may_reach_others(key) is True
    assert b.may_reach_others(key) is True
    # A neighbouring key with a listener changes nothing for `key` (checked when exact).
    await b.subscribe(PanelKey(workspace, "p:2"), Inbox().take)
    await b.subscribe(PanelKey(f"{workspace}:p", "2"), Inbox().take)
    assert a.may_reach_others(key) is True
    # True is true: the message does reach the other replica.
    await a.publish_all([(key, live(b"heard"))])
    await eventually(lambda: bool(theirs.items))
    assert theirs.payloads() == [b"heard"]

    await theirs_subscription.close()
    if transport.single_process:
        assert a.may_reach_others(key) is False  # the other replica left
        assert a.may_reach_others(PanelKey(workspace, "p:2")) is True  # b still listens there
    else:
        assert a.may_reach_others(key) is True  # cannot know who listens: always True


async def test_may_reach_others_is_true_for_a_publisher_that_does_not_hold_the_panel(
    transport: Transport,
) -> None:
    a, b = await transport.open(), await transport.open()
    key = PanelKey(unique("ws"), "p")
    theirs = Inbox()
    await b.subscribe(key, theirs.take)
    reaches = a.may_reach_others(key)
    await a.publish_all([(key, live(b"heard"))])
    await eventually(lambda: bool(theirs.items))  # it does reach another replica...
    assert reaches is True  # ...so "could it?" must not be answered False


# -- lost replicas and reconnection --------------------------------------------------------


async def test_replica_lost_and_reconnected_callbacks_are_accepted(
    transport: Transport,
) -> None:
    a_id, b_id = unique("a"), unique("b")
    a, b = await transport.open(a_id), await transport.open(b_id)
    lost: list[str] = []
    reconnected: list[str] = []

    def ours(replica_id: str) -> bool:
        # Redis' heartbeat channel is shared with other tests' replicas; Local has no other.
        return transport.single_process or replica_id in (a_id, b_id)

    async def lost_async(replica_id: str) -> None:
        if ours(replica_id):
            lost.append(replica_id)

    for fanout in (a, b):
        fanout.on_replica_lost(lambda r: lost.append(r) if ours(r) else None)
        fanout.on_replica_lost(lost_async)
        fanout.on_reconnected(lambda: reconnected.append("sync"))

        async def reconnected_async() -> None:
            reconnected.append("async")

        fanout.on_reconnected(reconnected_async)

    key = PanelKey(unique("ws"), "p")
    inbox = Inbox()
    subscription = await a.subscribe(key, inbox.take)
    await b.publish_all([(key, live(b"1"))])
    await eventually(lambda: bool(inbox.items))
    await subscription.close()
    await asyncio.sleep(3 * LOST_AFTER if not transport.single_process else 0.05)
    assert lost == []  # nobody who keeps heart-beating is ever reported lost
    if transport.single_process:
        await a.close()
        await asyncio.sleep(0.05)
        assert (lost, reconnected) == ([], [])  # one process: nothing to lose or reconnect
    # (Redis' reconnection is tested in test_redis_adapter.py: other suites kill and restart
    # Redis connections at any time, so it is not asserted absent here.)


@only_redis
async def test_a_replica_that_stops_heart_beating_is_reported_lost_once(
    transport: Transport,
) -> None:
    a = await transport.open(unique("a"))
    assert isinstance(a, RedisFanout)  # a.peers (who it hears from) is beyond the port
    b_id, c_id = unique("b"), unique("c")
    b = await transport.open(b_id)
    await transport.open(c_id)  # keeps heart-beating until the end
    ours = {a.replica_id, b_id, c_id}
    lost: list[str] = []
    lost_async: list[str] = []

    async def on_lost(replica_id: str) -> None:
        await asyncio.sleep(0)
        if replica_id in ours:
            lost_async.append(replica_id)

    a.on_replica_lost(lambda replica_id: lost.append(replica_id) if replica_id in ours else None)
    a.on_replica_lost(on_lost)
    await eventually(lambda: {b_id, c_id} <= a.peers)

    await b.close()
    closed_at = time.monotonic()
    await eventually(lambda: bool(lost and lost_async))
    assert time.monotonic() - closed_at < LOST_AFTER + HEARTBEAT + 1.0
    await asyncio.sleep(2 * LOST_AFTER)
    assert lost == [b_id] and lost_async == [b_id]  # once; c keeps beating, a never reports itself
    assert c_id in a.peers


# -- closing -------------------------------------------------------------------------------


async def test_publishing_after_close_raises_unavailable_or_does_nothing_but_never_hangs(
    transport: Transport,
) -> None:
    a, b = await transport.open(), await transport.open()
    workspace = unique("ws")
    key = PanelKey(workspace, "p")
    listener = Inbox()
    await b.subscribe(key, listener.take)
    await b.subscribe_notices(workspace, listener.take)

    await asyncio.wait_for(a.close(), WAIT)
    await asyncio.wait_for(a.close(), WAIT)  # closing twice is fine
    outcomes = []
    for batch in ([(key, live(b"after close"))], [notice(workspace, 1)], []):
        try:
            await asyncio.wait_for(a.publish_all(batch), WAIT)  # never hangs
        except Unavailable:
            outcomes.append("raises")
        else:
            outcomes.append("ignored")
    assert outcomes == [transport.after_close] * 3
    await asyncio.sleep(0.1)
    assert listener.items == []  # whatever it did, nothing was delivered


# -- subscriptions and re-entrant publishing ------------------------------------------------


async def test_each_subscription_of_the_same_callable_is_its_own(transport: Transport) -> None:
    a = await transport.open()
    workspace = unique("ws")
    key, witness_key = PanelKey(workspace, "p"), PanelKey(workspace, "witness")
    inbox, witness = Inbox(), Inbox()
    first = await a.subscribe(key, inbox.take)  # equal bound methods: the same callable
    await a.subscribe(key, inbox.take)
    await a.subscribe(witness_key, witness.take)

    async def publish(payload: bytes) -> None:  # and wait until it must have arrived
        await a.publish_all([(key, live(payload))])
        await a.publish_all([(witness_key, live(payload))])
        await eventually(lambda: witness.payloads()[-1:] == [payload])

    await publish(b"1")
    assert inbox.payloads() == [b"1", b"1"]  # once per subscription
    await first.close()
    await publish(b"2")
    assert inbox.payloads() == [b"1", b"1", b"2"]  # the other subscription goes on


async def test_a_subscription_closed_during_a_delivery_gets_nothing_more(
    transport: Transport,
) -> None:
    a = await transport.open()
    key = PanelKey(unique("ws"), "p")
    inboxes = {"x": Inbox(), "y": Inbox()}
    subscriptions: dict[str, Subscription] = {}

    def closing_the_other(name: str, other: str) -> Callable[[FanoutMessage], Awaitable[None]]:
        async def callback(message: FanoutMessage) -> None:
            inboxes[name].take(message)
            await subscriptions[other].close()  # whichever runs first closes the other

        return callback

    subscriptions["x"] = await a.subscribe(key, closing_the_other("x", "y"))
    subscriptions["y"] = await a.subscribe(key, closing_the_other("y", "x"))
    await a.publish_all([(key, live(b"1"))])
    await a.publish_all([(key, live(b"2"))])
    await eventually(lambda: sum(len(inbox.items) for inbox in inboxes.values()) >= 2)
    await asyncio.sleep(0.05)
    assert sorted(inbox.payloads() for inbox in inboxes.values()) == [[], [b"1", b"2"]]


async def test_a_message_published_from_a_callback_comes_after_the_one_being_delivered(
    transport: Transport,
) -> None:
    a, b = await transport.open(), await transport.open()
    key = PanelKey(unique("ws"), "p")
    inboxes = {"x": Inbox(), "y": Inbox()}

    def answering(name: str, fanout: Fanout) -> Callable[[FanoutMessage], Awaitable[None]]:
        async def callback(message: FanoutMessage) -> None:
            inboxes[name].take(message)
            if message.payload == b"question":
                await fanout.publish_all([(key, live(f"answer {name}".encode()))])

        return callback

    await a.subscribe(key, answering("x", a))
    await b.subscribe(key, answering("y", b))
    await a.publish_all([(key, live(b"question"))])
    await eventually(lambda: all(len(inbox.items) >= 3 for inbox in inboxes.values()))
    for inbox in inboxes.values():
        assert inbox.payloads()[0] == b"question"
        assert sorted(inbox.payloads()[1:]) == [b"answer x", b"answer y"]
