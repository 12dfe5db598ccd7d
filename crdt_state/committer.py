"""Group commit: changes that arrive within a short window go to the log in one transaction.

One committer serves every room of a replica. Batches are written one after the other, so a
panel's changes reach the log in the order they were submitted. A failing batch is retried
with back-off (database down: nothing is dropped, order is kept); a change the log refuses for
good (panel deleted, stale epoch, bad data) fails alone, the rest of its batch is written.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from .errors import Unavailable
from .ports import Change, UpdateLog

log = logging.getLogger(__name__)

# Worth retrying: the store is down or slow. Anything else is the change's own fault.
TRANSIENT = (Unavailable, ConnectionError, TimeoutError, OSError)


class Committer:
    def __init__(
        self,
        log_store: UpdateLog,
        *,
        window_seconds: float = 0.002,
        max_batch: int = 2000,
        max_backoff_seconds: float = 5.0,
    ) -> None:
        self.log = log_store
        self.window_seconds = window_seconds
        self.max_batch = max_batch
        self.max_backoff_seconds = max_backoff_seconds
        self._queue: deque[tuple[Change, asyncio.Future[int]]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[Change, int], None]] = []
        self.healthy = True
        self.committed = 0
        self.batches = 0

    def start(self, probe_seconds: float = 1.0) -> None:
        self._task = asyncio.create_task(self._run(), name="committer")
        if probe_seconds > 0:
            self._probe = asyncio.create_task(self._watch(probe_seconds), name="log probe")

    async def _watch(self, every: float) -> None:
        """Ping the store now and then, so writes are refused up front while it is down."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.log.ping()
            except Exception:
                self.healthy = False
            else:
                if not self._queue:  # with a backlog, health returns with the next commit
                    self.healthy = True

    def add_listener(self, listener: Callable[[Change, int], None]) -> None:
        """Call `listener(change, version)` after each commit (must not raise or block)."""
        self._listeners.append(listener)

    def submit(self, change: Change) -> asyncio.Future[int]:
        """Queue a change; the future resolves with its version once it is committed."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((change, future))
        self._wakeup.set()
        return future

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed (or refused)."""
        if self._queue:
            await asyncio.gather(*(f for _, f in list(self._queue)), return_exceptions=True)

    async def close(self) -> None:
        await self.flush()
        for task in (self._task, self._probe):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self.window_seconds > 0:
                await asyncio.sleep(self.window_seconds)
            while self._queue:
                batch = [self._queue[i] for i in range(min(self.max_batch, len(self._queue)))]
                await self._write(batch)
                for _ in batch:
                    self._queue.popleft()

    async def _write(self, batch: list[tuple[Change, asyncio.Future[int]]]) -> None:
        backoff = 0.05
        while True:
            try:
                versions = await self.log.append([change for change, _ in batch])
            except TRANSIENT as exc:
                self.healthy = False
                log.warning("log write failed (%r); retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_seconds)
                continue
            except Exception as exc:
                # Refused for good (deleted panel, stale epoch, a value the database cannot
                # store): fail that change alone, never block the queue behind it.
                if len(batch) == 1:
                    log.error("the log refused a change to %s: %r", batch[0][0].key, exc)
                    if not batch[0][1].done():
                        batch[0][1].set_exception(exc)
                    return
                for item in batch:
                    await self._write([item])
                return
            self.healthy = True
            self.batches += 1
            self.committed += len(batch)
            for (change, future), version in zip(batch, versions, strict=True):
                if not future.done():
                    future.set_result(version)
                for listener in self._listeners:
                    listener(change, version)
            return
