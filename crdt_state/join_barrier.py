"""Join barriers: before a client's join is answered, the other replicas that hold its room
send what this replica's room lacks.

A replica about to answer a join publishes a barrier on the panel's live channel: a fresh id
and its room's state vector. Every other replica holding the room answers in its room actor,
ahead of whatever waits in its inbox (`post_first`): the update this room lacks of everything
it has applied (`encode_state_as_update` of the vector), under the barrier's id, in parts of
at most ANSWER_PART_BYTES (one wire message each). The transport says how many replicas
received the barrier (Redis: PUBLISH's count), so the asker knows how many answers to wait
for: all of them, or BARRIER_SECONDS. Neither side waits for its room's backlog: what a
replica has queued and not applied is not "applied before the join began", and reaches the
joiner live once applied (the joiner is in the room by then).

Joins that arrive together share runs (`Coalesced`): one barrier at a time per room, and every
join is served by a barrier published after it began.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .model import FanoutKind, FanoutMessage, PanelKey
from .ports import Fanout
from .room import InvalidUpdate, Room

log = logging.getLogger(__name__)
T = TypeVar("T")

# The longest a join waits for the other holders' answers. A replica that dies drops its
# subscription (it is no longer counted); this bound is paid only for one that hangs or is cut
# off. Under a burst on 2 shared cores an answer took up to ~1.5 s (1 s failed 1 run in 16).
BARRIER_SECONDS = 2.0
PUBLISH_ATTEMPTS = 3  # a question that could not be published is tried again, this often
PUBLISH_RETRY_SECONDS = 0.05
BARRIER_ID_BYTES = 16  # hex characters
ANSWER_PART_BYTES = 512 * 1024  # the largest answer part on the wire (a doc is up to 16 MiB)
_PART = struct.Struct(">II")  # part index, part count


def pack_barrier(barrier_id: str, state_vector: bytes) -> bytes:
    return barrier_id.encode("ascii") + state_vector


def unpack_barrier(payload: bytes) -> tuple[str, bytes]:
    """(barrier id, state vector); ValueError for anything shorter than an id."""
    if len(payload) <= BARRIER_ID_BYTES:
        raise ValueError(f"a join barrier of {len(payload)} bytes holds no state vector")
    return payload[:BARRIER_ID_BYTES].decode("ascii", "replace"), payload[BARRIER_ID_BYTES:]


def answer_parts(barrier_id: str, update: bytes) -> list[bytes]:
    """An answer as wire payloads: the id, the part's index and the count, then the part."""
    head = barrier_id.encode("ascii")
    parts = [update[i : i + ANSWER_PART_BYTES] for i in range(0, len(update), ANSWER_PART_BYTES)]
    parts = parts or [b""]
    return [head + _PART.pack(n, len(parts)) + part for n, part in enumerate(parts)]


def unpack_answer(payload: bytes) -> tuple[str, int, int, bytes]:
    """(barrier id, part index, part count, part); ValueError for anything else."""
    end = BARRIER_ID_BYTES + _PART.size
    if len(payload) < end:
        raise ValueError(f"a barrier answer of {len(payload)} bytes is shorter than its header")
    index, count = _PART.unpack(payload[BARRIER_ID_BYTES:end])
    if index >= count:
        raise ValueError(f"barrier answer part {index} of {count}")
    return payload[:BARRIER_ID_BYTES].decode("ascii", "replace"), index, count, payload[end:]


@dataclass(slots=True)
class Barrier:
    """One barrier this replica waits on: complete answers (updates) as they come."""

    id: str
    answers: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    parts: dict[str, list[bytes]] = field(default_factory=dict)  # by answering replica


