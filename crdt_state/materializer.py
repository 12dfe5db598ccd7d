"""What a panel's committed changes are materialized into, besides the log: the stored JSON
view (for listings and Git snapshots), the hot cache other replicas read, and checkpoints.

Driven by one event, the commit of a change (Pipeline calls `committed`). Views and the cache
are query caches of the log, written when a room is quiet and at most once per
VIEW_SAVE_INTERVAL, except that a change somebody waits for (a REST write) reaches the hot
cache at once: its answer must be readable on every replica. The cache is written at most
once per version. Nothing here replays a log on the event loop: replays run on a thread,
where their doc lives and dies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from .committer import Committer
from .document import PanelDoc
from .errors import StateError
from .model import CacheEntry, Change, ChangeType, Checkpoint, LoadedPanel, PanelKey, PanelView
from .ports import ReadModel, StateCache, UpdateLog
from .protocol import decode_state_vector
from .replay import rebuild, write_checkpoint
from .room import Room

log = logging.getLogger(__name__)

CACHE_TTL_SECONDS = 1800
VIEW_SAVE_INTERVAL = 1.0  # seconds: a room stores its view at most this often


@dataclass(slots=True)
class _Materials:
    """What has been materialized of one room."""

    checkpoint_version: int
    view_saved_version: int
    view_saved_at: float = 0.0
    view_timer: asyncio.TimerHandle | None = None
    cached_version: int = 0
    cache_wanted: bool = False
    cache_task: asyncio.Task[None] | None = None
    checkpointing: asyncio.Task[None] | None = None
    rebaselining: asyncio.Task[None] | None = None


class Materializer:
    def __init__(
        self,
        log_store: UpdateLog,
        read_model: ReadModel,
        committer: Committer,
        cache: StateCache | None,
        *,
        checkpoint_every: int,
    ) -> None:
        self.log = log_store
        self.read_model = read_model
        self.committer = committer
        self.cache = cache
        self.checkpoint_every = checkpoint_every
        self._rooms: dict[PanelKey, _Materials] = {}
        self.cache_writes = 0

    def open(self, room: Room, checkpoint_version: int) -> None:
        self._rooms[room.key] = _Materials(checkpoint_version, room.version)

    def committed(self, room: Room, change: Change, version: int) -> None:
        """The post-commit step: a change of `room` got `version`."""
        materials = self._rooms.get(room.key)
        if materials is None or change.change_type == ChangeType.DELETED:
            return
        if change.urgent:
            self._cache_soon(room, materials)
        if room.quiet:
            self._view_due(room, materials)
        self._checkpoint_if_due(room, materials)

    async def cached(self, room: Room, version: int) -> None:
        """Wait until the hot cache holds `version` of the room (no cache: at once)."""
        materials = self._rooms.get(room.key)
        while (
            materials is not None
            and materials.cached_version < version
            and materials.cache_task is not None
        ):
            await asyncio.shield(materials.cache_task)

    async def refresh_cache(self, room: Room) -> None:
        """Put the room's current view in the hot cache (after a read found none there)."""
        materials = self._rooms.get(room.key)
        if materials is not None and self.cache is not None:
            materials.cached_version = 0  # the entry is gone (expired, or never written)
            self._cache_soon(room, materials)
            await self.cached(room, room.version)

    async def unload(self, room: Room) -> None:
        """The room stopped (no more changes, commits answered): store what is due."""
        materials = self._rooms.pop(room.key, None)
        if materials is None:
            return
        if materials.view_timer is not None:
            materials.view_timer.cancel()  # it may be waiting out its interval: save right here
        tasks = (materials.cache_task, materials.rebaselining, materials.checkpointing)
        await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
        position = room.position
        if self._due(room, materials) and position.exact and position.settled:
            # Unloading: the doc is at hand, so the next load replays less.
            live = Checkpoint(version=position.base, state=room.encode_state())
            await self._checkpoint(room, materials, live)
        if materials.view_saved_version < room.version:
            try:
                view = PanelView(room.key, room.epoch, room.version, room.view())
                await self.read_model.save_view(view)
            except Exception as exc:
                log.info("room %s: final view not saved: %r", room.key, exc)

    # -- the hot cache -----------------------------------------------------------------------

    def _cache_soon(self, room: Room, materials: _Materials) -> None:
        if self.cache is None:
            return
        materials.cache_wanted = True
        if materials.cache_task is None:
            materials.cache_task = asyncio.create_task(self._write_cache(room, materials))

    async def _write_cache(self, room: Room, materials: _Materials) -> None:
        assert self.cache is not None
        try:
            while materials.cache_wanted:
                materials.cache_wanted = False
                state = room.state()
                if state.version <= materials.cached_version:
                    continue
                entry = CacheEntry(state.version, state.epoch, state.view, state.updated_at)
                await self.cache.put(room.key, entry, CACHE_TTL_SECONDS)
                self.cache_writes += 1
                materials.cached_version = max(materials.cached_version, state.version)
        except Exception as exc:  # a cache never fails a write
            log.info("room %s: hot cache not refreshed: %r", room.key, exc)
        finally:
            materials.cache_task = None

    # -- the stored view -----------------------------------------------------------------------

    def _view_due(self, room: Room, materials: _Materials) -> None:
        if room.closed or materials.view_timer is not None:
            return
        if materials.view_saved_version >= room.version:
            return
        wait = materials.view_saved_at + VIEW_SAVE_INTERVAL - time.monotonic()
        if wait > 0:
            loop = asyncio.get_running_loop()
            materials.view_timer = loop.call_later(wait, self._view_timer_fired, room, materials)
            return
        room.post(self._save_view, room, materials)  # a busy room: its next commit retries

    def _view_timer_fired(self, room: Room, materials: _Materials) -> None:
        materials.view_timer = None
        if room.quiet:  # else the next commit brings it back
            self._view_due(room, materials)

    def _save_view(self, room: Room, materials: _Materials) -> None:
        """In the room: hand the current view to the committer (it rides in a batch)."""
        if room.closed or not room.quiet or materials.view_saved_version >= room.version:
            return
        version = room.version
        materials.view_saved_at = time.monotonic()
        written = self.committer.save_view(PanelView(room.key, room.epoch, version, room.view()))
        written.add_done_callback(lambda done: self._view_written(room, materials, version, done))

    def _view_written(
        self, room: Room, materials: _Materials, version: int, written: asyncio.Future[bool]
    ) -> None:
        if written.cancelled() or not written.result() or room.closed:
            return
        materials.view_saved_version = max(materials.view_saved_version, version)
        self._cache_soon(room, materials)
        if not room.position.exact and room.position.settled and materials.rebaselining is None:
            materials.rebaselining = asyncio.create_task(self._rebaseline(room, materials))

    async def _rebaseline(self, room: Room, materials: _Materials) -> None:
        """After updates from other replicas: is the doc again exactly the log's prefix?
        Then this room's patches are the log's again (equal state vectors: equal docs)."""
        try:
            loaded = await self.log.load(room.key)
            if loaded is None or loaded.info.epoch != room.epoch or room.closed:
                return
            logged = await asyncio.to_thread(_state_vector, loaded)
            version = loaded.info.version

            def compare() -> None:
                position = room.position
                if position.settled and decode_state_vector(room.state_vector()) == logged:
                    position.rebaseline(version)

            await room.call(compare)
        except Exception as exc:
            log.info("room %s: not re-baselined (%r); the next save retries", room.key, exc)
        finally:
            materials.rebaselining = None

    # -- checkpoints ---------------------------------------------------------------------------

    def _due(self, room: Room, materials: _Materials) -> bool:
        return room.version - materials.checkpoint_version >= self.checkpoint_every

    def _checkpoint_if_due(self, room: Room, materials: _Materials) -> None:
        if not self._due(room, materials) or materials.checkpointing is not None or room.closed:
            return
        if room.quiet and room.position.exact:
            # Quiet, and the doc is exactly the log's prefix: encode it, no replay.
            room.post(self._checkpoint_live, room, materials)  # busy: a later commit retries
        elif room.version - materials.checkpoint_version >= 2 * self.checkpoint_every:
            # A room that is never quiet (or holds other replicas' updates) replays the log.
            materials.checkpointing = asyncio.create_task(self._checkpoint(room, materials))

    def _checkpoint_live(self, room: Room, materials: _Materials) -> None:
        """In the room: checkpoint the doc itself when it is exactly the log's first
        `position.base` entries (every applied change committed, none from elsewhere). The
        replay from the log that it saves stalled every room of the replica for tens of ms."""
        if room.closed or materials.checkpointing is not None or not self._due(room, materials):
            return
        if not room.quiet or not (room.position.exact and room.position.settled):
            return
        live = Checkpoint(version=room.position.base, state=room.encode_state())
        materials.checkpointing = asyncio.create_task(self._checkpoint(room, materials, live))

    async def _checkpoint(
        self, room: Room, materials: _Materials, live: Checkpoint | None = None
    ) -> None:
        """Store `live` (the doc's own state), or else replay the log into a fresh doc on a
        thread, never touching the live one, until no checkpoint is due."""
        progressed = False
        try:
            if live is not None:
                await self.log.save_checkpoint(room.key, room.epoch, live)
                materials.checkpoint_version = max(materials.checkpoint_version, live.version)
                progressed = True
                return
            while self._due(room, materials):
                checkpoint = await write_checkpoint(self.log, room.key, room.version)
                if checkpoint is None:
                    return
                materials.checkpoint_version = max(materials.checkpoint_version, checkpoint.version)
                progressed = True
        except StateError as exc:
            log.info("room %s: checkpoint skipped: %s", room.key, exc)
        except Exception:
            log.exception("room %s: checkpoint failed", room.key)
        finally:
            materials.checkpointing = None
            if progressed:  # changes that came meanwhile may have made another one due
                self._checkpoint_if_due(room, materials)


def _state_vector(loaded: LoadedPanel) -> dict[int, int]:
    return decode_state_vector(PanelDoc(rebuild(loaded)).doc.get_state())
