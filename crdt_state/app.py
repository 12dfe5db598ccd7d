"""The Starlette application and its composition root (the one place adapters are chosen)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from .auth import (
    LOOPBACK,
    Authenticator,
    Principal,
    Role,
    bearer_token,
    origin_allowed,
    websocket_token,
)
from .committer import Committer
from .config import Settings
from .connection import (
    CLOSE_BAD_MESSAGE,
    CLOSE_FORBIDDEN,
    CLOSE_NOT_FOUND,
    CLOSE_SERVER_RESTART,
    CLOSE_STALE_EPOCH,
    CLOSE_TOO_LARGE,
    CLOSE_UNAUTHORIZED,
    Connection,
)
from .errors import Forbidden, PanelNotFound, StateError, Unauthorized
from .ports import Fanout, PanelKey, UpdateLog
from .protocol import ProtocolError, decode
from .registry import RoomRegistry
from .room import Room, RoomSettings

log = logging.getLogger(__name__)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


@dataclass(slots=True)
class Services:
    settings: Settings
    auth: Authenticator
    log: UpdateLog
    fanout: Fanout
    committer: Committer
    registry: RoomRegistry
    allowed_origins: list[str]


async def open_adapters(settings: Settings) -> tuple[UpdateLog, Fanout]:
    """Pick the adapters the settings ask for: the composition root's one decision."""
    from adapters.local import LocalFanout
    from adapters.sqlite import SqliteUpdateLog

    if settings.database_url:
        raise SystemExit("DATABASE_URL is set, but the PostgreSQL store is not built yet.")
    if settings.redis_url:
        raise SystemExit("REDIS_URL is set, but the Redis fan-out is not built yet.")
    log_store = await SqliteUpdateLog.open(settings.data_dir / "crdt-state.sqlite3")
    return log_store, LocalFanout()


def create_app(
    settings: Settings, *, log_store: UpdateLog | None = None, fanout: Fanout | None = None
) -> Starlette:
    auth = Authenticator(secret=settings.jwt_secret_key, dev=settings.dev)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store, bus = log_store, fanout
        if store is None or bus is None:
            store, bus = await open_adapters(settings)
        committer = Committer(store, window_seconds=settings.commit_window_ms / 1000)
        committer.start()
        registry = RoomRegistry(
            store,
            bus,
            committer,
            settings=RoomSettings(
                checkpoint_every=settings.checkpoint_every,
                max_awareness_bytes=settings.max_awareness_bytes,
            ),
            idle_seconds=settings.room_idle_seconds,
        )
        registry.start()
        origins = list(settings.allowed_origins) + ([LOOPBACK] if settings.dev else [])
        app.state.services = Services(settings, auth, store, bus, committer, registry, origins)
        try:
            yield
        finally:
            await registry.close(CLOSE_SERVER_RESTART)
            await committer.close()
            if log_store is None:
                await store.close()
            if fanout is None:
                await bus.close()

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/api/state/{workspace}/{panel}", get_state, methods=["GET"]),
            WebSocketRoute("/ws/yjs/{workspace}/{panel}", yjs_socket),
        ],
        exception_handlers={StateError: state_error},
        lifespan=lifespan,
    )


# -- REST ---------------------------------------------------------------------------------


async def state_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StateError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return JSONResponse(exc.to_json(), status_code=exc.status, headers=headers)


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _principal(request: Request, workspace: str, needed: Role) -> tuple[Principal, Role]:
    services: Services = request.app.state.services
    principal = services.auth.authenticate(bearer_token(request.headers.get("authorization")))
    return principal, services.auth.authorize(principal, workspace, needed)


async def get_state(request: Request) -> Response:
    services: Services = request.app.state.services
    workspace, panel = request.path_params["workspace"], request.path_params["panel"]
    _principal(request, workspace, Role.READ)
    room = await services.registry.open(PanelKey(workspace, panel), create=False)
    await room.settle()
    view, version, updated_at = await room.call(room.view)
    return JSONResponse(
        {
            "workspaceId": workspace,
            "panelId": panel,
            "state": view,
            "version": version,
            "epoch": room.epoch,
            "updatedAt": updated_at.isoformat(),
        },
        headers={"ETag": f'"{version}"'},
    )


# -- WebSocket, y-websocket protocol ---------------------------------------------------------


async def _refuse(websocket: WebSocket, subprotocol: str | None, code: int, reason: str) -> None:
    # Accept first so that the client sees the close code; a refused handshake hides it.
    await websocket.accept(subprotocol=subprotocol)
    await websocket.close(code, reason[:120])


async def yjs_socket(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    settings = services.settings
    workspace = websocket.path_params["workspace"]
    key = PanelKey(workspace, websocket.path_params["panel"])
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
