"""The interfaces the core needs from the outside world; adapters/ implements them.

The core never imports an adapter (ruff's banned-api rule fails the lint if it does). Only the
composition root (crdt_state/app.py, crdt_state/cli.py) picks one. Each port is small: the log
has six methods, as y-redis's storage has five; what readers need beside it (a read model of
views and pages, a snapshot catalogue, a probe) are ports of their own, usually implemented by
the same adapter object.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from .idempotency import Answer, IdempotencyRecord
from .model import (
    CacheEntry,
    Change,
    Checkpoint,
    FanoutMessage,
    LoadedPanel,
    LogEntry,
    Notice,
    PanelInfo,
    PanelKey,
    PanelListing,
    PanelView,
    SnapshotRecord,
)
from .revocations import Revocation
from .snapshot_repository import CommitInfo, CommitResult, Trailers, WorkspaceSnapshot

if TYPE_CHECKING:
    from .model import JSONPatch
    from .retention import CompactionPlan
    from .transfer_format import PanelRecord, StoredCheckpoint, TransferEntry


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
        of the batch is written. `views` are saved in the same transaction, as
        ReadModel.save_view does (so that keeping views costs no transaction of its own).
        """
        ...

    async def load(self, key: PanelKey, until: int | None = None) -> LoadedPanel | None:
        """The newest checkpoint at or before `until` (default: latest) of the current
        epoch, and the log entries after it up to `until`. None for a missing or deleted
        panel. VersionCompacted (retention.py) when `until` is before the panel's fold
        point: the updates it would replay were folded into a later checkpoint."""
        ...

    async def read(
        self, key: PanelKey, after: int = 0, until: int | None = None, limit: int = 1000
    ) -> list[LogEntry]:
        """Log entries with after < version <= until, oldest first, at most `limit`.

        Spans every epoch, and works for deleted panels (their history is kept)."""
        ...

    async def save_checkpoint(self, key: PanelKey, epoch: str, checkpoint: Checkpoint) -> None:
        """Store a checkpoint of a logged version of the current epoch.

        PanelNotFound for a missing panel; StaleEpoch for a deleted one or an older epoch."""
        ...

    async def close(self) -> None: ...


class ReadModel(Protocol):
    """Queries beside the log: history pages, stored views, workspace listings."""

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

    async def save_view(self, view: PanelView) -> None:
        """Keep the panel's JSON view (as of `view.version`) beside the log, for queries.

        Ignored when a view of an equal or newer version is stored, or the epoch is stale.
        A cache of the log, never the truth: written after commits, off the write path.
        """
        ...

    async def list_panels(self, workspace_id: str) -> list[PanelListing]:
        """Every live (not deleted) panel of the workspace, by panel id."""
        ...


class SnapshotCatalogue(Protocol):
    """The `state_snapshots` table: which snapshots were taken, and which workspaces need one."""

    async def record_snapshot(self, record: SnapshotRecord) -> None: ...

    async def list_snapshots(self, workspace_id: str, limit: int = 50) -> list[SnapshotRecord]:
        """The newest `limit` snapshot rows of the workspace, newest first."""
        ...

    async def changed_workspaces(self) -> list[str]:
        """Workspaces with a panel changed, deleted or created after their newest snapshot
        recorded with a Git commit (or never snapshotted to Git), by name."""
        ...


class Probe(Protocol):
    async def ping(self) -> None:
        """Raise if the store cannot be reached (readiness, and refusing writes up front)."""
        ...


class LogMaintenance(Protocol):
    """Retention and compaction of the log (docs/RETENTION.md; compaction.py runs them).
    Usually the log adapter object. Every method is safe while replicas append and load."""

    async def maintained_panels(
        self, workspace_id: str | None = None, panel_id: str | None = None
    ) -> list[PanelKey]:
        """Every panel (deleted ones too) of the store, of `workspace_id`, or just that one,
        by workspace and panel id."""
        ...

    async def inspect(
        self,
        key: PanelKey,
        *,
        fold_before: datetime | None,
        drop_before: datetime | None,
        measure: bool = False,
    ) -> CompactionPlan | None:
        """What compacting the panel would do: fold the updates up to the newest checkpoint
        of its current epoch whose version occurred before `fold_before` (a deleted panel:
        all of them once deleted before it), drop the rows up to the newest version before
        `drop_before` and no later than that; None: no folding, no dropping. `measure`: also
        what it stores now and would store then (reads every row). None for no panel."""
        ...

    async def keep_patches(self, key: PanelKey, patches: Mapping[int, JSONPatch]) -> None:
        """Store these patches (by version) in rows that have none."""
        ...

    async def compact(self, plan: CompactionPlan, after: int, until: int) -> tuple[int, int]:
        """Carry out `plan` for the versions (after, until], in one transaction: first mark
        the plan's fold and drop points on the panel (CompactionConflict, nothing done, when
        the fold point's checkpoint is gone from a live panel of the plan's epoch), then
        remove the rows up to the drop point and empty the updates up to the fold point.
        (rows folded, rows removed)."""
        ...

    async def prune_checkpoints(self, key: PanelKey) -> int:
        """Remove the panel's checkpoints nothing can load: before its fold point, of
        earlier epochs, all of a deleted panel. How many."""
        ...

    async def reclaim(self) -> None:
        """Give freed space back (SQLite: VACUUM, which holds the write lock while it
        rewrites the file; PostgreSQL: VACUUM of the log's tables)."""
        ...


