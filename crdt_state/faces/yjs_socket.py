"""The WebSocket face for Yjs clients: `/ws/yjs/{workspace}/{panel}` (y-websocket protocol).

It is served straight on ASGI (crdt_state/asgi_socket.py), outside Starlette's router and
middleware, for memory per client and cost per frame.
"""

from __future__ import annotations

import asyncio
import logging

from .. import log_format
from ..asgi_socket import AsgiSocket
from ..auth import Principal, Role, origin_allowed, websocket_token
from ..connection import Connection
from ..errors import StateError
from ..metrics import INPUT_CLOSES
from ..model import PanelKey
from ..protocol import MessageType, ProtocolError, SyncType, decode
from ..rate_limits import MAX_WAIT_SECONDS, SocketLimits
from ..room import Room
from ..sessions import YjsSession
from ..status import (
    CLOSE_BAD_MESSAGE,
    CLOSE_FORBIDDEN,
    CLOSE_RATE_LIMITED,
    CLOSE_STALE_EPOCH,
    CLOSE_TOO_LARGE,
    close_code,
)
from .context import Context

PREFIX = "/ws/yjs/"
JOIN_CATCH_UP_SECONDS = 5.0
log = logging.getLogger(__name__)


def yjs_path(path: str) -> tuple[str, str] | None:
    """(workspace, panel) of a `/ws/yjs/{workspace}/{panel}` path, else None."""
    if not path.startswith(PREFIX):
        return None
    workspace, sep, panel = path[len(PREFIX) :].partition("/")
    if not sep or not workspace or not panel or "/" in panel:
        return None
    return workspace, panel


async def _refuse(
    context: Context, websocket: AsgiSocket, subprotocol: str | None, code: int, reason: str
) -> None:
    context.metrics.refuse_close("yjs", code)
    # Accept first so that the client sees the close code; a refused handshake hides it.
    await websocket.accept(subprotocol=subprotocol)
    await websocket.close(code, reason[:120])


async def yjs_socket(websocket: AsgiSocket, context: Context) -> None:
    admitted = await _admit(websocket, context)
    if admitted is None:
        return
    room, principal, can_write = admitted
    settings = context.settings
    conn = Connection(
        websocket,
        principal,
        can_write=can_write,
        max_queue_messages=settings.send_queue_messages,
        max_queue_bytes=settings.send_queue_bytes,
    )
    # Closed with 4401 when the token expires or is revoked (on any replica).
    live = context.sockets.register(principal, conn.close)
    session = YjsSession(room, conn)
    limits = SocketLimits(context.limits, principal.subject)
    try:
        # A join gets every update any replica applied before it began (the other replicas
        # holding the room answer a join barrier; the log covers those that died).
        try:
            await context.registry.replication.current(room, JOIN_CATCH_UP_SECONDS)
        except Exception as exc:  # the log or the fan-out is slow or down: serve the room's
            log.warning("room %s: join not caught up (%r)", room.key, exc)
        await room.call(session.join)
        await _read_frames(session, room, settings.max_message_bytes, limits)
    finally:
        context.sockets.unregister(live)
        code = conn.close_code
        if code is not None and code in INPUT_CLOSES:  # closed for what the client sent
            context.metrics.refuse_close("yjs", code)
        if not room.closed:
            await room.submit(session.leave)
        await conn.finish(5 if conn.closing else 0)


async def _admit(websocket: AsgiSocket, context: Context) -> tuple[Room, Principal, bool] | None:
    """The handshake: the panel, origin, token, role, room and epoch checked, the socket
    accepted; (room, principal, can write), or None once refused. What it reads (headers,
    the token) ends with it, not kept for the socket's life in the caller's frame."""
    workspace = websocket.path_params["workspace"]
    # Every line this client causes names it and its panel (crdt_state/log_format.py).
    log_format.bind_connection(workspace, websocket.path_params["panel"])
    key = PanelKey(workspace, websocket.path_params["panel"])
    try:
        key.check()
    except ValueError as exc:
        await _refuse(context, websocket, None, CLOSE_BAD_MESSAGE, str(exc))
        return None
    headers = websocket.headers
    if not origin_allowed(headers.get("origin"), context.allowed_origins, headers.get("host")):
        context.metrics.refuse_close("yjs", CLOSE_FORBIDDEN)
        await websocket.close(CLOSE_FORBIDDEN)  # before accept: the handshake gets a 403
        return None
    token, subprotocol = websocket_token(
        websocket.query_params.get("token"), websocket.scope.get("subprotocols", [])
    )
    try:
        await context.auth.prepare(token)
        principal = context.auth.authenticate(token)
        role = context.auth.authorize(principal, workspace, Role.READ)
        can_write = role >= Role.WRITE
        room = await context.registry.open(key, create=can_write, subject=principal.subject)
    except StateError as exc:
        await _refuse(context, websocket, subprotocol, close_code(exc), exc.message)
        return None
    epoch = websocket.query_params.get("epoch")
    if epoch and epoch != room.epoch:
        await _refuse(
            context, websocket, subprotocol, CLOSE_STALE_EPOCH, "stale epoch: drop the local copy"
        )
        return None
    await websocket.accept(subprotocol=subprotocol)
    return room, principal, can_write


async def _read_frames(
    session: YjsSession, room: Room, max_bytes: int, limits: SocketLimits
) -> None:
    conn = session.conn
    while not conn.closing:
        message = await conn.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is None:
            conn.close(CLOSE_BAD_MESSAGE, "text frames are not part of the y-websocket protocol")
            return
        if len(data) > max_bytes:
            conn.close(CLOSE_TOO_LARGE, f"message larger than {max_bytes} bytes")
            return
        try:
            decoded = decode(data)
        except ProtocolError as exc:
            conn.close(CLOSE_BAD_MESSAGE, str(exc))
            return
        if decoded.type == MessageType.AWARENESS:
            wait = limits.awareness_wait()
        elif decoded.type == MessageType.SYNC and decoded.sync_type != SyncType.STEP1:
            wait = limits.update_wait(len(decoded.payload))
        else:
            wait = 0.0
        if wait > MAX_WAIT_SECONDS:
            conn.close(CLOSE_RATE_LIMITED, "too many updates: slow down")
            return
        if wait > 0:
            await asyncio.sleep(wait)  # reading nothing meanwhile: TCP slows the client down
        await room.submit(session.receive, decoded)
