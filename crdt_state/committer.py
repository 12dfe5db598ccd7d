"""Group commit: changes that arrive within a short window go to the log in one transaction.

One committer serves every room of a replica. Batches are written one after the other, so a
panel's changes reach the log in the order they were submitted. A failing batch is retried
with back-off (database down: nothing is dropped, order is kept); a change the log refuses for
good (panel deleted, stale epoch, bad data) fails alone, the rest of its batch is written.

Two kinds of change share the queue. A live Yjs update was already relayed and nobody waits for
its commit: it waits out the window, so that one transaction (one fsync) carries many. A change
somebody waits for (a REST write answers after its commit) is urgent: it and everything queued
before it are written at once. Rooms also hand their JSON views here (`save_view`): a view
rides in the next transaction instead of costing one of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .errors import Unavailable
from .model import Change, PanelKey, PanelView
from .ports import Probe, UpdateLog

log = logging.getLogger(__name__)

# Worth retrying: the store is down or slow. Anything else is the change's own fault.
TRANSIENT = (Unavailable, ConnectionError, TimeoutError, OSError)


class Committer:
    def __init__(
        self,
        log_store: UpdateLog,
        probe: Probe | None = None,
        *,
        window_seconds: float = 0.01,
        max_batch: int = 2000,
        max_backoff_seconds: float = 5.0,
    ) -> None:
        self.log = log_store
        self.probe = probe
        self.window_seconds = window_seconds
        self.max_batch = max_batch
        self.max_backoff_seconds = max_backoff_seconds
        self._queue: deque[tuple[Change, asyncio.Future[int]]] = deque()
        self._views: dict[PanelKey, tuple[PanelView, asyncio.Future[bool]]] = {}
        self._wakeup = asyncio.Event()  # set: write now
        self._timer: asyncio.TimerHandle | None = None  # the window of the oldest waiting change
        self._writing = False
        self._task: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self.healthy = True
        self.committed = 0
        self.batches = 0
        # Told (changes, seconds) of each transaction that wrote changes (crdt_state/metrics.py).
        self.observe_batch: Callable[[int, float], None] | None = None

    def start(self, probe_seconds: float = 1.0) -> None:
        self._task = asyncio.create_task(self._run(), name="committer")
        if probe_seconds > 0 and self.probe is not None:
            self._probe = asyncio.create_task(self._watch(probe_seconds), name="log probe")

    async def _watch(self, every: float) -> None:
        """Ping the store now and then, so writes are refused up front while it is down."""
        assert self.probe is not None
        while True:
            await asyncio.sleep(every)
            try:
                await self.probe.ping()
            except Exception:
                self.healthy = False
            else:
                if not self._queue:  # with a backlog, health returns with the next commit
                    self.healthy = True

    def submit(self, change: Change) -> asyncio.Future[int]:
        """Queue a change; the future resolves with its version once it is committed.

        An urgent change (somebody waits for its commit) is written now, not after the
        window."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((change, future))
        if change.urgent:
            self._wakeup.set()
        else:
            self._arm()
        return future

    def save_view(self, view: PanelView) -> asyncio.Future[bool]:
        """Write a panel's JSON view with the next batch (a newer view of the panel replaces
        one still waiting). The future says whether it was written."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        replaced = self._views.pop(view.key, None)
        if replaced is not None and not replaced[1].done():
            replaced[1].set_result(False)
        self._views[view.key] = (view, future)
        self._arm()
        return future

    def _arm(self) -> None:
        # Start the window, unless a write is due already or running (which re-arms after).
        if self._timer is None and not self._writing and not self._wakeup.is_set():
            if self.window_seconds > 0:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(self.window_seconds, self._wakeup.set)
            else:
                self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed (or refused)."""
        waiting = [f for _, f in self._queue] + [f for _, f in self._views.values()]
        if waiting:
            self._wakeup.set()
            await asyncio.gather(*waiting, return_exceptions=True)

    async def close(self) -> None:
        await self.flush()
        if self._timer is not None:
            self._timer.cancel()
        for task in (self._task, self._probe):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._writing = True
            try:
                while self._queue or self._views:
                    batch = [self._queue[i] for i in range(min(self.max_batch, len(self._queue)))]
                    views = list(self._views.values())
                    self._views.clear()
                    await self._write(batch, views)
                    for _ in batch:
                        self._queue.popleft()
                    if not self._wakeup.is_set() and len(self._queue) < self.max_batch:
                        break  # what came in meanwhile waits out its own window
                    self._wakeup.clear()
            finally:
                self._writing = False
            if self._queue or self._views:
                self._arm()

    async def _write(
        self,
        batch: list[tuple[Change, asyncio.Future[int]]],
        views: list[tuple[PanelView, asyncio.Future[bool]]],
    ) -> None:
        backoff = 0.05
        while True:
            started = time.perf_counter()
            try:
                versions = await self.log.append(
                    [change for change, _ in batch], views=[view for view, _ in views]
                )
            except TRANSIENT as exc:
                self.healthy = False
                log.warning("log write failed (%r); retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_seconds)
                continue
            except Exception as exc:
                # Refused for good (deleted panel, stale epoch, a value the database cannot
                # store): fail that change alone, never block the queue behind it. Views are
                # a query cache of the log: they are dropped, the next save brings them back.
                _resolve(views, False)
                if len(batch) == 1:
                    log.error("the log refused a change to %s: %r", batch[0][0].key, exc)
                    if not batch[0][1].done():
                        batch[0][1].set_exception(exc)
                    return
                if not batch:
                    log.info("views not saved: %r", exc)
                    return
                for item in batch:
                    await self._write([item], [])
                return
            self.healthy = True
            _resolve(views, True)
            if not batch:
                return
            self.batches += 1
            self.committed += len(batch)
            if self.observe_batch is not None:
                self.observe_batch(len(batch), time.perf_counter() - started)
            for (_, future), version in zip(batch, versions, strict=True):
                if not future.done():
                    future.set_result(version)
            return


def _resolve(views: list[tuple[Any, asyncio.Future[bool]]], written: bool) -> None:
    for _, future in views:
        if not future.done():
            future.set_result(written)
