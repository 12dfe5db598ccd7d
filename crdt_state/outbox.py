"""The outbox: what a replica publishes (live messages and notices), by one task, in order.

Each round trip takes what is queued, at most PUBLISH_BATCH messages: a burst's thousands go
in several, and the event loop gets its turns in between (one pipeline of 8,000 publishes
held a replica for 3 s). Urgent messages (answers to join barriers: whole updates, which
need no order) go first, not behind a burst's backlog.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from .ports import Fanout, Outgoing

log = logging.getLogger(__name__)

PUBLISH_BATCH = 500  # messages per round trip


class Outbox:
    def __init__(self, fanout: Fanout) -> None:
        self.fanout = fanout
        self._queue: deque[Outgoing] = deque()
        self._urgent: deque[Outgoing] = deque()
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()  # clear while messages wait to be published
        self._drained.set()

    def put(self, item: Outgoing, *, urgent: bool = False) -> None:
        (self._urgent if urgent else self._queue).append(item)
        self._drained.clear()
        self._ready.set()

    async def flush(self) -> None:
        """Wait until every queued message has been handed to the Fanout."""
        if self._queue or self._urgent or not self._drained.is_set():
            await self._drained.wait()

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._urgent or self._queue:
                batch = list(self._urgent)
                self._urgent.clear()
                batch += [
                    self._queue.popleft() for _ in range(min(PUBLISH_BATCH, len(self._queue)))
                ]
                await self._publish(batch)
            self._drained.set()

    async def send_rest(self) -> None:
        """What is still queued, in one go (the task that ran the outbox is gone)."""
        if self._urgent or self._queue:
            await self._publish([*self._urgent, *self._queue])
            self._urgent.clear()
            self._queue.clear()

    async def _publish(self, batch: list[Outgoing]) -> None:
        try:
            await self.fanout.publish_all(batch)
        except Exception as exc:  # the log is the truth: replicas catch up from it
            log.warning("fan-out publish of %d messages failed: %r", len(batch), exc)