class WorkspaceReader(Protocol):
    """One workspace as one consistent snapshot of the store (LogTransfer.read_workspace)."""

    panels: list[PanelRecord]  # every panel of the workspace, deleted ones too, by panel id

    def checkpoints(self, panel: PanelRecord) -> AsyncGenerator[StoredCheckpoint, None]:
        """The checkpoints a load can use: of the panel's current epoch, from its fold point
        on, by version (none for a deleted panel)."""
        ...

    def entries(self, key: PanelKey, page: int) -> AsyncGenerator[list[TransferEntry], None]:
        """Every history row the panel keeps (all epochs), oldest first, `page` at a time."""
        ...


class WorkspaceWriter(Protocol):
    """Rows of one workspace written as given, in one transaction (LogTransfer.write_workspace):
    a panel first, then its checkpoints, history rows and view."""

    replaced: list[str]  # the panel ids the workspace had before (removed: `replace`)

    async def panel(self, record: PanelRecord) -> None: ...

    async def checkpoint(self, key: PanelKey, checkpoint: StoredCheckpoint) -> None: ...

    async def entries(self, key: PanelKey, entries: Sequence[TransferEntry]) -> None:
        """History rows as they are: versions, epochs, change ids, times, attribution."""
        ...

    async def view(self, view: PanelView) -> None:
        """The stored view, as ReadModel.save_view keeps it."""
        ...

    async def load(self, key: PanelKey) -> LoadedPanel | None:
        """As UpdateLog.load (latest), reading what this transaction wrote."""
        ...


class LogTransfer(Protocol):
    """Whole workspaces out of and into a store, row for row, below the log's numbering
    (transfer.py: `crdt-state export` / `import`). Not for the serving path."""

    kind: str  # the store: "sqlite" or "postgres"

    def read_workspace(self, workspace_id: str) -> AbstractAsyncContextManager[WorkspaceReader]:
        """A read-only snapshot of the workspace, for the block."""
        ...

    def write_workspace(
        self, workspace_id: str, *, replace: bool
    ) -> AbstractAsyncContextManager[WorkspaceWriter]:
        """One transaction, committed when the block ends and rolled back when it raises.
        WorkspaceExists when the workspace has a panel row (a deleted panel too) unless
        `replace`, which removes every row of the workspace first."""
        ...

    async def close(self) -> None: ...


FanoutCallback = Callable[[FanoutMessage], Awaitable[None] | None]
NoticeCallback = Callable[[Notice], Awaitable[None] | None]

# What a replica publishes: a live message of a panel, or a committed notice.
Outgoing = tuple[PanelKey, FanoutMessage] | Notice


class Subscription(Protocol):
    async def close(self) -> None: ...


class Fanout(Protocol):
    """Carries changes between replicas.

    Two streams. Per panel, the live one: Yjs updates and awareness as soon as a replica
    applies them (binary, lowest latency, may be lost: the log is the truth). Per workspace,
    the committed one: one Notice per logged version (the seed's `state-updates:{ws}`
    channel carries Notice.to_json()).

    Callbacks may be coroutines; a transport awaits them in order, so a slow consumer slows
    delivery down (back-pressure) instead of piling messages up.
    """

    async def publish_all(self, batch: Sequence[Outgoing]) -> None:
        """Publish live messages (PanelKey, FanoutMessage) and notices in order, in as few
        round trips as the transport allows."""
        ...

    def may_reach_others(self, key: PanelKey) -> bool:
        """Whether a live message of `key` could reach another replica. False lets the
        publisher skip the work (one process: nobody else listens)."""
        ...

    async def publish_counted(self, key: PanelKey, message: FanoutMessage) -> int:
        """Publish one live message at once, outside the batches, and return how many other
        replicas received it: those subscribed to the panel, i.e. holding it (a join barrier
        waits for that many answers)."""
        ...

    async def subscribe(self, key: PanelKey, callback: FanoutCallback) -> Subscription: ...

    async def subscribe_notices(
        self, workspace_id: str, callback: NoticeCallback
    ) -> Subscription: ...

    def on_replica_lost(self, callback: Callable[[str], Awaitable[None] | None]) -> None:
        """Call `callback(replica_id)` when a replica that published stops being heard from
        (its clients' presence must go)."""
        ...

    def on_reconnected(self, callback: Callable[[], Awaitable[None] | None]) -> None:
        """Call `callback()` after the transport was down and is back: messages may have been
        missed, so live rooms catch up from the log."""
        ...

    async def close(self) -> None: ...


