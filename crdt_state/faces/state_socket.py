"""The JSON WebSocket: `/ws/state/{workspace}` (the seed's subscription protocol).

Client → server (text frames, JSON):
    {"type": "subscribe", "panelId": "p", "version": 12}   version: optional, the one it has
    {"type": "unsubscribe", "panelId": "p"}
    {"type": "ping"}
Server → client:
    {"type": "state_sync", "panelId", "state", "version", "timestamp", ...}  on subscribe
                                                                    without version
    {"type": "state_update", "panelId", "version", "patch", "triggeredBy", "timestamp", ...}
        every committed version, in order, from any replica (after subscribe with a version:
        first the ones missed, from the log)
    {"type": "state_deleted", ...}, {"type": "subscribed" | "unsubscribed", "panelId"},
    {"type": "pong"}, {"type": "error", "code", "message"}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import log_format
from ..auth import Role, origin_allowed, websocket_token
from ..errors import BadRequest, StateError
from ..model import Notice, PanelKey, utcnow
from ..panel_feed import PanelFeed
from ..ports import Subscription
from ..status import (
    CLOSE_BAD_MESSAGE,
    CLOSE_FORBIDDEN,
    CLOSE_TOO_LARGE,
    CLOSE_TRY_AGAIN,
    close_code,
)
from .context import Context, context_of

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024
MAX_PANELS = 1000
HIGH_WATER_BYTES = 1024 * 1024  # queued beyond this, senders wait for the client to read


class StateSession:
    def __init__(self, websocket: WebSocket, context: Context, workspace: str) -> None:
        self.websocket = websocket
        self.context = context
        self.workspace = workspace
        self.feeds: dict[str, PanelFeed] = {}
        self.closing = False
        self.slow_after = context.settings.slow_client_seconds
        self._outbox: deque[str] = deque()
        self._queued_bytes = 0
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()  # set while the queue is under its high water mark
        self._drained.set()
        self._writer = asyncio.create_task(self._write(), name="state socket writer")

    async def send(self, message: dict[str, Any]) -> None:
        """Queue a message. While a megabyte waits unsent, senders wait for the client to
        read (a catch-up from the log slows down to the client's pace); a client that reads
        nothing for `slow_client_seconds` is closed with 1013 (try again later)."""
        if self.closing:
            return
        if not self._drained.is_set():
            try:
                await asyncio.wait_for(self._drained.wait(), self.slow_after)
            except TimeoutError:
                self._give_up()
                return
        text = orjson.dumps(message).decode()
        self._outbox.append(text)
        self._queued_bytes += len(text)
        if self._queued_bytes >= HIGH_WATER_BYTES:
            self._drained.clear()
        self._ready.set()

    async def _write(self) -> None:
        with contextlib.suppress(Exception):  # the peer went away: the reader sees it too
            while True:
                await self._ready.wait()
                self._ready.clear()
                while self._outbox and not self.closing:
                    text = self._outbox.popleft()
                    self._queued_bytes -= len(text)
                    await self.websocket.send_text(text)
                    if self._queued_bytes < HIGH_WATER_BYTES:
                        self._drained.set()
                if self.closing:  # after the frame in progress: never cut one in half
                    await self.websocket.close(CLOSE_TRY_AGAIN, "send queue full: client too slow")
                    return

    def _give_up(self) -> None:
        log.warning("closing a JSON subscriber of %s: it does not read", self.workspace)
        self.closing = True
        self._outbox.clear()
        self._queued_bytes = 0
        self._drained.set()
        self._ready.set()

    @property
    def queued_bytes(self) -> int:
        """Bytes of messages waiting to be sent (/metrics)."""
        return self._queued_bytes

    async def error(self, code: str, message: str, **extra: Any) -> None:
        self.context.metrics.refuse("json", code)
        await self.send({"type": "error", "code": code, "message": message, **extra})

    def on_notice(self, notice: Notice) -> None:
        feed = self.feeds.get(notice.key.panel_id)
        if feed is not None:
            feed.notice(notice)

    async def handle(self, message: Any) -> None:
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.error("bad_request", "Each message is a JSON object with a 'type'.")
            return
        kind = message["type"]
        if kind == "ping":
            await self.send({"type": "pong"})
        elif kind == "subscribe":
            await self.subscribe(message)
        elif kind == "unsubscribe":
            panel = message.get("panelId")
            feed = self.feeds.pop(str(panel), None)
            if feed is not None:
                await feed.close()
            await self.send({"type": "unsubscribed", "panelId": panel})
        else:
            await self.error("bad_request", f"Unknown message type {kind!r}.")

    async def subscribe(self, message: dict[str, Any]) -> None:
        panel, version = message.get("panelId"), message.get("version")
        if not isinstance(panel, str) or not panel:
            await self.error("bad_request", "'panelId' must be a non-empty string.")
            return
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            await self.error("bad_request", "'version' must be an integer.", panelId=panel)
            return
        if panel in self.feeds or len(self.feeds) >= MAX_PANELS:
            await self.error(
                "bad_request", "Already subscribed, or too many panels.", panelId=panel
            )
            return
        key = PanelKey(self.workspace, panel)
        try:
            key.check()
        except ValueError as exc:
            await self.error("bad_request", str(exc), panelId=panel)
            return
        try:
            feed = await self._start_feed(key, version)
        except StateError as exc:
            await self.error(exc.code, exc.message, panelId=panel)
            return
        self.feeds[panel] = feed
        await self.send({"type": "subscribed", "panelId": panel, "version": feed.version})

    async def _start_feed(self, key: PanelKey, version: int | None) -> PanelFeed:
        panels = self.context.panels
        if version is None:
            current = await panels.read(key)
            at = current.version
            exact, _ = await panels.read_at(key, at)  # exactly version `at`
            when = exact.updated_at or current.updated_at or utcnow()
            await self.send(
                {
                    "type": "state_sync",
                    **current.to_json(),
                    "state": exact.view,
                    "timestamp": when.isoformat(),
                }
            )
        else:
            current = await panels.read(key)
            if version > current.version:
                raise BadRequest(
                    f"Version {version} is ahead of the panel's ({current.version}): "
                    "subscribe with a version you have, or without one.",
                    currentVersion=current.version,
                )
            at = version
        feed = PanelFeed(self.context.log, key, at, self.send)
        if version is not None:
            await feed.catch_up()
        return feed

    async def close(self) -> None:
        for feed in self.feeds.values():
            await feed.close()
        self.feeds.clear()
        self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)


async def state_socket(websocket: WebSocket) -> None:
    context = context_of(websocket)
    metrics = context.metrics
    workspace = websocket.path_params["workspace"]
    # Every line this subscriber causes names it and its workspace (crdt_state/log_format.py).
    log_format.bind_connection(workspace)
    headers = websocket.headers
    if not origin_allowed(headers.get("origin"), context.allowed_origins, headers.get("host")):
        metrics.refuse_close("json", CLOSE_FORBIDDEN)
        await websocket.close(CLOSE_FORBIDDEN)
        return
    token, subprotocol = websocket_token(
        websocket.query_params.get("token"), websocket.scope.get("subprotocols", [])
    )
    await websocket.accept(subprotocol=subprotocol)
    try:
        await context.auth.prepare(token)
        principal = context.auth.authenticate(token)
        context.auth.authorize(principal, workspace, Role.READ)
    except StateError as exc:
        metrics.refuse_close("json", close_code(exc))
        await websocket.close(close_code(exc), exc.message[:120])
        return
    try:
        PanelKey(workspace, "-").check()
    except ValueError as exc:
        metrics.refuse_close("json", CLOSE_BAD_MESSAGE)
        await websocket.close(CLOSE_BAD_MESSAGE, str(exc))
        return
    session = StateSession(websocket, context, workspace)
    subscription: Subscription = await context.fanout.subscribe_notices(
        workspace, session.on_notice
    )
    # Closed with 4401 when the token expires or is revoked (on any replica).
    live = context.sockets.register(principal, websocket.close)
    metrics.json_sockets.add(session)  # counted and its queue summed (/metrics)
    try:
        while True:
            frame = await websocket.receive()
            if frame["type"] == "websocket.disconnect":
                return
            text = frame.get("text")
            if text is None:
                metrics.refuse_close("json", CLOSE_BAD_MESSAGE)
                await websocket.close(CLOSE_BAD_MESSAGE, "send JSON in text frames")
                return
            if len(text) > MAX_MESSAGE_BYTES:
                metrics.refuse_close("json", CLOSE_TOO_LARGE)
                await websocket.close(CLOSE_TOO_LARGE, "message too large")
                return
            try:
                message = orjson.loads(text)
            except orjson.JSONDecodeError:
                await session.error("bad_request", "Messages must be JSON.")
                continue
            await session.handle(message)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        metrics.json_sockets.discard(session)
        context.sockets.unregister(live)
        with contextlib.suppress(Exception):
            await subscription.close()
        await session.close()
