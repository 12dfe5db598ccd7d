"""The core of one replica, assembled from the ports it is given: the group committer,
replication, the materializer, the post-commit path, the rooms, the panel service, the
snapshot service and the compaction schedule. The composition root (app.py) chooses the
adapters and hands them in; tests assemble it the same way around real adapters."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING

from .committer import Committer
from .compaction import CompactionSchedule, Compactor, maintenance_of
from .config import Settings
from .materializer import Materializer
from .panels import PanelService
from .pipeline import Pipeline
from .ports import Fanout, SnapshotRepository, StateCache, Store
from .rate_limits import RateLimits, rate_settings
from .registry import RoomRegistry
from .replication import Replication
from .retention import RetentionPolicy
from .room import RoomSettings
from .sessions import ask_for_missing
from .snapshots import SnapshotService

if TYPE_CHECKING:
    from .metrics import Metrics


class Server:
    def __init__(
        self,
        store: Store,
        fanout: Fanout,
        repository: SnapshotRepository,
        settings: Settings,
        *,
        cache: StateCache | None = None,
        replica_id: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.fanout = fanout
        self.replica_id = replica_id or uuid.uuid4().hex[:12]
        self.committer = Committer(store, store, window_seconds=settings.commit_window_ms / 1000)
        self.replication = Replication(fanout, store, self.replica_id)
        self.materializer = Materializer(
            store, store, self.committer, cache, checkpoint_every=settings.checkpoint_every
        )
        self.pipeline = Pipeline(self.committer, self.replication, self.materializer)
        self.limits = RateLimits(
            rate_settings(
                settings.rate_rest,
                settings.rate_yjs_updates,
                settings.rate_yjs_bytes,
                settings.rate_awareness,
                settings.rate_panel_creations,
            )
        )
        self.registry = RoomRegistry(
            store,
            self.pipeline,
            admit_creation=self.limits.creation,
            settings=RoomSettings(
                checkpoint_every=settings.checkpoint_every,
                max_awareness_bytes=settings.max_awareness_bytes,
                max_doc_bytes=settings.max_doc_bytes,
            ),
            idle_seconds=settings.room_idle_seconds,
        )
        self.panels = PanelService(
            self.registry,
            store,
            store,
            self.committer,
            cache,
            max_patch_write_bytes=settings.max_patch_write_bytes,
            max_write_values=settings.max_write_values,
        )
        self.snapshots = SnapshotService(
            self.panels,
            store,
            store,
            repository,
            interval_seconds=settings.snapshot_interval_seconds,
        )
        self.pipeline.workspace_changed = self.snapshots.mark_changed
        if metrics is not None:  # its series (crdt_state/metrics.py) observe this core
            metrics.attach(self)
        # Retention (docs/RETENTION.md): the store's maintenance side, on a schedule.
        maintenance = maintenance_of(store)
        policy = RetentionPolicy.of_days(settings.history_days, settings.time_travel_days)
        self.compaction = (
            None
            if maintenance is None
            else CompactionSchedule(
                Compactor(maintenance, store, policy), settings.compact_interval_seconds
            )
        )

    def start(self, *, probe_seconds: float = 1.0) -> None:
        self.committer.start(probe_seconds)
        self.replication.start()
        self.registry.start()
        self.snapshots.start()
        if self.compaction is not None:
            self.compaction.start()

    async def drain(self, seconds: float) -> tuple[int, int]:
        """The server is stopping: ask every Yjs client for what its room lacks, and wait (at
        most `seconds`) until each answer is applied; then what they sent is in the rooms, on
        its way to the log. (answered, asked)."""
        waiting: list[asyncio.Future[None]] = []
        for room in list(self.registry.rooms.values()):
            if not room.closed:
                with contextlib.suppress(Exception):  # closing meanwhile: nothing to ask
                    waiting += await room.call(ask_for_missing, room)
        if waiting:
            await asyncio.wait(waiting, timeout=seconds)
        return sum(f.done() for f in waiting), len(waiting)

    async def close(self, close_code: int | None = None) -> None:
        """Stop snapshots, unload every room (closing its clients with `close_code`), send
        what replication still holds, commit what is pending. Adapters stay open."""
        if self.compaction is not None:
            await self.compaction.close()
        await self.snapshots.close()
        await self.registry.close(close_code)
        await self.replication.close()
        await self.committer.close()
