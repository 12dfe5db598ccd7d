"""An actor: work on one piece of state runs one step at a time, in order.

`submit` queues work, `call` queues it and returns its result, `post` queues it from a
callback that cannot wait. Work is synchronous (no await inside), so each step sees and
leaves a consistent state. When nothing is queued, work runs at once in the caller's task
(same order, no hop, no task switch); otherwise the actor's task runs it behind what is
queued, giving the event loop a turn every SLICE_SECONDS of it. A full inbox makes `submit`
and `call` wait: a flood slows its source down instead of growing memory.

`call_first` and `post_first` run work ahead of the inbox, for a step that needs no order
with what is queued (it only reads the state, or adds whole updates that commute with the
rest): a join must not wait for another replica's backlog to learn what that replica has.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

Work = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any] | None"]


# The actor's task gives the event loop a turn once it has run this long on queued work: a
# backlog (a burst from another replica, say) must not keep every other socket, timer and room
# of the process waiting until it is all done.
SLICE_SECONDS = 0.005


class Actor:
    def __init__(self, name: str, inbox_size: int) -> None:
        self.closed = False
        self.last_used = time.monotonic()
        self.inbox: asyncio.Queue[Work] = asyncio.Queue(inbox_size)
        # Work run ahead of the inbox (call_first, post_first); only ever non-empty while the
        # inbox is not, so the task is awake to take it.
        self._first: deque[Work] = deque()
        self._task = asyncio.create_task(self._run(), name=name)

    async def _run(self) -> None:
        turn_ends = 0.0
        while True:
            if self._first:
                work = self._first.popleft()
            elif self.inbox.empty():
                work = await self.inbox.get()  # waiting: the loop had its turn
                turn_ends = time.monotonic() + SLICE_SECONDS
            else:
                work = self.inbox.get_nowait()  # returns without a turn for anyone else
            fn, args, future = work
            if fn is _STOP:
                return
            self._execute(fn, args, future)
            if time.monotonic() >= turn_ends:
                await asyncio.sleep(0)
                turn_ends = time.monotonic() + SLICE_SECONDS

    def _execute(
        self, fn: Callable[..., Any], args: tuple[Any, ...], future: asyncio.Future[Any] | None
    ) -> None:
        try:
            result = fn(*args)
        except (KeyboardInterrupt, SystemExit, asyncio.CancelledError):
            raise
        except BaseException as exc:  # PanicException included: the actor must live on
            if future is None:
                log.exception("%s: %s failed", self._task.get_name(), getattr(fn, "__name__", fn))
            elif not future.done():
                future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(exc))
        else:
            if future is not None and not future.done():
                future.set_result(result)

    async def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue work without waiting for it; waits only while the inbox is full."""
        self.last_used = time.monotonic()
        if self.inbox.empty() and not self.closed:
            self._execute(fn, args, None)
            return
        await self.inbox.put((fn, args, None))

    def post(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Queue work from a callback that cannot wait; False when the actor is closed or
        its inbox is full (the caller tries again later)."""
        if self.closed:
            return False
        try:
            self.inbox.put_nowait((fn, args, None))
        except asyncio.QueueFull:
            return False
        return True

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` in the actor (see above) and return its result."""
        self.last_used = time.monotonic()
        if kwargs:
            fn = functools.partial(fn, **kwargs)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        if self.inbox.empty() and not self.closed:
            self._execute(fn, args, future)
        else:
            await self.inbox.put((fn, args, future))
        return await future

    def post_first(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Run `fn(*args)` now when nothing is queued, else ahead of what is (see above);
        False when the actor is closed."""
        if self.closed:
            return False
        if self.inbox.empty():
            self._execute(fn, args, None)
        else:
            self._first.append((fn, args, None))
        return True

    async def call_first(self, fn: Callable[..., T], *args: Any) -> T:
        """`call`, but ahead of what is queued (see above)."""
        if self.closed or self.inbox.empty():
            return await self.call(fn, *args)
        self.last_used = time.monotonic()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._first.append((fn, args, future))
        return await future

    async def finish(self) -> None:
        """Run what is queued, then take no more work."""
        if not self.closed:
            self.closed = True
            await self.inbox.put((_STOP, (), None))
            await self._task


def _STOP() -> None:  # sentinel for the inbox
    return None
