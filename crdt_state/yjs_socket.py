"""The WebSocket face for Yjs clients: `/ws/yjs/{workspace}/{panel}` (y-websocket protocol)."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.websockets import WebSocket

from .auth import Role, origin_allowed, websocket_token
from .connection import (
    CLOSE_BAD_MESSAGE,
    CLOSE_FORBIDDEN,
    CLOSE_NOT_FOUND,
    CLOSE_STALE_EPOCH,
    CLOSE_TOO_LARGE,
    CLOSE_UNAUTHORIZED,
    Connection,
)
from .errors import Forbidden, PanelNotFound, Unauthorized
from .ports import PanelKey
from .protocol import ProtocolError, decode
from .room import Room
from .services import services_of


async def _refuse(websocket: WebSocket, subprotocol: str | None, code: int, reason: str) -> None:
    # Accept first so that the client sees the close code; a refused handshake hides it.
    await websocket.accept(subprotocol=subprotocol)
    await websocket.close(code, reason[:120])


async def yjs_socket(websocket: WebSocket) -> None:
    services = services_of(websocket)
    settings = services.settings
    workspace = websocket.path_params["workspace"]
    key = PanelKey(workspace, websocket.path_params["panel"])
    try:
        key.check()
    except ValueError as exc:
        return await _refuse(websocket, None, CLOSE_BAD_MESSAGE, str(exc))
    if not origin_allowed(websocket.headers.get("origin"), services.allowed_origins):
        await websocket.close(CLOSE_FORBIDDEN)  # before accept: the handshake gets a 403
        return
    token, subprotocol = websocket_token(
        websocket.query_params.get("token"), websocket.scope.get("subprotocols", [])
    )
    try:
        principal = services.auth.authenticate(token)
        role = services.auth.authorize(principal, workspace, Role.READ)
    except Unauthorized as exc:
        return await _refuse(websocket, subprotocol, CLOSE_UNAUTHORIZED, exc.message)
    except Forbidden as exc:
        return await _refuse(websocket, subprotocol, CLOSE_FORBIDDEN, exc.message)
    can_write = role >= Role.WRITE
    try:
        room = await services.registry.open(key, create=can_write, subject=principal.subject)
    except PanelNotFound as exc:
        return await _refuse(websocket, subprotocol, CLOSE_NOT_FOUND, exc.message)
    epoch = websocket.query_params.get("epoch")
    if epoch and epoch != room.epoch:
        return await _refuse(
            websocket, subprotocol, CLOSE_STALE_EPOCH, "stale epoch: drop the local copy"
        )
    await websocket.accept(subprotocol=subprotocol)
    conn = Connection(
        websocket,
        principal,
        can_write=can_write,
        max_queue_messages=settings.send_queue_messages,
        max_queue_bytes=settings.send_queue_bytes,
    )
    writer = asyncio.create_task(conn.run_writer())
    try:
        await room.call(room.join, conn)
        await _read_frames(conn, room, settings.max_message_bytes)
    finally:
        if not room.closed:
            await room.submit(room.leave, conn)
        if conn.closing:
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(writer, 5)
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)


async def _read_frames(conn: Connection, room: Room, max_bytes: int) -> None:
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
        await room.submit(room.receive, conn, decoded)
