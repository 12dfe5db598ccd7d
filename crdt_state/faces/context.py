"""What the faces reach: settings, authentication, the panel service, the snapshot service,
the live rooms (for Yjs sockets and metrics), the fan-out (JSON subscribers' notices), the
store probe, the live sockets (closed on expiry and revocation), the revocation service and
the AI contexts' cache. Built by the composition root (app.py), one per process."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from ..auth import Authenticator
from ..config import Settings
from ..idempotency import IdempotencyCache
from ..metrics import Metrics
from ..panels import PanelService
from ..ports import Fanout, Probe, UpdateLog
from ..prompt_context import ContextCache
from ..rate_limits import RateLimits
from ..registry import RoomRegistry
from ..revocations import RevocationService
from ..snapshots import SnapshotService
from ..sockets import LiveSockets


@dataclass(slots=True)
class Context:
    settings: Settings
    auth: Authenticator
    panels: PanelService
    registry: RoomRegistry
    log: UpdateLog
    probe: Probe
    fanout: Fanout
    allowed_origins: list[str]
    idempotency: IdempotencyCache
    snapshots: SnapshotService | None = None
    sockets: LiveSockets = field(default_factory=LiveSockets)  # every live socket, for 4401
    revocations: RevocationService | None = None
    limits: RateLimits = field(default_factory=RateLimits)
    metrics: Metrics = field(default_factory=Metrics)  # this app's series (/metrics)
    prompt_contexts: ContextCache = field(default_factory=ContextCache)  # AI contexts


def context_of(connection: HTTPConnection) -> Context:
    context: Context = connection.app.state.context
    return context
