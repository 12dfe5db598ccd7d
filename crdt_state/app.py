"""The Starlette application and its composition root (the one place adapters are chosen)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute

from . import rest
from .auth import LOOPBACK, Authenticator
from .committer import Committer
from .config import Settings
from .connection import CLOSE_SERVER_RESTART
from .errors import StateError
from .idempotency import IdempotencyCache
from .ports import Fanout, UpdateLog
from .registry import RoomRegistry
from .room import RoomSettings
from .services import Services
from .state_socket import state_socket
from .yjs_socket import yjs_socket


async def open_adapters(settings: Settings) -> tuple[UpdateLog, Fanout]:
    """Pick the adapters the settings ask for: the composition root's one decision."""
    from adapters.local import LocalFanout

    log_store: UpdateLog
    if settings.database_url:
        from adapters.postgres import PostgresUpdateLog

        log_store = await PostgresUpdateLog.open(settings.database_url)
    else:
        from adapters.sqlite import SqliteUpdateLog

        log_store = await SqliteUpdateLog.open(settings.data_dir / "crdt-state.sqlite3")
    if settings.redis_url:
        raise SystemExit("REDIS_URL is set, but the Redis fan-out is not built yet.")
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
        app.state.services = Services(
            settings, auth, store, bus, committer, registry, origins, IdempotencyCache()
        )
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
            Route("/health", rest.health),
            Route("/ready", rest.ready),
            Route("/api/state/{workspace}/{panel}", rest.get_state, methods=["GET"]),
            Route("/api/state/{workspace}/{panel}", rest.put_state, methods=["PUT"]),
            Route("/api/state/{workspace}/{panel}", rest.patch_state, methods=["PATCH"]),
            Route("/api/state/{workspace}/{panel}", rest.delete_state, methods=["DELETE"]),
            Route("/api/state/{workspace}/{panel}/history", rest.get_history, methods=["GET"]),
            Route("/api/state/{workspace}/{panel}/revert", rest.revert_state, methods=["POST"]),
            WebSocketRoute("/ws/yjs/{workspace}/{panel}", yjs_socket),
            WebSocketRoute("/ws/state/{workspace}", state_socket),
        ],
        exception_handlers={StateError: rest.state_error},
        lifespan=lifespan,
    )
