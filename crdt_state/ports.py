"""The interfaces the core needs from the outside world; adapters/ implements them.

The core never imports an adapter. Only the composition root (app factory, CLI) picks one.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

MAX_ID_LENGTH = 200


@dataclass(frozen=True, slots=True)
class PanelKey:
    workspace_id: str
    panel_id: str

    def check(self) -> PanelKey:
        """Refuse ids the stores and channels cannot keep apart (ValueError, with why).

        Both: 1-200 characters, no control characters. A workspace id has no ':' (Redis keys
        `state:{ws}:{panel}` must not collide)."""
        for name, value in (("workspace", self.workspace_id), ("panel", self.panel_id)):
            if not 0 < len(value) <= MAX_ID_LENGTH:
                raise ValueError(f"A {name} id has 1 to {MAX_ID_LENGTH} characters.")
            if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
                raise ValueError(f"A {name} id cannot hold control characters.")
        if ":" in self.workspace_id:
            raise ValueError("A workspace id cannot contain ':'.")
        return self

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


_ID_PREFIX = os.urandom(8).hex()  # random per process: ids never repeat across processes
_ID_COUNTER = itertools.count()


def _new_id_prefix() -> None:
    global _ID_PREFIX
    _ID_PREFIX = os.urandom(8).hex()


os.register_at_fork(after_in_child=_new_id_prefix)  # a forked worker is another process


def next_change_id() -> str:
    """A new change id: 32 hex characters, unique across processes and restarts (a random
    per-process prefix, then a counter: a system call per change for randomness cost 19 µs)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """One row of `state_snapshots`: a snapshot of a workspace's panels (to Git, usually)."""

    workspace_id: str
    snapshot_id: str  # a UUID in its text form
    snapshot_type: str  # manual, auto or pre_ai_edit
    description: str | None
    panel_count: int
    total_size_bytes: int
    git_commit_hash: str | None
    panel_versions: dict[str, int]
    created_by: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PanelView:
    """A panel's JSON view as of a committed version, for UpdateLog.save_view/append."""

    key: PanelKey
    epoch: str
    version: int
    view: dict[str, Any]


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
    change_id: str = field(default_factory=lambda: next_change_id())
    # The version `patch` is exact for: it was computed on the state of the log's first
    # expected_version - 1 entries. If the change gets another version (another replica wrote
    # in between), the store keeps no patch and readers compute it in log order.
    # None: no expectation, store the patch as is.
    expected_version: int | None = None

    def patch_for(self, version: int) -> list[dict[str, Any]] | None:
        """The patch to store for this change at `version` (None: to compute in log order)."""
        if self.expected_version is not None and version != self.expected_version:
            return None
        return self.patch


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

    async def append(self, changes: Sequence[Change], views: Sequence[PanelView] = ()) -> list[int]:
        """Append in order, in one transaction; return the version given to each change.

        Versions are gapless per panel. Raises PanelNotFound for a missing or deleted panel
        and StaleEpoch when `change.epoch` is not the panel's current epoch; then nothing
        of the batch is written. `views` are saved in the same transaction, as save_view
        does (so that keeping views costs no transaction of its own).
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

    async def list_panels(
        self, workspace_id: str
    ) -> list[tuple[str, int, str, dict[str, Any] | None]]:
        """(panel id, version, epoch, view) of every live (not deleted) panel of the
        workspace, by panel id. `view` is the stored JSON view (save_view) only when it is of
        the panel's current version; None when it lags or was never saved."""
        ...

    async def record_snapshot(self, record: SnapshotRecord) -> None:
        """Keep one row of `state_snapshots`."""
        ...

    async def list_snapshots(self, workspace_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The newest `limit` snapshot rows of the workspace, newest first, as dicts with the
        field names of SnapshotRecord."""
        ...

    async def changed_workspaces(self) -> list[str]:
        """Workspaces with a panel changed, deleted or created after their newest snapshot
        recorded with a Git commit (or never snapshotted to Git), by name."""
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
NoticeCallback = Callable[[dict[str, Any]], Awaitable[None] | None]


# What a replica publishes: a live message of a panel, or a committed notice of a workspace.
Outgoing = tuple[PanelKey, FanoutMessage] | tuple[str, dict[str, Any]]


class Subscription(Protocol):
    async def close(self) -> None: ...


class Fanout(Protocol):
    """Carries changes between replicas.

    Two streams. Per panel, the live one: Yjs updates and awareness as soon as a replica
    applies them (binary, lowest latency, may be lost: the log is the truth). Per workspace,
    the committed one: one JSON notice per logged version (the seed's `state-updates:{ws}`
    channel), e.g. {"type": "state_update", "workspaceId", "panelId", "version", "epoch",
    "patch" (null when the publisher could not compute it in log order), "triggeredBy",
    "triggerSource", "timestamp"}, or {"type": "state_deleted", ...}.
    """

    async def publish_all(self, batch: Sequence[Outgoing]) -> None:
        """Publish live messages (PanelKey, FanoutMessage) and notices (workspace id, dict) in
        order, in as few round trips as the transport allows."""
        ...

    def may_reach_others(self, key: PanelKey) -> bool:
        """Whether a live message of `key` could reach another replica. False lets the
        publisher skip the work (one process: nobody else listens)."""
        ...

    async def subscribe(self, key: PanelKey, callback: FanoutCallback) -> Subscription: ...

    async def subscribe_notices(
        self, workspace_id: str, callback: NoticeCallback
    ) -> Subscription: ...

    def on_replica_lost(self, callback: Callable[[str], None]) -> None:
        """Call `callback(replica_id)` when a replica that published stops being heard from
        (its clients' presence must go)."""
        ...

    def on_reconnected(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after the transport was down and is back: messages may have been
        missed, so live rooms catch up from the log."""
        ...

    async def close(self) -> None: ...


class StateCache(Protocol):
    """The hot JSON view of panels (`state:{ws}:{panel}`), for replicas that do not hold the
    doc. Entries: {"version", "epoch", "state", "updatedAt"}. A cache, never the only copy."""

    async def get(self, key: PanelKey) -> dict[str, Any] | None: ...

    async def put(self, key: PanelKey, entry: dict[str, Any], ttl_seconds: int) -> None: ...

    async def drop(self, key: PanelKey) -> None: ...

    async def close(self) -> None: ...
