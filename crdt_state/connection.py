"""One WebSocket client of a room, with a bounded send queue.

Broadcasting never awaits a client. A frame goes out at once when the socket takes it without
waiting (the usual case: no task, no task switch); when the transport pushes back, a task
finishes that send and drains the frames queued behind it. A client whose queue passes its
bound is disconnected with a transient close code (1013, try again later) instead of growing
the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, MutableMapping
from typing import Any, Protocol

from starlette.websockets import WebSocketState

from .actor import SLICE_SECONDS
from .auth import Principal
from .status import CLOSE_NORMAL, CLOSE_TRY_AGAIN

log = logging.getLogger(__name__)

# A receive that took this long waited for the client (others had the loop meanwhile); one
# quicker returned a message read already, and the turn of the loop goes on.
WAITED_SECONDS = 0.001


class FrameSocket(Protocol):
    """What a connection needs of its WebSocket (Starlette's, or the Yjs face's bare one)."""

    @property
    def application_state(self) -> WebSocketState: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...

    async def receive(self) -> MutableMapping[str, Any]: ...


class Connection:
    __slots__ = (
        "_answered",
        "_close",
        "_queue",
        "_queued_bytes",
        "_turn_ends",
        "_write_now",
        "_writer",
        "can_write",
        "max_queue_bytes",
        "max_queue_messages",
        "principal",
        "sent_messages",
        "unanswered",
        "websocket",
    )

    def __init__(
        self,
        websocket: FrameSocket,
        principal: Principal,
        *,
        can_write: bool,
        max_queue_messages: int,
        max_queue_bytes: int,
    ) -> None:
        self.websocket = websocket
        self.principal = principal
        self.can_write = can_write
        self.max_queue_messages = max_queue_messages
        self.max_queue_bytes = max_queue_bytes
        # Made when a send is first held up: an empty deque is 624 bytes per idle client.
        self._queue: deque[bytes] | None = None
        self._queued_bytes = 0
        self._close: tuple[int, str] | None = None
        self._writer: asyncio.Task[None] | None = None  # only while a send is held up
        # Frames written straight to the transport when the socket can (asgi_socket.py).
        self._write_now: Callable[[bytes], bool] | None = getattr(websocket, "write_now", None)
        self.sent_messages = 0
        self._turn_ends = 0.0  # see receive
        # Sync step 1s sent that the client has not answered (with a step 2) yet, and who
        # waits for the answers (the server stopping: ask()).
        self.unanswered = 0
        self._answered: asyncio.Future[None] | None = None

    @property
    def subject(self) -> str:
        return self.principal.subject

    @property
    def closing(self) -> bool:
        return self._close is not None

    @property
    def close_code(self) -> int | None:
        """The code the server closes (or closed) this socket with; None while open."""
        return self._close[0] if self._close is not None else None

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting behind a held-up send (/metrics)."""
        return self._queued_bytes

    def send(self, data: bytes) -> None:
        """Send a frame now, or queue it behind a send that is held up; never blocks.
        Disconnects a client that does not keep up."""
        if self._close is not None:
            return
        if self._writer is None:
            self._send_now(data)
            return
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        if (
            len(queue) >= self.max_queue_messages
            or self._queued_bytes + len(data) > self.max_queue_bytes
        ):
            log.warning("closing a slow client of %s: send queue full", self.subject)
            self.close(CLOSE_TRY_AGAIN, "send queue full: client too slow")
            return
        queue.append(data)
        self._queued_bytes += len(data)

    def _send_now(self, data: bytes) -> None:
        # A send into a socket that is not backed up completes without waiting for anything:
        # run it right here, without a task switch per frame (the cost of a writer task that
        # wakes up for each of them), straight to the transport when the socket can. Should it
        # have to wait (the transport pushes back), a task takes over the rest of it, and
        # frames queue behind until it is done.
        if self._write_now is not None and self._write_now(data):
            self.sent_messages += 1
            return
        step = self.websocket.send_bytes(data)
        try:
            waiting = step.send(None)
        except StopIteration:
            self.sent_messages += 1
            return
        except Exception as exc:  # the peer went away: the reader sees it too
            log.debug("send failed: %r", exc)
            self._close = self._close or (CLOSE_NORMAL, "")
            return
        self._writer = asyncio.create_task(self._write_on(step, waiting))

    async def _write_on(self, step: Coroutine[Any, Any, None], waiting: Any) -> None:
        ws = self.websocket
        try:
            await _resume(step, waiting)
            while self._queue and self._close is None:
                data = self._queue.popleft()
                if not self._queue:
                    self._queue = None  # caught up: an idle client holds no deque
                self._queued_bytes -= len(data)
                await ws.send_bytes(data)
                self.sent_messages += 1
            if self._close is not None and ws.application_state == WebSocketState.CONNECTED:
                await ws.close(*self._close)
        except Exception as exc:  # the peer went away mid-send: the reader sees it too
            log.debug("writer stopped: %r", exc)
            self._close = self._close or (CLOSE_NORMAL, "")
        finally:
            self._writer = None

    def ask(self, step1: bytes) -> asyncio.Future[None]:
        """Send a sync step 1 (the room's state vector); the future resolves once every step 1
        sent so far is answered and the answers applied (answered()), or the socket closes.
        Everything the client sent before it read this is then in the room."""
        if self._answered is None or self._answered.done():
            self._answered = asyncio.get_running_loop().create_future()
        answered = self._answered
        if self._close is not None:
            answered.set_result(None)
            return answered
        self.unanswered += 1
        self.send(step1)
        return answered

    def answered(self) -> None:
        """A sync step 2 from the client was handled (in the room)."""
        self.unanswered = max(0, self.unanswered - 1)
        if self.unanswered == 0 and self._answered is not None and not self._answered.done():
            self._answered.set_result(None)

    def close(self, code: int, reason: str = "") -> None:
        """Close the socket after the send in progress; frames still queued are dropped."""
        if self._answered is not None and not self._answered.done():
            self._answered.set_result(None)  # no answer will come
        if self._close is None:
            self._close = (code, reason[:120])
            self._queue = None
            self._queued_bytes = 0
            if self._writer is None:
                self._writer = asyncio.create_task(self._write_on(_nothing(), None))

    async def finish(self, timeout: float) -> None:
        """Wait (at most `timeout`) for a held-up send or the close to go out."""
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(writer), timeout)
            writer.cancel()

    async def receive(self) -> MutableMapping[str, Any]:
        """The next message. A client whose messages are already read returns at once, and
        its room runs them at once when idle: without a turn for the loop every SLICE_SECONDS,
        one client's burst held a replica's other work (the fan-out reader with a join
        barrier's question, say) for seconds. A client that sends now and then costs no
        extra turn: its receives wait."""
        asked = time.monotonic()
        if asked >= self._turn_ends:
            await asyncio.sleep(0)
            asked = time.monotonic()
            self._turn_ends = asked + SLICE_SECONDS
        message = await self.websocket.receive()
        now = time.monotonic()
        if now - asked > WAITED_SECONDS:  # it waited for the client: the loop had its turns
            self._turn_ends = now + SLICE_SECONDS
        return message


async def _resume(step: Coroutine[Any, Any, None], waiting: Any) -> None:
    """Run a coroutine that was started by hand and stopped at `waiting` (what it awaited)
    to its end, in the current task (a coroutine not started yet: `waiting` is None)."""
    try:
        while True:
            if waiting is None:
                await asyncio.sleep(0)  # a bare yield: give the loop one turn
            elif not waiting.done():
                await asyncio.wait([waiting])  # its outcome is the coroutine's to see
            try:
                waiting = step.send(None)
            except StopIteration:
                return
    except BaseException:  # cancelled (or worse): the coroutine will never be resumed
        step.close()
        raise


async def _nothing() -> None:
    return None
