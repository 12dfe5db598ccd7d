"""Replication: how this replica's rooms and the other replicas keep each other current.

Out: an outbox (outbox.py) of live messages (Yjs updates, awareness, deletions) and commit
notices, sent by one task in order, a batch per round trip. In: other replicas' live updates
applied to the room (never logged again), their notices (which number what was applied live,
and reveal lost messages), catch-up from the log after a lost message or a reconnection
(requests of one room merged into one read), and presence.
Joins: before a client's join is answered, the room gets what the other replicas holding it
applied (a join barrier, join_barrier.py) and what the log holds that it has not applied.

Rooms are only ever reached through `Room.submit`: a room whose inbox is full makes the
fan-out wait (back-pressure), it never raises into the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from .background import cancel
from .join_barrier import Coalesced, JoinBarriers
from .model import Change, FanoutKind, FanoutMessage, LogEntry, Notice, PanelKey
from .outbox import Outbox
from .ports import Fanout, Subscription, UpdateLog
from .protocol import ProtocolError, decode_awareness, encode_awareness
from .room import Room
from .status import CLOSE_NOT_FOUND

log = logging.getLogger(__name__)

SEEN_REMOTE_LIMIT = 10_000
LIVE_BATCH = 256  # live updates of another replica applied in one transaction, at most
NOTICE_WAIT_SECONDS = 1.0  # how long a read waits for the version of a change seen live
CHANGE_ID_BYTES = 32
CATCH_UP_LIMIT = 100_000
CATCH_UP_CHUNK = 200  # log entries applied per step in the room: other work gets its turns
# A catch-up request: (key, after, until, trigger, when asked); see request_catch_up.
_Request = tuple[PanelKey, int, int | None, str, float]


def pack_update(change_id: str, update: bytes) -> bytes:
    """A live update as it travels between replicas: its change id, then the update."""
    return change_id.encode("ascii") + update


def unpack_update(payload: bytes) -> tuple[str, bytes]:
    return payload[:CHANGE_ID_BYTES].decode("ascii", "replace"), payload[CHANGE_ID_BYTES:]


@dataclass(slots=True)
class _Remote:
    """What replication knows of one attached room."""

    room: Room
    caught_up: int  # every log entry up to here is applied to the doc
    applied: set[int] = field(default_factory=set)  # versions past caught_up applied already
    subscription: Subscription | None = None
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)  # live change ids
    # Changes of other replicas applied live whose notice (their version) has not come yet:
    # change id -> (replica, when applied). A read waits for them (`numbered`).
    unnumbered: dict[str, tuple[str, float]] = field(default_factory=dict)
    numbered: asyncio.Event = field(default_factory=asyncio.Event)
    # What joins wait for, shared by the joins that arrive together (set by attach): a read
    # of the log after `caught_up`, and a join barrier (True: every other holder answered).
    log_reads: Coalesced[None] = field(init=False)
    barriers: Coalesced[bool] = field(init=False)
    # Live updates queued in the room, not applied yet: the next ones join them (up to
    # LIVE_BATCH) and all are applied in one transaction.
    batch: list[FanoutMessage] | None = None


@dataclass(slots=True)
class _Watch:
    """The notice subscription of a workspace, shared by its attached rooms."""

    subscription: Subscription
    rooms: int = 0


class Replication:
    def __init__(self, fanout: Fanout, log_store: UpdateLog, replica_id: str) -> None:
        self.fanout = fanout
        self.log = log_store
        self.replica_id = replica_id
        # Told when another replica deleted a panel held here (the registry unloads it).
        self.on_deleted: Callable[[PanelKey], None] | None = None
        self._attached: dict[PanelKey, _Remote] = {}
        self._watches: dict[str, _Watch] = {}
        self._outbox = Outbox(fanout)
        self._catch_up: asyncio.Queue[_Request] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.joins = JoinBarriers(fanout, replica_id, self._queue_urgent)  # join barriers
        # Told (crdt_state/metrics.py) the seconds between a change made on another replica
        # and its commit notice arriving here, and how long each catch-up took (trigger, s).
        self.observe_lag: Callable[[float], None] | None = None
        self.observe_catch_up: Callable[[str, float], None] | None = None

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._outbox.run(), name="fanout publisher"))
        self._tasks.append(asyncio.create_task(self._catch_up_worker(), name="catch-up"))
        self.fanout.on_replica_lost(self._on_replica_lost)
        self.fanout.on_reconnected(self._on_reconnected)

    async def close(self) -> None:
        await cancel(*self._tasks)
        for remote in self._attached.values():
            await cancel(remote.log_reads.task, remote.barriers.task)
        await self._outbox.send_rest()  # the publisher is gone: send what is left from here

    # -- rooms -----------------------------------------------------------------------------

    async def attach(self, room: Room, caught_up: int) -> None:
        """Start replicating a room that was just loaded from the log up to `caught_up`."""
        remote = self._attached[room.key] = _Remote(room, caught_up)
        remote.numbered.set()
        remote.log_reads = Coalesced(functools.partial(self._read_for_joins, remote), "join read")
        remote.barriers = Coalesced(functools.partial(self.joins.ask, room), "join barrier")
        remote.subscription = await self.fanout.subscribe(
            room.key, functools.partial(self._on_live, room.key)
        )
        await self._watch(room.key.workspace_id)
        # What another replica published between our load and our subscription.
        self.request_catch_up(room.key, caught_up, None, "load")
        # Ask the replicas that hold this panel too for their clients' presence.
        self._queue_live(room.key, FanoutKind.AWARENESS, b"")

    async def detach(self, key: PanelKey) -> None:
        remote = self._attached.pop(key, None)
        if remote is not None:
            await cancel(remote.log_reads.task, remote.barriers.task)
        if remote is not None and remote.subscription is not None:
            await remote.subscription.close()
            await self._unwatch(key.workspace_id)

    async def numbered(self, key: PanelKey) -> None:
        """Wait (at most NOTICE_WAIT_SECONDS: a lost notice is the catch-up's business) for
        the versions of other replicas' changes this room applied live, so that the version a
        read reports covers everything its state holds."""
        remote = self._attached.get(key)
        if remote is None or not remote.unnumbered:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(remote.numbered.wait(), NOTICE_WAIT_SECONDS)
        too_old = time.monotonic() - NOTICE_WAIT_SECONDS
        for change_id, (_, applied) in list(remote.unnumbered.items()):
            if applied <= too_old:
                remote.unnumbered.pop(change_id)
        _check_numbered(remote)

    # -- out -------------------------------------------------------------------------------

    def publish_update(self, change: Change) -> None:
        self._queue_live(
            change.key, FanoutKind.UPDATE, pack_update(change.change_id, change.update)
        )

    def publish_deleted(self, key: PanelKey) -> None:
        self._queue_live(key, FanoutKind.DELETED, b"")

    def publish_awareness(self, key: PanelKey, update: bytes) -> None:
        self._queue_live(key, FanoutKind.AWARENESS, update)

    def publish_notice(self, notice: Notice) -> None:
        """A change of this replica's got its version (it is in the doc already)."""
        remote = self._attached.get(notice.key)
        if remote is not None and notice.epoch == remote.room.epoch:
            _applied(remote, notice.version)
        # Always: JSON subscribers listen for notices even with a single replica.
        self._outbox.put(notice)

    async def current(self, room: Room, within: float) -> None:
        """Before a client joins: a join on any replica gets every update any replica applied
        before it began (not the state of a room behind a burst of another replica's
        updates, nor one without those another replica has not committed yet). Two sources,
        asked at once: the other replicas holding the room (a join barrier: each sends what
        this room lacks, after everything it applied), and the log after what this room
        applied (for replicas that died). The log is waited for unless other replicas hold
        the room and all of them answered. Joins arriving together share both. TimeoutError
        after `within` seconds; what it gave up on goes on for the next joins. With no other
        replica to reach (one process on the local fan-out) there is nothing to wait for."""
        remote = self._attached.get(room.key)
        if remote is None or room.closed:
            return
        asked = time.monotonic()
        # One process on the local fan-out: no other replica can hold the room, nothing to ask.
        if self.fanout.may_reach_others(room.key):
            async with asyncio.timeout(within):
                from_log = remote.log_reads.ask()
                if not await asyncio.shield(remote.barriers.ask()):
                    await asyncio.shield(from_log)
        self._caught_up("join", asked)

    async def _read_for_joins(self, remote: _Remote) -> None:
        room = remote.room
        entries = await self.log.read(room.key, after=remote.caught_up, limit=CATCH_UP_LIMIT)
        for start in range(0, len(entries), CATCH_UP_CHUNK):
            if room.closed:
                return
            await room.call(self._apply_entries, remote, entries[start : start + CATCH_UP_CHUNK])

    def _caught_up(self, trigger: str, asked: float) -> None:
        if self.observe_catch_up is not None:
            self.observe_catch_up(trigger, time.monotonic() - asked)

    def _queue_live(self, key: PanelKey, kind: FanoutKind, payload: bytes) -> None:
        if self.fanout.may_reach_others(key):  # one process: nobody else listens
            self._outbox.put((key, FanoutMessage(kind, payload, self.replica_id)))

    def _queue_urgent(self, key: PanelKey, kind: FanoutKind, payload: bytes) -> None:
        """A live message that needs no order (it carries whole updates): sent first."""
        self._outbox.put((key, FanoutMessage(kind, payload, self.replica_id)), urgent=True)

    async def flush(self) -> None:
        """Wait until every queued message has been handed to the Fanout."""
        await self._outbox.flush()

    # -- in --------------------------------------------------------------------------------

    async def _on_live(self, key: PanelKey, message: FanoutMessage) -> None:
        if message.origin == self.replica_id:
            return
        remote = self._attached.get(key)
        if remote is None or remote.room.closed:
            return
        room = remote.room
        if message.kind == FanoutKind.UPDATE:
            batch = remote.batch
            if batch is not None and len(batch) < LIVE_BATCH:
                batch.append(message)  # applied with those queued before it, in order
                return
            # Queued, never run at once: the next messages the fan-out has already read join
            # it before the room gets to it. A full inbox makes the reader wait.
            remote.batch = batch = [message]
            if not room.post(_apply_live, remote, batch):
                await room.submit(_apply_live, remote, batch)
        elif message.kind == FanoutKind.BARRIER:
            room.post_first(self.joins.answer, room, message)
        elif message.kind == FanoutKind.BARRIER_ANSWER:
            self.joins.receive(message.origin, message.payload)
        elif message.kind == FanoutKind.DELETED:
            await room.submit(self._deleted, room)
            if self.on_deleted is not None:
                self.on_deleted(key)
        elif not message.payload:  # a replica that just opened this panel asks who is here
            await room.submit(self._announce_presence, room)
        else:
            try:
                entries = decode_awareness(message.payload)
            except ProtocolError as exc:
                log.warning(
                    "dropped a malformed awareness message from %s: %s", message.origin, exc
                )
                return
            await room.submit(room.peers.apply_remote_awareness, entries, message.origin)

    @staticmethod
    def _deleted(room: Room) -> None:
        room.deleted = True
        room.peers.close_all(CLOSE_NOT_FOUND, "the panel was deleted")

    def _announce_presence(self, room: Room) -> None:
        present = room.peers.presence.local()
        if present:
            self.publish_awareness(room.key, encode_awareness(present))

    async def _on_notice(self, notice: Notice) -> None:
        if notice.replica == self.replica_id:
            return
        if self.observe_lag is not None:  # wall clocks of two machines: skew clamped at 0
            self.observe_lag(max(0.0, time.time() - notice.occurred_at.timestamp()))
        remote = self._attached.get(notice.key)
        if remote is not None and not remote.room.closed:
            await remote.room.submit(self._numbered, remote, notice)

    def _numbered(self, remote: _Remote, notice: Notice) -> None:
        """In the room: another replica committed a version of this panel. If this room never
        saw that change live (a lost message), it asks for it from the log."""
        if remote.unnumbered.pop(notice.change_id, None) is not None:
            _check_numbered(remote)
        room = remote.room
        if notice.epoch != room.epoch:
            return
        room.advance_to(notice.version)
        if notice.change_id in remote.seen:
            _applied(remote, notice.version)
        else:  # its live frame was lost
            self.request_catch_up(room.key, notice.version - 1, notice.version)

    async def _on_replica_lost(self, replica_id: str) -> None:
        log.info("replica %s is gone: removing its clients' presence", replica_id)
        for remote in list(self._attached.values()):
            if not remote.room.closed:
                await remote.room.submit(self._forget, remote, replica_id)

    def _forget(self, remote: _Remote, replica_id: str) -> None:
        """In the room: no read waits for the versions of a dead replica's changes, and the
        presence of its clients goes."""
        for change_id, (origin, _) in list(remote.unnumbered.items()):
            if origin == replica_id:
                remote.unnumbered.pop(change_id)
        _check_numbered(remote)
        remote.room.peers.forget_replica(replica_id)

    def _on_reconnected(self) -> None:
        log.info("fan-out reconnected: catching up every live room from the log")
        for key, remote in self._attached.items():
            self.request_catch_up(key, remote.caught_up, None, "reconnect")

    # -- catching up from the log ------------------------------------------------------------

    def request_catch_up(
        self, key: PanelKey, after: int, until: int | None, trigger: str = "gap"
    ) -> None:
        """Have a room apply the log entries (after, until] it may have missed (idempotent).
        `trigger` says why (load, gap, reconnect): the catch-up time is observed by it."""
        self._catch_up.put_nowait((key, after, until, trigger, time.monotonic()))

    async def _catch_up_worker(self) -> None:
        while True:
            requests = [await self._catch_up.get()]
            while not self._catch_up.empty():
                requests.append(self._catch_up.get_nowait())
            for request in _merged(requests):
                await self._catch_up_one(request)

    async def _catch_up_one(self, request: _Request) -> None:
        key, after, until, trigger, asked = request
        remote = self._attached.get(key)
        if remote is None or remote.room.closed:
            return
        room = remote.room
        try:
            entries = await self.log.read(key, after=after, until=until, limit=CATCH_UP_LIMIT)
            for start in range(0, len(entries), CATCH_UP_CHUNK):
                chunk = entries[start : start + CATCH_UP_CHUNK]
                await room.submit(self._apply_entries, remote, chunk)
        except Exception as exc:
            log.warning("catching up %s from the log failed: %r; retrying", key, exc)
            await asyncio.sleep(0.5)
            self._catch_up.put_nowait(request)
        else:
            self._caught_up(trigger, asked)

    @staticmethod
    def _apply_entries(remote: _Remote, entries: list[LogEntry]) -> None:
        """In the room: log entries, in order (those applied already change nothing)."""
        room = remote.room
        for entry in entries:
            if entry.epoch == room.epoch and entry.update:
                room.apply_logged(entry.update)
            _applied(remote, entry.version)
            room.advance_to(entry.version)

    # -- notice subscriptions, one per workspace -------------------------------------------

    async def _watch(self, workspace_id: str) -> None:
        watch = self._watches.get(workspace_id)
        if watch is None:
            subscription = await self.fanout.subscribe_notices(workspace_id, self._on_notice)
            watch = self._watches[workspace_id] = _Watch(subscription)
        watch.rooms += 1

    async def _unwatch(self, workspace_id: str) -> None:
        watch = self._watches.get(workspace_id)
        if watch is not None:
            watch.rooms -= 1
            if watch.rooms <= 0:
                del self._watches[workspace_id]
                await watch.subscription.close()


def _apply_live(remote: _Remote, batch: list[FanoutMessage]) -> None:
    """In the room: changes another replica applied and logs, those that came while the
    first waited in the room's inbox with it (a replica behind on a burst catches up in
    transactions of up to LIVE_BATCH updates, not one by one)."""
    if remote.batch is batch:
        remote.batch = None  # what comes next starts another batch
    updates = []
    now = time.monotonic()
    for message in batch:
        change_id, update = unpack_update(message.payload)
        remote.seen[change_id] = None
        remote.unnumbered[change_id] = (message.origin, now)
        updates.append(update)
    while len(remote.seen) > SEEN_REMOTE_LIMIT:
        remote.seen.popitem(last=False)
    while len(remote.unnumbered) > SEEN_REMOTE_LIMIT:
        remote.unnumbered.pop(next(iter(remote.unnumbered)))
    remote.numbered.clear()
    remote.room.apply_logged(*updates)


def _applied(remote: _Remote, version: int) -> None:
    """`version` is in the room's doc: move the watermark past every version that is."""
    if version <= remote.caught_up:
        return
    remote.applied.add(version)
    while remote.caught_up + 1 in remote.applied:
        remote.caught_up += 1
        remote.applied.discard(remote.caught_up)
    if len(remote.applied) > SEEN_REMOTE_LIMIT:  # a gap that never fills: the log will
        remote.applied.clear()


def _merged(requests: list[_Request]) -> list[_Request]:
    """Catch-up requests of one room as one read of the range that spans them (what lies
    between is applied already, or changes nothing): the notices of a burst whose live
    updates this replica missed (it subscribed mid-burst) each ask for their version."""
    merged: dict[PanelKey, _Request] = {}
    for key, after, until, trigger, asked in requests:
        had = merged.get(key)
        if had is not None:
            _, had_after, had_until, trigger, had_asked = had
            after, asked = min(after, had_after), min(asked, had_asked)
            until = None if until is None or had_until is None else max(until, had_until)
        merged[key] = (key, after, until, trigger, asked)
    return list(merged.values())


def _check_numbered(remote: _Remote) -> None:
    if not remote.unnumbered:
        remote.numbered.set()