class JoinBarriers:
    """A replica's side of join barriers: asking (for its joins), answering (for the other
    replicas'), and collecting the answers to its barriers off the wire."""

    def __init__(
        self, fanout: Fanout, replica_id: str, send: Callable[[PanelKey, FanoutKind, bytes], None]
    ) -> None:
        self.fanout = fanout
        self.replica_id = replica_id
        self._send = send  # queue an answer part (the outbox sends it ahead of its queue)
        self._open: dict[str, Barrier] = {}

    async def ask(self, room: Room) -> bool:
        """One join barrier for `room`: True when other replicas hold it and every one of
        them answered within BARRIER_SECONDS, each answer applied to the room."""
        if not self.fanout.may_reach_others(room.key):  # one process: nobody else holds it
            return False
        vector = await room.call_first(room.state_vector)
        with self._opened() as barrier:
            question = FanoutMessage(
                FanoutKind.BARRIER, pack_barrier(barrier.id, vector), self.replica_id
            )
            holders = await self._publish(room, question)
            if holders is None:  # the fan-out is down: the log is all there is
                return False
            deadline = asyncio.get_running_loop().time() + BARRIER_SECONDS
            for _ in range(holders):
                try:
                    async with asyncio.timeout_at(deadline):
                        update = await barrier.answers.get()
                except TimeoutError:
                    log.info("room %s: a replica holding it did not answer a join", room.key)
                    return False
                await room.call_first(_apply_answer, room, update)
        return holders > 0

    async def _publish(self, room: Room, question: FanoutMessage) -> int | None:
        """Publish the question; how many replicas got it, None when it could not go out. A
        failure is tried again (a busy process may time out connecting to Redis): an answer to
        any copy of the question is as good, each being sent after the join began."""
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                return await self.fanout.publish_counted(room.key, question)
            except Exception as exc:
                if attempt == PUBLISH_ATTEMPTS:
                    log.warning("room %s: join barrier not published: %r", room.key, exc)
                    return None
                await asyncio.sleep(PUBLISH_RETRY_SECONDS)
        return None

    def answer(self, room: Room, message: FanoutMessage) -> None:
        """In the room, ahead of its inbox: another replica is about to answer a join; send it
        what its room lacks (in parts: each wire message stays bounded)."""
        try:
            barrier_id, vector = unpack_barrier(message.payload)
            update = room.encode_missing(vector)
        except (ValueError, InvalidUpdate) as exc:
            log.warning("dropped a malformed join barrier from %s: %s", message.origin, exc)
            return
        for part in answer_parts(barrier_id, update):
            self._send(room.key, FanoutKind.BARRIER_ANSWER, part)

    @contextmanager
    def _opened(self) -> Iterator[Barrier]:
        barrier = Barrier(os.urandom(BARRIER_ID_BYTES // 2).hex())
        self._open[barrier.id] = barrier
        try:
            yield barrier
        finally:
            del self._open[barrier.id]

    def receive(self, origin: str, payload: bytes) -> None:
        """An answer part off the wire (for any replica's barrier: others' are dropped)."""
        try:
            barrier_id, index, count, part = unpack_answer(payload)
        except ValueError as exc:
            log.warning("dropped a malformed barrier answer from %s: %s", origin, exc)
            return
        barrier = self._open.get(barrier_id)
        if barrier is None:
            return
        parts = barrier.parts.setdefault(origin, [])
        if index != len(parts):  # a part went missing: this answer never completes
            barrier.parts[origin] = []
            return
        parts.append(part)
        if len(parts) == count:
            del barrier.parts[origin]
            barrier.answers.put_nowait(b"".join(parts))


def _apply_answer(room: Room, update: bytes) -> None:
    """In the room: what another replica holding it sent for a join barrier."""
    try:
        room.apply_logged(update)
    except Exception as exc:  # a bad answer must not fail the join: the log is there too
        log.warning("room %s: a join barrier's answer did not apply: %r", room.key, exc)


class Stopped(Exception):
    """The run a caller waited for will not happen: its room was let go."""


class Coalesced(Generic[T]):
    """A job that callers want run after they ask, with runs shared: at most one runs at a
    time, and every caller gets the result of the first run that starts after it asked."""

    def __init__(self, job: Callable[[], Awaitable[T]], name: str) -> None:
        self._job = job
        self._name = name
        self._next: asyncio.Future[T] | None = None  # the next run's result, shared
        self._task: asyncio.Task[None] | None = None

    def ask(self) -> asyncio.Future[T]:
        """The result of a run that starts from now on. Await it shielded: it is shared."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        future = self._next
        if self._task is None:
            self._task = asyncio.create_task(self._runs(), name=self._name)
        return future

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def _runs(self) -> None:
        running: asyncio.Future[T] | None = None
        try:
            while self._next is not None:
                running, self._next = self._next, None
                try:
                    result = await self._job()
                except Exception as exc:
                    _settle(running, exc)
                else:
                    if not running.done():
                        running.set_result(result)
        finally:
            self._task = None
            for waiting in (running, self._next):
                if waiting is not None:
                    _settle(waiting, Stopped(f"{self._name}: stopped"))
            self._next = None


def _settle(future: asyncio.Future[T], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
        future.exception()  # retrieved: a caller that gave up waiting must not be warned of it
