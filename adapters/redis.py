"""Fanout and StateCache on Redis: what lets several replicas serve the same panels.

Pub/Sub, not Streams: Redis is never the only copy of anything. The log (PostgreSQL) is the
truth and a replica that missed messages catches up from it by version, so the fan-out only
needs the lowest latency, and Pub/Sub gives that with no backlog to trim or replay.

Each replica keeps one pub/sub connection for all its channels, read by one task that hands
messages to callbacks in arrival order, and a pool for publishing. When the pub/sub connection
drops it reconnects with back-off, subscribes again and calls `on_reconnected` (rooms then
catch up from the log). Replicas heartbeat on `crdt:replicas`; one silent for too long is
reported lost so its clients' presence can go.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any, TypeVar

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from crdt_state.errors import Unavailable
from crdt_state.model import CacheEntry, FanoutKind, FanoutMessage, Notice, PanelKey
from crdt_state.ports import FanoutCallback, NoticeCallback, Outgoing

log = logging.getLogger(__name__)

REPLICAS_CHANNEL = b"crdt:replicas"
LIVE_PREFIX = "crdt:live:"
NOTICE_PREFIX = "state-updates:"  # the seed's channel: external consumers read it as is
CACHE_PREFIX = "state:"

# Frame kinds on the wire; 0 is left unused so a zeroed frame is never valid.
_KIND_CODES = {
    FanoutKind.UPDATE: 1,
    FanoutKind.AWARENESS: 2,
    FanoutKind.DELETED: 3,
    FanoutKind.BARRIER: 4,
    FanoutKind.BARRIER_ANSWER: 5,
}
_KINDS = {code: kind for kind, code in _KIND_CODES.items()}
_MAX_ORIGIN_BYTES = 255  # the origin's length is one byte
# Consecutive updates of one panel and origin in one publishing round trip travel as one
# frame: a run of (4-byte big-endian length, update payload). A burst of 20,000 updates was
# 20,000 messages that every replica holding the panel, its sender included (Pub/Sub echoes),
# read one by one, and a join barrier's question and answer queued behind them for seconds.
_PACKED_CODE = 6
PACK_UPDATES = 256  # updates per packed frame at most
PACK_BYTES = 512 * 1024  # payload bytes per packed frame at most (a larger update goes alone)
_LENGTH = struct.Struct(">I")

BACKOFF_FIRST_SECONDS = 0.05
BACKOFF_MAX_SECONDS = 2.0

# What a lost or unreachable Redis raises: redis-py's errors, socket errors, and our own
# read deadline (asyncio's TimeoutError).
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

AnyCallback = Callable[..., Awaitable[None] | None]
T = TypeVar("T")


class FrameError(ValueError):
    """A live frame that cannot be decoded."""


class SilentConnection(ConnectionError):
    """The pub/sub connection delivered nothing, not even our own heartbeat or an answer to
    PING, for too long."""


def _escape(part: str) -> str:
    # '%' first, so an escaped ':' can never be read back as anything else.
    return part.replace("%", "%25").replace(":", "%3A")


def live_channel(key: PanelKey) -> str:
    """`crdt:live:{workspace}:{panel}`, with '%' and ':' in ids percent-escaped: ids holding
    ':' ('a:b' + 'c' against 'a' + 'b:c') cannot share a channel."""
    return f"{LIVE_PREFIX}{_escape(key.workspace_id)}:{_escape(key.panel_id)}"


def notice_channel(workspace_id: str) -> str:
    """`state-updates:{workspace}`, exactly (one variable part after a fixed prefix)."""
    return f"{NOTICE_PREFIX}{workspace_id}"


def cache_key(key: PanelKey) -> str:
    """`state:{workspace}:{panel}`, exactly: the seed's key, read by other services."""
    return f"{CACHE_PREFIX}{key.workspace_id}:{key.panel_id}"


def _head(code: int, origin: str) -> bytes:
    raw = origin.encode()
    if len(raw) > _MAX_ORIGIN_BYTES:
        raise ValueError(f"origin longer than {_MAX_ORIGIN_BYTES} bytes: {origin!r}")
    return bytes((code, len(raw))) + raw


