"""The domain's records: panel keys, changes and log entries, notices, cache entries, listings.

Plain data, no behaviour beyond (de)serialising itself: every module and adapter shares these.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from .ids import check_id, check_workspace_id

JSONObject = dict[str, Any]
JSONPatch = list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class PanelKey:
    workspace_id: str
    panel_id: str

    def check(self) -> PanelKey:
        """Refuse ids the stores and channels cannot keep apart (ValueError, with why): the one
        rule of every face, in ids.py (1-200 characters; not '.', '..' or blank; no control,
        bidi override/isolate or surrogate characters; no ':' in a workspace id)."""
        check_workspace_id(self.workspace_id)
        check_id("panel", self.panel_id)
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


def parse_time(text: object) -> datetime | None:
    """An ISO-8601 time we wrote (timezone-aware), or None for anything else."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


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
class Attribution:
    """Who made a change, and through what."""

    triggered_by: TriggeredBy
    trigger_source: str | None
    subject: str | None


@dataclass(slots=True)
class Change:
    """One change of a panel, as the room that made it emits it (the commit event): one Yjs
    update, the JSON Patch it made to the view, who made it; one future version."""

    key: PanelKey
    epoch: str
    update: bytes
    change_type: ChangeType = ChangeType.UPDATED
    triggered_by: TriggeredBy = TriggeredBy.USER
    trigger_source: str | None = None
    subject: str | None = None
    patch: JSONPatch | None = None
    occurred_at: datetime = field(default_factory=utcnow)  # timezone-aware
    # Unique per change: appending a change whose id is already logged returns the version it
    # got then instead of appending it again (a retried batch is committed exactly once).
    change_id: str = field(default_factory=lambda: next_change_id())
    # The version `patch` is exact for: it was computed on the state of the log's first
    # expected_version - 1 entries. If the change gets another version (another replica wrote
    # in between), the store keeps no patch and readers compute it in log order.
    # None: no expectation, store the patch as is.
    expected_version: int | None = None
    # Somebody waits for its commit (a REST write): written at once, not after the window.
    urgent: bool = False
    # The log's answer (its version), set when the change is handed to the log.
    outcome: asyncio.Future[int] | None = field(default=None, repr=False, compare=False)

    def patch_for(self, version: int) -> JSONPatch | None:
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
    patch: JSONPatch | None
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
    state: bytes  # the full Yjs state


@dataclass(slots=True)
class LoadedPanel:
    """What it takes to rebuild a panel's doc: latest checkpoint plus the log after it."""

    info: PanelInfo
    checkpoint: Checkpoint | None
    tail: list[LogEntry]

    @property
    def last_version(self) -> int:
        """The version the loaded entries reach (the checkpoint's when there is no tail)."""
        if self.tail:
            return self.tail[-1].version
        return self.checkpoint.version if self.checkpoint else 0


@dataclass(frozen=True, slots=True)
class PanelView:
    """A panel's JSON view as of a committed version, to keep beside the log."""

    key: PanelKey
    epoch: str
    version: int
    view: JSONObject


@dataclass(frozen=True, slots=True)
class PanelState:
    """A live panel as a reader gets it: its JSON view and the version that view is of."""

    key: PanelKey
    view: JSONObject
    version: int
    epoch: str
    updated_at: datetime | None = None

    def to_json(self) -> JSONObject:
        return {
            "workspaceId": self.key.workspace_id,
            "panelId": self.key.panel_id,
            "state": self.view,
            "version": self.version,
            "epoch": self.epoch,
            "updatedAt": self.updated_at.isoformat() if self.updated_at else None,
        }