class StateCache(Protocol):
    """The hot JSON view of panels (`state:{ws}:{panel}`), for replicas that do not hold the
    doc. A cache, never the only copy: failures miss, they never raise."""

    async def get(self, key: PanelKey) -> CacheEntry | None: ...

    async def put(self, key: PanelKey, entry: CacheEntry, ttl_seconds: int) -> None: ...

    async def drop(self, key: PanelKey) -> None: ...

    async def close(self) -> None: ...


class IdempotencyStore(Protocol):
    """Idempotency records every replica sees (Redis): a claim while a keyed request runs,
    then its answer (idempotency.py). `key` is a record name (hex digest); `token` names one
    claim. Failing to reach the store raises Unavailable; the records' TTLs do the cleaning."""

    async def claim(self, key: str, token: str, lease_seconds: float) -> IdempotencyRecord | None:
        """Atomically: when `key` holds nothing, store a claim for `token` that lapses after
        `lease_seconds`, and return None; otherwise return what it holds (unchanged)."""
        ...

    async def refresh(self, key: str, token: str, lease_seconds: float) -> bool:
        """Extend `token`'s claim to `lease_seconds` from now; False when `key` no longer holds
        it (lapsed, released, answered)."""
        ...

    async def complete(self, key: str, token: str, answer: Answer, ttl_seconds: float) -> bool:
        """Replace the claim by `answer`, kept `ttl_seconds`; False (nothing stored) when `key`
        holds an answer already: the first answer stays."""
        ...

    async def release(self, key: str, token: str) -> None:
        """Drop `token`'s claim (its request failed); anything else under `key` stays."""
        ...

    async def close(self) -> None: ...


class SnapshotRepository(Protocol):
    """Where workspace snapshots are kept: one Git repository per workspace."""

    async def commit(
        self,
        workspace: str,
        panels: Mapping[str, bytes],
        message: str,
        trailers: Trailers,
        author: str,
    ) -> CommitResult:
        """Snapshot the FULL set of panels (panel id -> canonical JSON bytes).

        Panels absent from `panels` are removed from the tree. An unchanged state makes no
        commit: the result carries the existing head and created=False. `trailers` are
        appended to `message` as Git trailers. `author` is "Name <email>" or a plain name.
        """
        ...

    async def read(self, workspace: str, sha: str | None = None) -> WorkspaceSnapshot:
        """The workspace as of commit `sha` (4–40 hex digits; None = head), read from the
        commit's tree without touching any work tree. An empty workspace gives sha None.

        MalformedSha, AmbiguousSha, CommitNotFound, InvalidName, RepositoryCorrupt."""
        ...

    async def history(self, workspace: str, limit: int = 50) -> list[CommitInfo]:
        """The newest `limit` snapshots, newest first (first-parent line of the branch)."""
        ...

    async def check(self, workspace: str) -> str | None:
        """A sentence describing what is wrong with the repository, or None. Never raises."""
        ...

    async def push_status(self, workspace: str) -> dict[str, Any]:
        """The state of the background push to the workspace's remote (JSON-ready)."""
        ...

    async def gc(self, workspace: str) -> None:
        """Compact the repository (`git gc`); for a scheduler, never on the write path."""
        ...

    async def close(self) -> None: ...


class Store(UpdateLog, ReadModel, SnapshotCatalogue, Probe, Protocol):
    """What a log adapter implements: the log and the ports beside it, as one object."""


class Revocations(Protocol):
    """Revoked subjects and token ids, kept where every replica reads them (the log's store:
    the SQLite file or PostgreSQL; never only Redis). Usually the log adapter object."""

    async def revoke(self, revocation: Revocation) -> Revocation:
        """Store it; the stored record, whose `id` is greater than every id stored before
        (and visible to `revocations_since` only once every smaller id is: in commit order)."""
        ...

    async def revocations_since(self, cursor: int, limit: int = 1000) -> list[Revocation]:
        """Revocations in force (not expired) with an id above `cursor`, by id, at most
        `limit`: what a replica polls, with the largest id it has seen."""
        ...

    async def purge_revocations(self, now: datetime) -> int:
        """Drop the revocations that expired before `now`; how many."""
        ...
