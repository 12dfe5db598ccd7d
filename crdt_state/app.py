"""The Starlette application and its composition root (the one place adapters are chosen)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import cast

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.routing import WebSocketRoute

from . import log_format, shutdown
from .asgi_socket import AsgiSocket, Message, Receive, Scope, Send
from .auth import LOOPBACK, Authenticator, bearer_token
from .config import Settings
from .errors import BadRequest, StateError
from .faces.admin import admin_routes
from .faces.ai_context import context_routes
from .faces.api_docs import api_docs_routes
from .faces.context import Context
from .faces.health import health_routes
from .faces.hocuspocus_socket import hocuspocus_socket
from .faces.http import JSONResponse, http_error, internal_error, state_error
from .faces.inspect import inspect_routes
from .faces.lane import Handler, PanelLane
from .faces.rest import panel_routes
from .faces.snapshots import snapshot_routes
from .faces.state_socket import state_socket
from .faces.yjs_socket import yjs_path, yjs_socket
from .hocuspocus import PATH as HOCUSPOCUS_PATH
from .idempotency import IdempotencyCache
from .ids import check_path_ids
from .jwks import JwksKeys
from .metrics import UNMATCHED, Metrics
from .ports import (
    Fanout,
    IdempotencyStore,
    Revocations,
    SnapshotRepository,
    StateCache,
    Store,
)
from .revocations import RevocationList, RevocationService
from .server import Server
from .sockets import LiveSockets
from .status import CLOSE_BAD_MESSAGE, CLOSE_SERVER_RESTART

log = logging.getLogger(__name__)


class App:
    """The server's ASGI app: Yjs sockets straight on ASGI, everything else through Starlette.

    Every request passes one gate first: the ids in its path (REST, snapshots, both sockets)
    follow the one rule of ids.py, checked on the raw path bytes (400 `bad_request`, or a
    socket closed with 4400); and a bearer token signed with a key the JWKS lacks makes the
    key set be read again before the (synchronous) token check.

    Every HTTP request is observed (`_observed`): its id, its latency. WebSockets are not
    (each face binds its connection's ids and counts what it refuses)."""

    def __init__(
        self,
        starlette: Starlette,
        auth: Authenticator | None = None,
        metrics: Metrics | None = None,
        lane: PanelLane | None = None,
    ) -> None:
        self.starlette = starlette
        self.state = starlette.state
        self.auth = auth
        self.metrics = metrics or Metrics()
        self.lane = lane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            return await self._observed(scope, receive, send)
        # A socket's coroutine is awaited right here: no frame in between, for hours, per idle
        # client (a wrapper's frame cost 328 bytes each).
        await self._route(scope, receive, send)

    def _route(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """What serves a WebSocket or lifespan scope, to be awaited by the caller."""
        if scope["type"] == "websocket":
            try:
                check_path_ids(scope)
            except ValueError as exc:
                return _refuse_ids(scope, receive, send, str(exc), self.metrics)
            params = yjs_path(scope["path"])
            if params is not None:
                workspace, panel = params
                socket = AsgiSocket(scope, receive, send, {"workspace": workspace, "panel": panel})
                return yjs_socket(socket, self.state.context)
            if scope["path"] == HOCUSPOCUS_PATH:  # many panels over one socket
                return hocuspocus_socket(AsgiSocket(scope, receive, send), self.state.context)
        return self.starlette(scope, receive, send)

    async def _observed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An HTTP request: its id (the client's X-Request-ID when sane, else a new one) on
        every log line it causes (uvicorn's access line too) and on its answer; its latency
        by method, route template and status (crdt_state/metrics.py)."""
        request_id = log_format.request_id_of(Headers(scope=scope).get("x-request-id"))
        status = 500  # a request that fails before it answers

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
                log_format.bind_path(scope.get("path_params"))  # routed by now
            await send(message)

        started = time.perf_counter()
        bindings = log_format.bind_request(request_id)
        try:
            await self._serve(scope, receive, answer)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            seconds = time.perf_counter() - started
            self.metrics.request(scope["method"], route, status, seconds)
            log_format.unbind(bindings)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An HTTP request, past its id and metrics."""
        try:
            check_path_ids(scope)
        except ValueError as exc:
            return await _refuse_ids(scope, receive, send, str(exc), self.metrics)
        if self.auth is not None and self.auth.keys is not None:
            await self.auth.prepare(bearer_token(Headers(scope=scope).get("authorization")))
        lane = self.lane
        if lane is not None and (found := lane.route(scope)) is not None:
            return await lane.serve(*found, scope, receive, send)
        await self.starlette(scope, receive, send)


async def _refuse_ids(
    scope: Scope, receive: Receive, send: Send, reason: str, metrics: Metrics
) -> None:
    if scope["type"] == "http":
        error = BadRequest(reason)
        metrics.refuse("rest", error.code)
        await JSONResponse(error.to_json(), status_code=error.status)(scope, receive, send)
        return
    metrics.refuse_close("yjs" if yjs_path(scope["path"]) else "json", CLOSE_BAD_MESSAGE)
    socket = AsgiSocket(scope, receive, send)
    await socket.accept()  # then close: the client sees the code (a refused upgrade hides it)
    await socket.close(CLOSE_BAD_MESSAGE, reason[:120])


@dataclass(slots=True)
class Adapters:
    log: Store
    fanout: Fanout
    cache: StateCache | None
    snapshots: SnapshotRepository
    revocations: Revocations | None = None  # None: the log's, if it keeps them
    idempotency: IdempotencyStore | None = None  # None: idempotency keys kept per replica


def _revocation_store(parts: Adapters) -> Revocations | None:
    if parts.revocations is not None:
        return parts.revocations
    log = parts.log
    if all(hasattr(log, name) for name in ("revoke", "revocations_since", "purge_revocations")):
        return cast(Revocations, log)
    return None


def authenticator(settings: Settings, revoked: RevocationList) -> Authenticator:
    """The token checker the settings describe (ValueError when they do not add up)."""
    keys = None
    if settings.jwks_url or settings.jwks_file:
        keys = JwksKeys(
            url=settings.jwks_url or None,
            path=None if settings.jwks_url else settings.jwks_file,
            cache_seconds=settings.jwks_cache_seconds,
            min_refresh_seconds=settings.jwks_min_refresh_seconds,
        )
    return Authenticator(
        secret=settings.jwt_secret_key,
        algorithms=settings.jwt_algorithms or None,
        dev=settings.dev,
        leeway_seconds=settings.jwt_leeway_seconds,
        keys=keys,
        issuers=settings.jwt_issuer,
        audiences=settings.jwt_audience,
        require_exp=not settings.allow_tokens_without_exp,
        max_lifetime_seconds=settings.max_token_lifetime_seconds or None,
        revoked=revoked,
    )


def revocation_keep_seconds(settings: Settings) -> float | None:
    """How long a revocation is kept: until every token it covers must have expired (the
    longest lifetime accepted, plus the leeway and a minute of clock skew between replicas);
    forever when tokens may live forever."""
    if settings.allow_tokens_without_exp or not settings.max_token_lifetime_seconds:
        return None
    return settings.max_token_lifetime_seconds + settings.jwt_leeway_seconds + 60.0


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
    idempotency: IdempotencyStore | None = None
    if settings.redis_url:
        from adapters.redis import RedisFanout, RedisStateCache
        from adapters.redis_idempotency import RedisIdempotencyStore

        fanout = await RedisFanout.open(settings.redis_url, replica_id)
        cache = await RedisStateCache.open(settings.redis_url)
        idempotency = await RedisIdempotencyStore.open(settings.redis_url, replica_id)
    else:
        from adapters.local import LocalFanout

        fanout = LocalFanout()
    repository = GitSnapshotRepository(
        settings.git_root, push_url_template=settings.git_push_url or None
    )
    return Adapters(
        log_store, fanout, cache, repository, revocations=log_store, idempotency=idempotency
    )


# pycrdt turns a change's values into Python by recursion (its events), one frame per level:
# a log written before updates were checked may hold values ~1,000 levels deep, which
# Python's default limit refuses; such a panel must still load, show and be repaired.
RECURSION_LIMIT = 10_000


def create_app(settings: Settings, *, adapters: Adapters | None = None) -> App:
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
    revoked = RevocationList()
    auth = authenticator(settings, revoked)
    sockets = LiveSockets(covering=revoked.covering)
    metrics = Metrics()  # this app's series (/metrics), in a registry of its own

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        replica_id = uuid.uuid4().hex[:12]
        parts = adapters or await open_adapters(settings, replica_id)
        revocations = RevocationService(
            _revocation_store(parts),
            revoked,
            sockets.close_covered,
            poll_seconds=settings.revocation_poll_seconds,
            keep_seconds=revocation_keep_seconds(settings),
        )
        await revocations.start()  # every revocation in force, before anyone is served
        await auth.start()  # the JWKS, read once (a failure is logged, and retried)
        server = Server(
            parts.log,
            parts.fanout,
            parts.snapshots,
            settings,
            cache=parts.cache,
            replica_id=replica_id,
            metrics=metrics,
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
            IdempotencyCache(shared=parts.idempotency),
            snapshots=server.snapshots,
            sockets=sockets,
            revocations=revocations,
            limits=server.limits,
            metrics=metrics,
        )

        async def drain() -> None:
            answered, asked = await server.drain(settings.drain_seconds)
            closed = sockets.close_all(CLOSE_SERVER_RESTART, "server restarting")
            log.info(
                "stopping: %d of %d Yjs clients handed over what they sent; closed %d sockets",
                answered,
                asked,
                closed,
            )

        stop_draining = shutdown.on_drain(drain)
        try:
            yield
        finally:
            stop_draining()
            await revocations.close()
            await auth.close()
            await server.close(CLOSE_SERVER_RESTART)
            if adapters is None:
                await parts.snapshots.close()
                await parts.log.close()
                await parts.fanout.close()
                if parts.cache is not None:
                    await parts.cache.close()
                if parts.idempotency is not None:
                    await parts.idempotency.close()

    handlers: dict[type[Exception], Handler] = {
        StateError: state_error,
        HTTPException: http_error,
        Exception: internal_error,
    }
    starlette = Starlette(
        routes=[
            # Tried in this order, each path against each route until one matches: the panel
            # routes (the hot ones) come right after the routes their pattern would also take
            # (/api/state/{workspace}/snapshot, .../context), the rest after them.
            *health_routes(),
            *snapshot_routes(),
            *context_routes(),
            *panel_routes(),
            *api_docs_routes(),
            *admin_routes(),
            *inspect_routes(),
            WebSocketRoute("/ws/state/{workspace}", state_socket),
        ],
        exception_handlers=handlers,  # copied by Starlette
        lifespan=lifespan,
    )
    return App(starlette, auth, metrics, PanelLane(starlette, starlette.routes, handlers))


def app_from_environment() -> App:
    """The app of one worker of `crdt-state serve --workers N`."""
    settings = Settings.from_env()
    settings.dev = os.environ.get("CRDT_STATE_DEV") == "1"
    return create_app(settings)
