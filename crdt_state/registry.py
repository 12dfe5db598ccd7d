"""The rooms of a replica: loaded on demand, unloaded when idle (after their log writes land).

Loading a room wires it into the house: its changes go to the post-commit path (pipeline.py),
replication attaches to it, the materializer starts keeping its views. Unloading undoes that
in reverse, after the room has stopped taking work and the log has answered its changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .document import PanelDoc, new_epoch
from .errors import PanelNotFound
from .log_format import in_panel_context
from .materializer import Materializer
from .model import Change, ChangeType, PanelInfo, PanelKey, TriggeredBy
from .pipeline import Pipeline
from .ports import UpdateLog
from .replay import rebuild
from .replication import Replication
from .room import Room, RoomSettings
from .update_guard import UpdateGuard

log = logging.getLogger(__name__)


class RoomRegistry:
    def __init__(
        self,
        log_store: UpdateLog,
        pipeline: Pipeline,
        *,
        settings: RoomSettings | None = None,
        idle_seconds: float = 30.0,
        admit_creation: Callable[[str | None], None] | None = None,
    ) -> None:
        self.log = log_store
        self.pipeline = pipeline
        self.replication: Replication = pipeline.replication
        self.materializer: Materializer = pipeline.materializer
        self.settings = settings or RoomSettings()
        self.idle_seconds = idle_seconds
        self.admit_creation = admit_creation  # raises (e.g. RateLimited) to refuse one
        self.rooms: dict[PanelKey, Room] = {}
        self._loading: dict[PanelKey, asyncio.Future[Room]] = {}
        self._evicting: dict[PanelKey, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self.loads = 0
        self.replication.on_deleted = self._deleted_elsewhere

    def start(self) -> None:
        if self.idle_seconds > 0:
            self._reaper = asyncio.create_task(self._reap(), name="room reaper")

    async def open(self, key: PanelKey, *, create: bool, subject: str | None = None) -> Room:
        """The live room of a panel, loading it (or creating the panel, if allowed)."""
        while True:
            room = self.rooms.get(key)
            if room is not None and room.deleted and not room.closed:
                await self.evict(key)
                continue
            if room is not None and not room.closed:
                room.last_used = time.monotonic()
                return room
            evicting = self._evicting.get(key)
            if evicting is not None:
                await asyncio.shield(evicting)
                continue
            loading = self._loading.get(key)
            if loading is not None:
                await asyncio.shield(loading)
                continue
            return await self._load(key, create=create, subject=subject)

    async def open_or_create(self, key: PanelKey, subject: str | None) -> tuple[Room, bool]:
        """The live room of a panel and whether this call created the panel (a PUT that
        answers 201, a restore that brings a deleted panel back)."""
        try:
            return await self.open(key, create=False), False
        except PanelNotFound:
            return await self.open(key, create=True, subject=subject), True

    async def _load(self, key: PanelKey, *, create: bool, subject: str | None) -> Room:
        future: asyncio.Future[Room] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            panel, info, checkpoint_version = await self._build(key, create, subject)
            # What the doc holds, encoded once: the guard learns its structure (a thread: it
            # is pure Python and can take a while for a big doc), cold joins get it as is.
            state = panel.doc.get_update()
            guard = UpdateGuard(server_clients=[panel.doc.client_id])
            await asyncio.to_thread(guard.learn, state)
            # Its task logs the panel's ids, not those of the request or socket loading it.
            room = in_panel_context(
                key.workspace_id,
                key.panel_id,
                Room,
                key,
                panel,
                info,
                self.pipeline,
                self.settings,
                guard,
                state,
            )
            self.rooms[key] = room
            self.materializer.open(room, checkpoint_version)
            await self.replication.attach(room, caught_up=info.version)
            future.set_result(room)
            return room
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # waiters retry on their own; never "unretrieved"
            raise
        finally:
            del self._loading[key]

    async def _build(
        self, key: PanelKey, create: bool, subject: str | None
    ) -> tuple[PanelDoc, PanelInfo, int]:
        loaded = await self.log.load(key)
        if loaded is None:
            if not create:
                raise PanelNotFound(f"Panel '{key}' does not exist.")
            created = await self._create(key, subject)
            if created is not None:
                return created
            loaded = await self.log.load(key)  # someone else created it first
            if loaded is None:
                raise PanelNotFound(f"Panel '{key}' does not exist.")
        self.loads += 1
        checkpoint_version = loaded.checkpoint.version if loaded.checkpoint else 0
        return PanelDoc(rebuild(loaded)), loaded.info, checkpoint_version

    async def _create(
        self, key: PanelKey, subject: str | None
    ) -> tuple[PanelDoc, PanelInfo, int] | None:
        if self.admit_creation is not None:
            self.admit_creation(subject)
        panel = PanelDoc()
        updates: list[bytes] = []
        subscription = panel.doc.observe(lambda event: updates.append(event.update))
        epoch = new_epoch()
        panel.initialize(epoch)
        panel.doc.unobserve(subscription)
        change = Change(
            key=key,
            epoch=epoch,
            update=updates[0],
            change_type=ChangeType.CREATED,
            triggered_by=TriggeredBy.USER if subject else TriggeredBy.SYSTEM,
            trigger_source="yjs",
            subject=subject,
            patch=[],  # the first transaction writes only $meta, which is not in the view
        )
        info = await self.log.create(change)
        if info is None:
            return None
        log.info("created panel %s (epoch %s)", key, epoch)
        return panel, info, 0

    # -- unloading ---------------------------------------------------------------------------

    async def evict(self, key: PanelKey) -> None:
        room = self.rooms.get(key)
        if room is None or key in self._evicting:
            return
        task = asyncio.create_task(self._evict(key, room))
        self._evicting[key] = task
        try:
            await asyncio.shield(task)
        finally:
            self._evicting.pop(key, None)

    async def _evict(self, key: PanelKey, room: Room) -> None:
        await room.stop()  # no more work; the log answered every change it made
        await self.materializer.unload(room)
        room.release()
        self.rooms.pop(key, None)
        await self.replication.detach(key)

    def _deleted_elsewhere(self, key: PanelKey) -> None:
        task = asyncio.create_task(self.evict(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def evict_idle(self, idle_seconds: float | None = None) -> int:
        """Evict rooms with no client that have seen no work for `idle_seconds`."""
        limit = self.idle_seconds if idle_seconds is None else idle_seconds
        now = time.monotonic()
        idle = [
            key
            for key, room in self.rooms.items()
            if not room.peers and room.inbox.empty() and now - room.last_used >= limit
        ]
        for key in idle:
            await self.evict(key)
        return len(idle)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(max(self.idle_seconds / 2, 0.5))
            try:
                await self.evict_idle()
            except Exception:
                log.exception("evicting idle rooms failed")

    async def close(self, close_code: int | None = None) -> None:
        tasks = [self._reaper, *self._tasks]
        for task in tasks:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
        if close_code is not None:
            for room in self.rooms.values():
                room.peers.close_all(close_code, "server shutting down")
        for key in list(self.rooms):
            await self.evict(key)
