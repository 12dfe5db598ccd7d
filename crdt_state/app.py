"""The Starlette application and its composition root (the one place adapters are chosen)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from .auth import LOOPBACK, Authenticator
from .config import Settings
from .errors import StateError
from .faces.context import Context
from .faces.health import health_routes
from .faces.http import state_error
from .faces.rest import panel_routes
from .faces.snapshots import snapshot_routes
from .faces.state_socket import state_socket
from .faces.yjs_socket import Receive, Scope, Send, YjsSocket, yjs_path, yjs_socket
from .idempotency import IdempotencyCache
from .ports import Fanout, SnapshotRepository, StateCache, Store
from .server import Server
from .status import CLOSE_SERVER_RESTART


class App:
    """The server's ASGI app: Yjs sockets straight on ASGI, everything else through Starlette."""

    def __init__(self, starlette: Starlette) -> None:
        self.starlette = starlette
        self.state = starlette.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            params = yjs_path(scope["path"])
            if params is not None:
                socket = YjsSocket(scope, receive, send, *params)
                return await yjs_socket(socket, self.state.context)
        await self.starlette(scope, receive, send)


@dataclass(slots=True)
class Adapters:
    log: Store
    fanout: Fanout
    cache: StateCache | None
    snapshots: SnapshotRepository


async def open_adapters(settings: Settings, replica_id: str) -> Adapters:
    """Pick the adapters the settings ask for: the composition root's one decision."""
    from adapters.git import GitSnapshotRepository

    log_store: Store
    if settings.database_url:
        from adapters.postgres import PostgresUpdateLog

        log_store = await PostgresUpdateLog.open(settings.database_url)
    else:
        from adapters.sqlite import SqliteUpdateLog

        log_store = await SqliteUpdateLog.open(settings.data_dir / "crdt-state.sqlite3")
    fanout: Fanout
    cache: StateCache | None = None
    if settings.redis_url:
        from adapters.redis import RedisFanout, RedisStateCache

        fanout = await RedisFanout.open(settings.redis_url, replica_id)
        cache = await RedisStateCache.open(settings.redis_url)
    else:
        from adapters.local import LocalFanout

        fanout = LocalFanout()
    repository = GitSnapshotRepository(
        settings.git_root, push_url_template=settings.git_push_url or None
    )
    return Adapters(log_store, fanout, cache, repository)


def create_app(settings: Settings, *, adapters: Adapters | None = None) -> App:
    auth = Authenticator(secret=settings.jwt_secret_key, dev=settings.dev)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        replica_id = uuid.uuid4().hex[:12]
        parts = adapters or await open_adapters(settings, replica_id)
        server = Server(
            parts.log,
            parts.fanout,
            parts.snapshots,
            settings,
            cache=parts.cache,
            replica_id=replica_id,
        )
        server.start()
        origins = list(settings.allowed_origins) + ([LOOPBACK] if settings.dev else [])
        app.state.context = Context(
            settings,
            auth,
            server.panels,
            server.registry,
            parts.log,
            parts.log,
            parts.fanout,
            origins,
            IdempotencyCache(),
            snapshots=server.snapshots,
        )
        try:
            yield
        finally:
            await server.close(CLOSE_SERVER_RESTART)
            if adapters is None:
                await parts.snapshots.close()
                await parts.log.close()
                await parts.fanout.close()
                if parts.cache is not None:
                    await parts.cache.close()

    starlette = Starlette(
        routes=[
            *health_routes(),
            *snapshot_routes(),
            *panel_routes(),
            WebSocketRoute("/ws/state/{workspace}", state_socket),
        ],
        exception_handlers={StateError: state_error},
        lifespan=lifespan,
    )
    return App(starlette)


def app_from_environment() -> App:
    """The app of one worker of `crdt-state serve --workers N`."""
    settings = Settings.from_env()
    settings.dev = os.environ.get("CRDT_STATE_DEV") == "1"
    return create_app(settings)
