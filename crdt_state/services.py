"""What the request handlers share: settings, auth, the log, the rooms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import HTTPConnection
from starlette.responses import Response

from .auth import Authenticator
from .committer import Committer
from .config import Settings
from .idempotency import IdempotencyCache
from .ports import Fanout, StateCache, UpdateLog
from .registry import RoomRegistry

if TYPE_CHECKING:
    from .snapshot_service import SnapshotService


@dataclass(slots=True)
class Services:
    settings: Settings
    auth: Authenticator
    log: UpdateLog
    fanout: Fanout
    committer: Committer
    registry: RoomRegistry
    allowed_origins: list[str]
    idempotency: IdempotencyCache
    cache: StateCache | None = None
    snapshots: SnapshotService | None = None
    cache_hits: int = 0
    cache_misses: int = 0


def services_of(connection: HTTPConnection) -> Services:
    services: Services = connection.app.state.services
    return services


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