def _origin(frame: bytes) -> tuple[str, int]:
    """A frame's origin and where its payload starts; FrameError when they do not fit."""
    if len(frame) < 2:
        raise FrameError(f"frame of {len(frame)} bytes is shorter than its header")
    end = 2 + frame[1]
    if end > len(frame):
        raise FrameError(f"origin of {frame[1]} bytes overruns a {len(frame)}-byte frame")
    try:
        return frame[2:end].decode(), end
    except UnicodeDecodeError as exc:
        raise FrameError("origin is not UTF-8") from exc


def encode_frame(message: FanoutMessage) -> bytes:
    """1 byte kind, 1 byte origin length, the origin (UTF-8), then the payload."""
    return _head(_KIND_CODES[message.kind], message.origin) + message.payload


def encode_packed(origin: str, payloads: Sequence[bytes]) -> bytes:
    """Several UPDATE payloads of one origin as one frame (decode_frames reads it back)."""
    parts = [_head(_PACKED_CODE, origin)]
    for payload in payloads:
        parts += (_LENGTH.pack(len(payload)), payload)
    return b"".join(parts)


def decode_frames(frame: bytes) -> list[FanoutMessage]:
    """The messages of a frame: one, or the updates of a packed frame; FrameError for
    anything else (nothing of a malformed packed frame is delivered)."""
    if not frame or frame[0] != _PACKED_CODE:
        return [decode_frame(frame)]
    origin, at = _origin(frame)
    messages = []
    while at < len(frame):
        if at + _LENGTH.size > len(frame):
            raise FrameError("a packed frame ends inside a length")
        (length,) = _LENGTH.unpack_from(frame, at)
        at += _LENGTH.size
        if at + length > len(frame):
            raise FrameError(f"a packed update of {length} bytes overruns its frame")
        messages.append(FanoutMessage(FanoutKind.UPDATE, frame[at : at + length], origin))
        at += length
    return messages


def decode_frame(frame: bytes) -> FanoutMessage:
    """The inverse of encode_frame; FrameError for anything else."""
    origin, end = _origin(frame)
    kind = _KINDS.get(frame[0])
    if kind is None:
        raise FrameError(f"unknown frame kind {frame[0]}")
    return FanoutMessage(kind, frame[end:], origin)


