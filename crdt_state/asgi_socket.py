"""A WebSocket on bare ASGI, for the faces that carry Yjs frames (`/ws/yjs`, `/ws/hocuspocus`).

Those faces are served outside Starlette's router and middleware: a connection lives for hours
and carries thousands of frames, and each Starlette layer keeps a coroutine frame per
connection and adds calls per frame (6 KiB of memory per idle client, docs/BENCHMARKS.md).

Frames written straight to the transport. A broadcast sends the same update to every client
of a room. Through ASGI each of them costs a coroutine, an event wait, a frame object and its
serialisation in `websockets`, a join and the write. Under uvicorn's `websockets-sansio`
protocol (the one `crdt-state serve` runs), when the connection is open, writable and has no
extension (no permessage-deflate), a server's binary frame is the same bytes whatever the
receiver: a two-to-ten-byte header and the payload, unmasked (RFC 6455, 5.2). Those frames are
built once per payload and written to each transport directly; any other state (handshake,
closing, a paused transport, deflate, another ASGI server) goes through ASGI as before.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.datastructures import Headers, QueryParams
from starlette.websockets import WebSocketState
from websockets.protocol import State

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
log = logging.getLogger(__name__)
# The uvicorn WebSocket protocol `crdt-state serve` runs, whose frames can be written directly.
UVICORN_WS = "websockets-sansio"

# What the direct path reads of uvicorn's protocol object and of its `websockets` connection.
_PROTOCOL_ATTRIBUTES = ("conn", "transport", "writable", "close_sent", "handshake_complete")
_CONNECTION_ATTRIBUTES = ("extensions", "expect_continuation_frame", "state", "debug")
_CHECKED: dict[type, bool] = {}  # protocol classes: whether the direct path can use them


def binary_frame(payload: bytes) -> bytes:
    """A final, unmasked binary frame (a server's) carrying `payload`."""
    length = len(payload)
    if length < 126:
        return bytes((0x82, length)) + payload
    if length < 65536:
        return struct.pack("!BBH", 0x82, 126, length) + payload
    return struct.pack("!BBQ", 0x82, 127, length) + payload


class _LastFrame:
    """The frame of the last payload written directly: a broadcast frames its update once."""

    __slots__ = ("frame", "payload")

    def __init__(self) -> None:
        self.payload: bytes | None = None
        self.frame = b""

    def of(self, payload: bytes) -> bytes:
        if payload is not self.payload:
            self.frame = binary_frame(payload)
            self.payload = payload
        return self.frame


_last = _LastFrame()


def _direct_protocol(send: Send) -> Any:
    """uvicorn's protocol object behind `send` when it is the sans-I/O `websockets` one with
    what the direct path reads; None otherwise (every frame then goes through ASGI)."""
    protocol = getattr(send, "__self__", None)
    kind = type(protocol)
    if kind in _CHECKED:  # checked on its first connection (uvicorn sets them all in __init__)
        return protocol if _CHECKED[kind] else None
    if kind.__name__ != "WebSocketsSansIOProtocol":
        return None
    conn = getattr(protocol, "conn", None)
    usable = all(hasattr(protocol, name) for name in _PROTOCOL_ATTRIBUTES) and all(
        hasattr(conn, name) for name in _CONNECTION_ATTRIBUTES
    )
    if not usable:
        log.warning("uvicorn's WebSocket protocol changed: frames go through ASGI")
    _CHECKED[kind] = usable
    return protocol if usable else None


class AsgiSocket:
    """One WebSocket on bare ASGI: what the Yjs faces need of it, no more."""

    __slots__ = ("_protocol", "_receive", "_send", "application_state", "path_params", "scope")

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        path_params: dict[str, str] | None = None,
    ) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self._protocol = _direct_protocol(send)
        self.path_params = path_params or {}
        self.application_state = WebSocketState.CONNECTING

    @property
    def headers(self) -> Headers:
        return Headers(scope=self.scope)

    @property
    def query_params(self) -> QueryParams:
        return QueryParams(self.scope.get("query_string", b""))

    @property
    def direct(self) -> bool:
        """Whether frames can be written straight to the transport (module docstring)."""
        return self._protocol is not None

    async def accept(self, subprotocol: str | None = None) -> None:
        if self.application_state is WebSocketState.CONNECTING:
            message = await self._receive()  # websocket.connect
            if message["type"] != "websocket.connect":
                self.application_state = WebSocketState.DISCONNECTED
                return
        await self._send({"type": "websocket.accept", "subprotocol": subprotocol})
        self.application_state = WebSocketState.CONNECTED

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.application_state is WebSocketState.DISCONNECTED:
            return
        self.application_state = WebSocketState.DISCONNECTED
        await self._send({"type": "websocket.close", "code": code, "reason": reason})

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "websocket.disconnect":
            self.application_state = WebSocketState.DISCONNECTED
        return message

    async def send_bytes(self, data: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": data})

    def write_now(self, data: bytes) -> bool:
        """Write `data` as one binary frame straight to the transport, if the connection is
        in the state where that is all uvicorn would do; False, writing nothing, otherwise
        (the caller then sends it through send_bytes)."""
        protocol = self._protocol
        if protocol is None or protocol.close_sent or not protocol.handshake_complete:
            return False
        conn = protocol.conn
        if (
            conn.extensions
            or conn.expect_continuation_frame
            or conn.debug
            or conn.state is not State.OPEN
            or not protocol.writable.is_set()
            or protocol.transport.is_closing()
        ):
            return False
        try:
            protocol.transport.write(_last.of(data))
        except Exception:  # the transport went away meanwhile: ASGI's path reports it
            return False
        return True
