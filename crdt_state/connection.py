"""One WebSocket client of a room, with a bounded send queue.

Broadcasting never awaits a client: it appends to the client's queue and a single writer task
per connection drains it. A client whose queue passes its bound is disconnected with a
transient close code (1013, try again later) instead of growing the server's memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import MutableMapping
from typing import Any, Protocol

from starlette.websockets import WebSocketState

from .auth import Principal

log = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_SERVER_RESTART = 1012
CLOSE_TRY_AGAIN = 1013
CLOSE_BAD_MESSAGE = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_STALE_EPOCH = 4409
CLOSE_TOO_LARGE = 4413
CLOSE_RATE_LIMITED = 4429


class FrameSocket(Protocol):
    """What a connection needs of its WebSocket (Starlette's, or the Yjs face's bare one)."""

    @property
    def application_state(self) -> WebSocketState: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...

    async def receive(self) -> MutableMapping[str, Any]: ...


class Connection:
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
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self.sent_messages = 0

    @property
    def subject(self) -> str:
        return self.principal.subject

    @property
    def closing(self) -> bool:
        return self._close is not None

    def send(self, data: bytes) -> None:
        """Queue a frame; never blocks. Disconnects a client that does not keep up."""
        if self._close is not None:
            return
        if (
            len(self._queue) >= self.max_queue_messages
            or self._queued_bytes + len(data) > self.max_queue_bytes
        ):
            log.warning("closing a slow client of %s: send queue full", self.subject)
            self.close(CLOSE_TRY_AGAIN, "send queue full: client too slow")
            return
        self._queue.append(data)
        self._queued_bytes += len(data)
        self._wakeup.set()

    def close(self, code: int, reason: str = "") -> None:
        """Ask the writer to close the socket; frames still queued are dropped."""
        if self._close is None:
            self._close = (code, reason[:120])
            self._queue.clear()
            self._queued_bytes = 0
            self._wakeup.set()

    async def run_writer(self) -> None:
        ws = self.websocket
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._queue and self._close is None:
                    data = self._queue.popleft()
                    self._queued_bytes -= len(data)
                    await ws.send_bytes(data)
                    self.sent_messages += 1
                if self._close is not None:
                    if ws.application_state == WebSocketState.CONNECTED:
                        await ws.close(*self._close)
                    return
        except Exception as exc:  # the peer went away mid-send: the reader sees it too
            log.debug("writer stopped: %r", exc)
            self._close = self._close or (CLOSE_NORMAL, "")

    async def receive(self) -> MutableMapping[str, Any]:
        return await self.websocket.receive()