def decode_notice(data: bytes) -> Notice:
    """A notice; FrameError for anything else."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"notice is not JSON: {exc}") from exc
    notice = Notice.from_json(raw)
    if notice is None:
        raise FrameError(f"not a notice: {str(raw)[:80]}")
    return notice


async def _call(callback: AnyCallback, *args: Any) -> None:
    """Run a callback, awaiting it if async; its failure is logged, never raised: one bad
    subscriber must not stop delivery to the others."""
    try:
        result = callback(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("fan-out callback %r failed", callback)


def _describe(exc: BaseException | None) -> str:
    # redis-py's error reprs hide the type: say both what happened and what it was.
    return f"{type(exc).__name__}: {exc}" if exc is not None else "no error"


def _client(url: str, timeout: float, retry: Retry) -> Redis:
    # Short socket timeouts: a caller must hear "unavailable" quickly, never hang on Redis.
    return Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=retry)


def _retry_once() -> Retry:
    # One retry on a connection error only: a pooled connection that died with a Redis restart
    # gets replaced. A timeout is not retried, to bound how long a caller waits.
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


def _no_retry() -> Retry:
    # The pub/sub connection never retries inside redis-py: RedisFanout reconnects itself, so
    # it knows when to re-subscribe and call on_reconnected.
    return Retry(NoBackoff(), 0, supported_errors=())


async def _guarded(call: Awaitable[T]) -> T:
    """Await a redis-py call without losing a cancellation. redis-py bounds socket writes with
    asyncio.wait_for, which on Python 3.11 returns normally when a cancel lands just as the
    write completes: re-raise it, or a cancelled task (close(), a caller's shutdown) runs on."""
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    try:
        return await call
    finally:
        if task is not None and task.cancelling() > before:
            raise asyncio.CancelledError


async def _stop(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel tasks and wait for them, cancelling again any that swallowed the first cancel
    (user callbacks may); never waits forever."""
    for _ in range(3):
        pending = [task for task in tasks if not task.done()]
        if not pending:
            return
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=1.0)
    log.warning("redis fan-out: tasks still running after three cancels: %s", pending)


async def _discard(pubsub: PubSub) -> None:
    with suppress(Exception):
        await pubsub.aclose()


class RedisSubscription:
    """One callback on one channel; close() removes it, and the last one unsubscribes."""

    def __init__(self, fanout: RedisFanout, channel: bytes, callback: AnyCallback) -> None:
        self.fanout = fanout
        self.channel = channel
        self.callback = callback
        self.active = True

    async def close(self) -> None:
        if self.active:
            self.active = False  # before any await: nothing is delivered after close()
            await self.fanout._remove(self)


class RedisFanout:
    """The Fanout port on Redis Pub/Sub. Build it with `await RedisFanout.open(...)`."""

    def __init__(
        self,
        url: str,
        replica_id: str,
        *,
        heartbeat_seconds: float = 1.0,
        lost_after_seconds: float = 3.0,
        timeout_seconds: float = 1.0,
    ) -> None:
        if not 0 < len(replica_id.encode()) <= _MAX_ORIGIN_BYTES:
            raise ValueError(f"replica id must be 1 to {_MAX_ORIGIN_BYTES} UTF-8 bytes")
        if not 0 < heartbeat_seconds < lost_after_seconds:
            raise ValueError("need 0 < heartbeat_seconds < lost_after_seconds")
        self.replica_id = replica_id
        self.heartbeat_seconds = heartbeat_seconds
        self.lost_after_seconds = lost_after_seconds
        self.timeout_seconds = timeout_seconds
        self.reconnects = 0  # times the pub/sub connection was re-established
        self.dropped = 0  # malformed frames and notices dropped
        self._publisher = _client(url, timeout_seconds, _retry_once())
        self._listener = _client(url, timeout_seconds, _no_retry())
        self._pubsub: PubSub | None = None  # None while disconnected
        self._topics: dict[bytes, list[RedisSubscription]] = {}
        # One future per SUBSCRIBE sent on the current connection, resolved by its reply.
        self._unconfirmed: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._lock = asyncio.Lock()  # orders (un)subscribes against reconnection
        self._last_heard: dict[str, float] = {}
        self._last_message = time.monotonic()  # when the connection last proved it works
        self._lost_callbacks: list[AnyCallback] = []
        self._reconnected_callbacks: list[AnyCallback] = []
        self._announce = False  # call on_reconnected once re-subscriptions are confirmed
        self._reader: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    @classmethod
    async def open(
        cls,
        url: str,
        replica_id: str,
        *,
        heartbeat_seconds: float = 1.0,
        lost_after_seconds: float = 3.0,
    ) -> RedisFanout:
        """Connect and start listening; Unavailable if Redis cannot be reached now."""
        fanout = cls(
            url,
            replica_id,
            heartbeat_seconds=heartbeat_seconds,
            lost_after_seconds=lost_after_seconds,
        )
        try:
            pubsub = await fanout._connect()
        except BaseException as exc:
            await fanout.close()
            if isinstance(exc, _TRANSPORT_ERRORS):
                raise Unavailable(f"Redis at {url} cannot be reached: {exc}") from exc
            raise
        fanout._tasks = [
            asyncio.create_task(fanout._supervise(pubsub), name="redis fan-out reader"),
            asyncio.create_task(fanout._heartbeat(), name="redis fan-out heartbeat"),
            asyncio.create_task(fanout._watchdog(), name="redis fan-out watchdog"),
        ]
        return fanout

    # -- the Fanout port --------------------------------------------------------------------

    async def publish_all(self, batch: Sequence[Outgoing]) -> None:
        # One pipeline, one round trip: publishing message by message cost a round trip each.
        if self._closed:
            raise Unavailable("The Redis fan-out is closed.")
        if not batch:
            return
        pipe = self._publisher.pipeline(transaction=False)
        for channel, frame in _frames(batch):
            pipe.publish(channel, frame)
        try:
            await _guarded(pipe.execute())
        except _TRANSPORT_ERRORS as exc:
            raise Unavailable(f"Redis cannot be reached: {exc}") from exc

    def may_reach_others(self, key: PanelKey) -> bool:
        return True  # other replicas may hold the panel: Pub/Sub tells no one who listens

    async def publish_counted(self, key: PanelKey, message: FanoutMessage) -> int:
        # PUBLISH answers how many subscribers got the message: each replica has one pub/sub
        # connection, subscribed to the panel's channel while it holds the panel. (Any other
        # subscriber of crdt:live:* is counted as a replica too: a join then waits its bound.)
        if self._closed:
            raise Unavailable("The Redis fan-out is closed.")
        channel = live_channel(key).encode()
        try:
            received = await _guarded(self._publisher.publish(channel, encode_frame(message)))
        except _TRANSPORT_ERRORS as exc:
            raise Unavailable(f"Redis cannot be reached: {exc}") from exc
        if self._pubsub is not None and channel in self._topics:
            received -= 1  # this replica's own subscription
        return max(0, int(received))

    async def subscribe(self, key: PanelKey, callback: FanoutCallback) -> RedisSubscription:
        return await self._add(live_channel(key).encode(), callback)

    async def subscribe_notices(
        self, workspace_id: str, callback: NoticeCallback
    ) -> RedisSubscription:
        return await self._add(notice_channel(workspace_id).encode(), callback)

    @property
    def peers(self) -> frozenset[str]:
        """The other replicas heard from and not (yet) reported lost."""
        return frozenset(self._last_heard)

    def on_replica_lost(self, callback: AnyCallback) -> None:
        self._lost_callbacks.append(callback)

    def on_reconnected(self, callback: AnyCallback) -> None:
        self._reconnected_callbacks.append(callback)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True  # every loop checks it: they end even if a cancel is lost
        await _stop(self._tasks)
        self._release_waiters()
        self._topics.clear()
        for client in (self._listener, self._publisher):
            with suppress(Exception):
                await client.aclose()

    # -- publishing -------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        beat = self.replica_id.encode()
        while not self._closed:
            try:
                await _guarded(self._publisher.publish(REPLICAS_CHANNEL, beat))
            except Exception as exc:  # keep beating: stopping would get us reported lost
                log.debug("heartbeat not sent: %s", _describe(exc))  # the reader reports outages
            await asyncio.sleep(self.heartbeat_seconds)

    # -- subscriptions ----------------------------------------------------------------------

    async def _add(self, channel: bytes, callback: AnyCallback) -> RedisSubscription:
        if self._closed:
            raise Unavailable("The Redis fan-out is closed.")
        subscription = RedisSubscription(self, channel, callback)
        async with self._lock:
            subscribers = self._topics.setdefault(channel, [])
            subscribers.append(subscription)
            if len(subscribers) == 1:
                await self._send("SUBSCRIBE", channel)
            waiting = list(self._unconfirmed.get(channel, ()))
        await self._confirmed(waiting)
        return subscription

    async def _confirmed(self, waiting: list[asyncio.Future[None]]) -> None:
        """Wait until Redis confirmed the channel, so that whatever is published after
        subscribe() returns is delivered. Not from the reader itself (it reads the reply),
        and not forever: while disconnected, reconnection subscribes the channel again."""
        if not waiting or asyncio.current_task() is self._reader:
            return
        with suppress(TimeoutError):
            async with asyncio.timeout(self.timeout_seconds):
                await asyncio.shield(waiting[-1])

    async def _remove(self, subscription: RedisSubscription) -> None:
        async with self._lock:
            subscribers = self._topics.get(subscription.channel)
            if subscribers is None or subscription not in subscribers:
                return
            subscribers.remove(subscription)
            if not subscribers:
                del self._topics[subscription.channel]
                await self._send("UNSUBSCRIBE", subscription.channel)

    async def _send(self, command: str, channel: bytes) -> None:
        """(Un)subscribe on the live connection; called with the lock held. Without a
        connection the table alone changes: reconnection subscribes what it holds."""
        pubsub = self._pubsub
        if pubsub is None:
            return
        try:
            if command == "SUBSCRIBE":
                self._expect(channel)
                await _guarded(pubsub.subscribe(channel))
            else:
                await _guarded(pubsub.unsubscribe(channel))
        except Exception as exc:  # a fresh connection subscribes from the table: always sound
            log.warning("Redis %s %r failed (%s): reconnecting", command, channel, _describe(exc))
            self._break()

    def _expect(self, channel: bytes) -> None:
        future = asyncio.get_running_loop().create_future()
        self._unconfirmed.setdefault(channel, deque()).append(future)

    def _release_waiters(self) -> None:
        # The connection they were sent on is gone; waiters stop waiting.
        for futures in self._unconfirmed.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
        self._unconfirmed.clear()

    # -- the connection ---------------------------------------------------------------------

    async def _connect(self) -> PubSub:
        """A new pub/sub connection subscribed to the heartbeats and every channel with a
        callback, in one command."""
        async with self._lock:
            pubsub = self._listener.pubsub()
            channels = [REPLICAS_CHANNEL, *self._topics]
            try:
                await _guarded(pubsub.subscribe(*channels))
            except BaseException:
                await _discard(pubsub)
                raise
            for channel in channels:
                self._expect(channel)
            self._pubsub = pubsub
            self._last_message = time.monotonic()
            return pubsub

    def _break(self) -> None:
        # Stop the reader; the supervisor then throws the connection away and reconnects.
        self._pubsub = None
        if self._reader is not None:
            self._reader.cancel()

    async def _supervise(self, pubsub: PubSub | None) -> None:
        while pubsub is not None and not self._closed:
            await self._listen(pubsub)
            pubsub = await self._reconnect()

    async def _listen(self, pubsub: PubSub) -> None:
        """Read until the connection fails (or is broken on purpose), then drop it."""
        reader = self._reader = asyncio.create_task(self._read(pubsub), name="redis reader")
        try:
            await asyncio.wait([reader])
            if reader.cancelled() or reader.exception() is None:
                log.warning("Redis pub/sub connection dropped on purpose: reconnecting")
            else:
                log.warning(
                    "Redis pub/sub connection lost (%s): reconnecting",
                    _describe(reader.exception()),
                )
        finally:
            self._pubsub = None
            await _stop([reader])
            self._reader = None
            self._release_waiters()
            await _discard(pubsub)

    async def _reconnect(self) -> PubSub | None:
        """A new connection, after back-off; None once closed."""
        delay = BACKOFF_FIRST_SECONDS
        while not self._closed:
            await asyncio.sleep(delay)
            try:
                pubsub = await self._connect()
            except Exception as exc:  # whatever it was, giving up would leave us deaf for good
                delay = min(delay * 2, BACKOFF_MAX_SECONDS)
                log.debug(
                    "Redis reconnection failed (%s); next try in %.2f s", _describe(exc), delay
                )
                continue
            self.reconnects += 1
            self._announce = True
            # Deaf while disconnected: every replica gets a fresh grace period.
            now = time.monotonic()
            self._last_heard = dict.fromkeys(self._last_heard, now)
            log.info("Redis pub/sub reconnected; %d channels subscribed again", len(self._topics))
            return pubsub
        return None

    async def _read(self, pubsub: PubSub) -> None:
        probing = False
        while self._pubsub is pubsub:  # _break() and _listen() end it by clearing _pubsub
            try:
                message = await self._next_message(pubsub, probing)
            except TimeoutError:
                if probing:
                    raise SilentConnection(
                        f"no answer to PING in {self.timeout_seconds} s"
                    ) from None
                # Silence may be a busy process, not a dead link: ask before reconnecting.
                await _guarded(pubsub.ping())
                probing = True
                continue
            probing = False
            self._last_message = time.monotonic()
            if message is not None:
                await self._dispatch(message)

    async def _next_message(self, pubsub: PubSub, probing: bool) -> dict[str, Any] | None:
        """The next message; TimeoutError when none came in time. Our own heartbeat comes back
        every heartbeat_seconds, so lost_after_seconds of silence is suspicious: a cut network
        sends no reset. (redis-py's parser keeps a partly read reply across a cancel.)"""
        limit = self.timeout_seconds if probing else self.lost_after_seconds
        async with asyncio.timeout(limit):
            message: dict[str, Any] | None = await pubsub.get_message(timeout=None)
            return message

    # -- incoming messages ------------------------------------------------------------------

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind, channel, data = message["type"], message["channel"], message["data"]
        if kind == "subscribe":
            await self._on_subscribed(channel)
        elif kind != "message":
            return  # unsubscribe replies, pongs (they only prove the connection alive)
        elif channel == REPLICAS_CHANNEL:
            self._heard(data)
        else:
            await self._deliver(channel, data)

    async def _on_subscribed(self, channel: bytes) -> None:
        futures = self._unconfirmed.get(channel)
        if futures:
            future = futures.popleft()
            if not future.done():
                future.set_result(None)
            if not futures:
                del self._unconfirmed[channel]
        if self._announce and not self._unconfirmed:
            self._announce = False
            for callback in list(self._reconnected_callbacks):
                await _call(callback)

    def _heard(self, beat: bytes | str) -> None:
        replica_id = beat.decode(errors="replace") if isinstance(beat, bytes) else beat
        if replica_id != self.replica_id:
            self._last_heard[replica_id] = time.monotonic()

    async def _deliver(self, channel: bytes, data: bytes) -> None:
        subscribers = self._topics.get(channel)
        if not subscribers:
            return  # a message in flight when the channel was unsubscribed
        try:
            payloads = self._decode(channel, data)
        except FrameError as exc:
            self.dropped += 1
            log.warning("dropped a malformed message on %r: %s", channel, exc)
            return
        for payload in payloads:
            for subscription in list(subscribers):
                if subscription.active:
                    await _call(subscription.callback, payload)

    def _decode(self, channel: bytes, data: bytes) -> list[FanoutMessage] | list[Notice]:
        if channel.startswith(LIVE_PREFIX.encode()):
            messages = decode_frames(data)
            if messages:
                self._heard(messages[0].origin)
            return messages
        return [decode_notice(data)]

    # -- lost replicas ----------------------------------------------------------------------

    async def _watchdog(self) -> None:
        interval = self.heartbeat_seconds / 4
        while not self._closed:
            await asyncio.sleep(interval)
            for replica_id in self._silent():
                log.info(
                    "replica %s not heard for %.1f s: lost", replica_id, self.lost_after_seconds
                )
                for callback in list(self._lost_callbacks):
                    await _call(callback, replica_id)

    def _silent(self) -> list[str]:
        """Replicas silent for lost_after_seconds while this connection was provably hearing
        (it received something since): a deaf replica must not declare the others lost."""
        if self._pubsub is None:
            return []
        heard_until = self._last_message
        lost = [
            replica_id
            for replica_id, heard_at in self._last_heard.items()
            if heard_until - heard_at > self.lost_after_seconds
        ]
        for replica_id in lost:
            del self._last_heard[replica_id]  # reported once; heard again, tracked anew
        return lost


def _frames(batch: Sequence[Outgoing]) -> list[tuple[bytes, bytes]]:
    """(channel, frame) to publish, in order; consecutive updates of one panel and origin
    packed together (at most PACK_UPDATES, PACK_BYTES)."""
    frames: list[tuple[bytes, bytes]] = []
    run: list[bytes] = []  # payloads of the updates being packed
    run_channel, run_origin, run_bytes = b"", "", 0

    def close_run() -> None:
        if len(run) == 1:
            message = FanoutMessage(FanoutKind.UPDATE, run[0], run_origin)
            frames.append((run_channel, encode_frame(message)))
        elif run:
            frames.append((run_channel, encode_packed(run_origin, run)))
        run.clear()

    for item in batch:
        if isinstance(item, Notice):
            close_run()
            channel = notice_channel(item.key.workspace_id).encode()
            frames.append((channel, orjson.dumps(item.to_json())))
            continue
        key, message = item
        channel = live_channel(key).encode()
        if message.kind != FanoutKind.UPDATE:
            close_run()
            frames.append((channel, encode_frame(message)))
            continue
        size = len(message.payload)
        if run and (
            channel != run_channel
            or message.origin != run_origin
            or len(run) >= PACK_UPDATES
            or run_bytes + size > PACK_BYTES
        ):
            close_run()
        if not run:
            run_channel, run_origin, run_bytes = channel, message.origin, 0
        run.append(message.payload)
        run_bytes += size
    close_run()
    return frames


def _parse_entry(key: PanelKey, raw: bytes | str) -> CacheEntry | None:
    """A stored entry, or None (a miss) for anything that is not one: the key is shared with
    other services, whose mistakes must not fail our reads."""
    try:
        entry = CacheEntry.from_json(orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        log.warning("state cache: entry of %s is not JSON (%s): ignored", key, exc)
        return None
    if entry is None:
        log.warning("state cache: entry of %s is not a cache entry: ignored", key)
    return entry


class RedisStateCache:
    """The StateCache port on Redis: `state:{ws}:{panel}` → orjson entry, with a TTL.

    A cache must never fail a request: when Redis errs, get() misses and put()/drop() log
    and return."""

    def __init__(self, url: str, *, timeout_seconds: float = 1.0) -> None:
        self.hits = 0
        self.misses = 0
        self.errors = 0  # Redis errors (each also counted as a miss when get() hit one)
        self._reachable = True  # an outage is logged once, not once per request
        self._client = _client(url, timeout_seconds, _retry_once())

    @classmethod
    async def open(cls, url: str, *, timeout_seconds: float = 1.0) -> RedisStateCache:
        """The cache; Redis being down now is logged, not raised (the cache just misses)."""
        cache = cls(url, timeout_seconds=timeout_seconds)
        try:
            await _guarded(cache._client.ping())
        except _TRANSPORT_ERRORS as exc:
            log.warning("state cache: Redis at %s cannot be reached yet: %s", url, _describe(exc))
        return cache

    async def get(self, key: PanelKey) -> CacheEntry | None:
        try:
            raw = await _guarded(self._client.get(cache_key(key)))
            self._succeeded()
        except _TRANSPORT_ERRORS as exc:
            self._failed("get", key, exc)
            raw = None
        entry = None if raw is None else _parse_entry(key, raw)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        return entry

    async def put(self, key: PanelKey, entry: CacheEntry, ttl_seconds: int) -> None:
        if ttl_seconds <= 0:  # Redis refuses EX 0; an entry that may not live is no entry
            await self.drop(key)
            return
        try:
            data = orjson.dumps(entry.to_json())
        except orjson.JSONEncodeError as exc:
            log.warning("state cache: entry of %s is not JSON (%s): not cached", key, exc)
            return
        try:
            await _guarded(self._client.set(cache_key(key), data, ex=ttl_seconds))
            self._succeeded()
        except _TRANSPORT_ERRORS as exc:
            self._failed("put", key, exc)

    async def drop(self, key: PanelKey) -> None:
        try:
            await _guarded(self._client.delete(cache_key(key)))
            self._succeeded()
        except _TRANSPORT_ERRORS as exc:
            self._failed("drop", key, exc)

    async def close(self) -> None:
        with suppress(Exception):
            await self._client.aclose()

    def _failed(self, operation: str, key: PanelKey, exc: BaseException) -> None:
        self.errors += 1
        level = logging.WARNING if self._reachable else logging.DEBUG
        self._reachable = False
        log.log(level, "state cache %s of %s failed: %s", operation, key, _describe(exc))

    def _succeeded(self) -> None:
        if not self._reachable:
            self._reachable = True
            log.info("state cache: Redis answers again")