@dataclass(frozen=True, slots=True)
class PanelListing:
    """One live panel of a workspace as the read model lists it. `view` is the stored view
    when it is of `version`; None when it lags or was never saved."""

    panel_id: str
    version: int
    epoch: str
    view: JSONObject | None


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
class CacheEntry:
    """The hot JSON view of a panel (`state:{ws}:{panel}` in Redis), in the design
    document's shape: the view's roots and `_meta` {version, updated_at, epoch}."""

    version: int
    epoch: str
    state: JSONObject
    updated_at: datetime | None

    def to_json(self) -> JSONObject:
        meta = {
            "version": self.version,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "epoch": self.epoch,
        }
        return {**self.state, "_meta": meta}

    @classmethod
    def from_json(cls, raw: object) -> CacheEntry | None:
        """The entry, or None for anything that is not one (the key is shared with other
        services, whose mistakes must not fail our reads)."""
        if not isinstance(raw, dict) or not isinstance(raw.get("_meta"), dict):
            return None
        meta = raw["_meta"]
        version, epoch = meta.get("version"), meta.get("epoch")
        if isinstance(version, bool) or not isinstance(version, int) or not isinstance(epoch, str):
            return None
        state = {k: v for k, v in raw.items() if k != "_meta"}
        return cls(version, epoch, state, parse_time(meta.get("updated_at")))


class FanoutKind(StrEnum):
    UPDATE = "update"  # a Yjs update, already applied by the replica that publishes it
    AWARENESS = "awareness"  # an encoded awareness update
    DELETED = "deleted"  # the panel was deleted
    # Join barriers (join_barrier.py): a replica about to answer a join asks the others
    # holding the panel for what its room lacks (id + state vector); they answer (id + update).
    BARRIER = "barrier"
    BARRIER_ANSWER = "barrier-answer"


@dataclass(frozen=True, slots=True)
class FanoutMessage:
    kind: FanoutKind
    payload: bytes
    origin: str  # the publishing replica's id; a replica ignores its own messages


@dataclass(frozen=True, slots=True)
class Notice:
    """A committed version of a panel, told to every replica and JSON subscriber (the seed's
    `state-updates:{ws}` channel carries its JSON)."""

    key: PanelKey
    version: int
    epoch: str
    change_type: ChangeType
    patch: JSONPatch | None  # None: the publisher could not compute it in log order
    triggered_by: TriggeredBy
    trigger_source: str | None
    subject: str | None
    occurred_at: datetime
    change_id: str
    replica: str

    @classmethod
    def of(cls, change: Change, version: int, replica: str) -> Notice:
        return cls(
            change.key,
            version,
            change.epoch,
            change.change_type,
            change.patch_for(version),
            change.triggered_by,
            change.trigger_source,
            change.subject,
            change.occurred_at,
            change.change_id,
            replica,
        )

    @property
    def deleted(self) -> bool:
        return self.change_type == ChangeType.DELETED

    def to_json(self) -> JSONObject:
        return {
            "type": "state_deleted" if self.deleted else "state_update",
            "workspaceId": self.key.workspace_id,
            "panelId": self.key.panel_id,
            "panel_id": self.key.panel_id,  # the design document's channel message names it so
            "version": self.version,
            "epoch": self.epoch,
            "changeType": self.change_type.value,
            "patch": self.patch,
            "triggeredBy": self.triggered_by.value,
            "triggerSource": self.trigger_source,
            "subject": self.subject,
            "timestamp": self.occurred_at.isoformat(),
            "changeId": self.change_id,
            "replica": self.replica,
        }

    @classmethod
    def from_json(cls, raw: object) -> Notice | None:
        """The notice, or None for a message that is not one of ours."""
        if not isinstance(raw, dict):
            return None
        ws, panel, version = raw.get("workspaceId"), raw.get("panelId"), raw.get("version")
        epoch, patch, occurred = (
            raw.get("epoch"),
            raw.get("patch"),
            parse_time(raw.get("timestamp")),
        )
        if not (isinstance(ws, str) and isinstance(panel, str) and isinstance(epoch, str)):
            return None
        if isinstance(version, bool) or not isinstance(version, int) or occurred is None:
            return None
        if patch is not None and not isinstance(patch, list):
            return None
        try:
            change_type = ChangeType(str(raw.get("changeType")))
            triggered_by = TriggeredBy(str(raw.get("triggeredBy")))
        except ValueError:
            return None
        source, subject = raw.get("triggerSource"), raw.get("subject")
        return cls(
            PanelKey(ws, panel),
            version,
            epoch,
            change_type,
            patch,
            triggered_by,
            source if isinstance(source, str) else None,
            subject if isinstance(subject, str) else None,
            occurred,
            str(raw.get("changeId", "")),
            str(raw.get("replica", "")),
        )
