"""The interfaces the core needs from the outside world; adapters/ implements them.

The core never imports an adapter. Only the composition root (app factory, CLI) picks one.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class PanelKey:
    workspace_id: str
    panel_id: str

    def __str__(self) -> str:
        return f"{self.workspace_id}/{self.panel_id}"


class ChangeType(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    REVERTED = "reverted"


class TriggeredBy(StrEnum):
    USER = "user"
    AI = "ai"
    SYSTEM = "system"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Change:
    """One change to append to a panel's log: one Yjs update, one future version."""

    key: PanelKey
    epoch: str
    update: bytes
    change_type: ChangeType = ChangeType.UPDATED
    triggered_by: TriggeredBy = TriggeredBy.USER
    trigger_source: str | None = None
    subject: str | None = None
    patch: list[dict[str, Any]] | None = None
    occurred_at: datetime = field(default_factory=utcnow)  # timezone-aware
    # Unique per change: appending a change whose id is already logged returns the version it
    # got then instead of appending it again (a retried batch is committed exactly once).
    change_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(slots=True)
class LogEntry:
    """A committed change: what `Change` became once the log gave it a version."""

    version: int
    epoch: str
    update: bytes
    change_type: ChangeType
    triggered_by: TriggeredBy
    trigger_source: str | None
    subject: str | None
    patch: list[dict[str, Any]] | None
    occurred_at: datetime


@dataclass(slots=True)
class PanelInfo:
    key: PanelKey
    epoch: str
    version: int
    created_by: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class Checkpoint:
    version: int
    state: bytes  # the full Yjs state (encoded once by replaying into a fresh doc)


@dataclass(slots=True)
class LoadedPanel:
    """What it takes to rebuild a panel's doc: latest checkpoint plus the log after it."""

    info: PanelInfo
    checkpoint: Checkpoint | None
    tail: list[LogEntry]


class UpdateLog(Protocol):
    """The append-only, versioned log of every panel's changes."""

    async def create(self, change: Change) -> PanelInfo | None:
        """Create the panel with `change` as its next version (1 for a new panel);
        `change.epoch` is its new epoch.

        Returns None when a live panel with that key exists already (someone else won).
        A deleted panel is re-created: versions continue after its last one.
        """
        ...

    async def append(self, changes: Sequence[Change]) -> list[int]:
        """Append in order, in one transaction; return the version given to each change.

        Versions are gapless per panel. Raises PanelNotFound for a missing or deleted panel
        and StaleEpoch when `change.epoch` is not the panel's current epoch; then nothing
        of the batch is written.
        """
        ...

    async def load(self, key: PanelKey, until: int | None = None) -> LoadedPanel | None:
        """The newest checkpoint at or before `until` (default: latest) of the current
        epoch, and the log entries after it up to `until`. None for a missing or deleted
        panel."""
        ...

    async def read(
        self, key: PanelKey, after: int = 0, until: int | None = None, limit: int = 1000
    ) -> list[LogEntry]:
        """Log entries with after < version <= until, oldest first, at most `limit`.

        Spans every epoch, and works for deleted panels (their history is kept)."""
        ...

    async def history(
        self,
        key: PanelKey,
        *,
        limit: int,
        offset: int = 0,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> tuple[list[LogEntry], int]:
        """A page of the panel's log, newest first, with occurred_at in [since, until], and the
        total number of entries matching (for paging). Spans every epoch; [] for no panel."""
        ...

    async def save_checkpoint(self, key: PanelKey, epoch: str, checkpoint: Checkpoint) -> None:
        """Store a checkpoint of a logged version of the current epoch.

        PanelNotFound for a missing panel; StaleEpoch for a deleted one or an older epoch."""
        ...

    async def save_view(
        self, key: PanelKey, epoch: str, version: int, view: dict[str, Any]
    ) -> None:
        """Keep the panel's current JSON view (as of `version`) beside the log, for queries.

        Ignored when a view of an equal or newer version is stored, or the epoch is stale.
        A cache of the log, never the truth: written after commits, off the write path.
        """
        ...

    async def ping(self) -> None:
        """Raise if the store cannot be reached (readiness probe)."""
        ...

    async def close(self) -> None: ...


class FanoutKind(StrEnum):
    UPDATE = "update"  # a Yjs update, already applied by the replica that publishes it
    AWARENESS = "awareness"  # an encoded awareness update
    DELETED = "deleted"  # the panel was deleted


@dataclass(frozen=True, slots=True)
class FanoutMessage:
    kind: FanoutKind
    payload: bytes
    origin: str  # the publishing replica's id; a replica ignores its own messages


FanoutCallback = Callable[[FanoutMessage], Awaitable[None] | None]


class Subscription(Protocol):
    async def close(self) -> None: ...


class Fanout(Protocol):
    """Carries changes between replicas that hold the same panel."""

    async def publish(self, key: PanelKey, message: FanoutMessage) -> None: ...

    async def subscribe(self, key: PanelKey, callback: FanoutCallback) -> Subscription: ...

    async def close(self) -> None: ...
