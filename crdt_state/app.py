"""The Starlette application and its composition root (the one place adapters are chosen)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute

from . import rest, snapshot_api
from .auth import LOOPBACK, Authenticator
from .committer import Committer
from .config import Settings
from .connection import CLOSE_SERVER_RESTART
from .errors import StateError
from .idempotency import IdempotencyCache
from .ports import Change, Fanout, StateCache, UpdateLog
from .registry import RoomRegistry
from .room import RoomSettings
from .services import Services
from .snapshot_service import SnapshotService
from .snapshots import SnapshotRepository
from .state_socket import state_socket
from .yjs_socket import Receive, Scope, Send, YjsSocket, yjs_path, yjs_socket


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
                return await yjs_socket(socket, self.state.services)
        await self.starlette(scope, receive, send)


@dataclass(slots=True)
class Adapters:
    log: UpdateLog
    fanout: Fanout
    cache: StateCache | None
    snapshots: SnapshotRepository


async def open_adapters(settings: Settings, replica_id: str) -> Adapters:
    """Pick the adapters the settings ask for: the composition root's one decision."""
    from adapters.git import GitSnapshotRepository

    log_store: UpdateLog
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
        committer = Committer(parts.log, window_seconds=settings.commit_window_ms / 1000)
        committer.start()
        registry = RoomRegistry(
            parts.log,
            parts.fanout,
            committer,
            settings=RoomSettings(
                checkpoint_every=settings.checkpoint_every,
                max_awareness_bytes=settings.max_awareness_bytes,
            ),
            idle_seconds=settings.room_idle_seconds,
            replica_id=replica_id,
            cache=parts.cache,
        )
        registry.start()
        snapshots = SnapshotService(
            parts.log,
            registry,
            parts.snapshots,
            interval_seconds=settings.snapshot_interval_seconds,
        )

        def changed(change: Change, version: int) -> None:
            snapshots.mark_changed(change.key.workspace_id)

        committer.add_listener(changed)
        snapshots.start()
        origins = list(settings.allowed_origins) + ([LOOPBACK] if settings.dev else [])
        app.state.snapshots = snapshots
        app.state.services = Services(
            settings,
            auth,
            parts.log,
            parts.fanout,
            committer,
            registry,
            origins,
            IdempotencyCache(),
            cache=parts.cache,
            snapshots=snapshots,
        )
        try:
            yield
        finally:
            await snapshots.close()
            await registry.close(CLOSE_SERVER_RESTART)
            await committer.close()
            if adapters is None:
                await parts.snapshots.close()
                await parts.log.close()
                await parts.fanout.close()
                if parts.cache is not None:
                    await parts.cache.close()

    starlette = Starlette(
        routes=[
            Route("/health", rest.health),
            Route("/ready", rest.ready),
            Route("/metrics", rest.metrics),
            *snapshot_api.snapshot_routes(),
            Route("/api/state/{workspace}/{panel}", rest.get_state, methods=["GET"]),
            Route("/api/state/{workspace}/{panel}", rest.put_state, methods=["PUT"]),
            Route("/api/state/{workspace}/{panel}", rest.patch_state, methods=["PATCH"]),
            Route("/api/state/{workspace}/{panel}", rest.delete_state, methods=["DELETE"]),
            Route("/api/state/{workspace}/{panel}/history", rest.get_history, methods=["GET"]),
            Route("/api/state/{workspace}/{panel}/revert", rest.revert_state, methods=["POST"]),
            WebSocketRoute("/ws/state/{workspace}", state_socket),
        ],
        exception_handlers={StateError: rest.state_error},
        lifespan=lifespan,
    )
    return App(starlette)


def app_from_environment() -> App:
    """The app of one worker of `crdt-state serve --workers N`."""
    settings = Settings.from_env()
    settings.dev = os.environ.get("CRDT_STATE_DEV") == "1"
    return create_app(settings)
