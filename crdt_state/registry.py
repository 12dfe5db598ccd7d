"""The rooms of a replica: load on demand, evict when idle (after their log writes land)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections import deque
from typing import Any

from .committer import Committer
from .document import PanelDoc, new_epoch
from .errors import PanelNotFound
from .ports import (
    Change,
    ChangeType,
    Fanout,
    FanoutKind,
    FanoutMessage,
    PanelKey,
    Subscription,
    TriggeredBy,
    UpdateLog,
)
from .replay import rebuild
from .room import Room, RoomSettings

log = logging.getLogger(__name__)


class RoomRegistry:
    def __init__(
        self,
        log_store: UpdateLog,
        fanout: Fanout,
        committer: Committer,
        *,
        settings: RoomSettings | None = None,
        idle_seconds: float = 30.0,
        replica_id: str | None = None,
    ) -> None:
        self.log = log_store
        self.fanout = fanout
        self.committer = committer
        self.settings = settings or RoomSettings()
        self.idle_seconds = idle_seconds
        self.replica_id = replica_id or uuid.uuid4().hex[:12]
        self.rooms: dict[PanelKey, Room] = {}
        self._subscriptions: dict[PanelKey, Subscription] = {}
        self._loading: dict[PanelKey, asyncio.Future[Room]] = {}
        self._evicting: dict[PanelKey, asyncio.Task[None]] = {}
        self._outbox: deque[tuple[PanelKey, FanoutMessage]] = deque()
        self._outbox_ready = asyncio.Event()
        self._drained = asyncio.Event()  # clear while messages wait to be published
        self._drained.set()
        self._tasks: list[asyncio.Task[Any]] = []
        self.loads = 0

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._publisher(), name="fanout publisher"))
        if self.idle_seconds > 0:
            self._tasks.append(asyncio.create_task(self._reaper(), name="room reaper"))

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

    async def _load(self, key: PanelKey, *, create: bool, subject: str | None) -> Room:
        future: asyncio.Future[Room] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            room = await self._build(key, create=create, subject=subject)
            self.rooms[key] = room
            self._subscriptions[key] = await self.fanout.subscribe(
                key, functools.partial(self._on_remote, key)
            )
            future.set_result(room)
            return room
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # waiters retry on their own; never "unretrieved"
            raise
        finally:
            del self._loading[key]

    async def _build(self, key: PanelKey, *, create: bool, subject: str | None) -> Room:
        loaded = await self.log.load(key)
        if loaded is None:
            if not create:
                raise PanelNotFound(f"Panel '{key}' does not exist.")
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
            if info is not None:
                log.info("created panel %s (epoch %s)", key, epoch)
                return self._room(key, panel, info, 0)
            loaded = await self.log.load(key)  # someone else created it first
            if loaded is None:
                raise PanelNotFound(f"Panel '{key}' does not exist.")
        self.loads += 1
        panel = PanelDoc(rebuild(loaded))
        checkpoint_version = loaded.checkpoint.version if loaded.checkpoint else 0
        return self._room(key, panel, loaded.info, checkpoint_version)

    def _room(self, key: PanelKey, panel: PanelDoc, info: Any, checkpoint_version: int) -> Room:
        return Room(
            key,
            panel,
            info,
            checkpoint_version=checkpoint_version,
            log_store=self.log,
            submit_change=self.committer.submit,
            publish=self.publish,
            replica_id=self.replica_id,
            settings=self.settings,
        )

    def publish(self, key: PanelKey, message: FanoutMessage) -> None:
        """Queue a message for the other replicas; one task sends them all, in order."""
        self._outbox.append((key, message))
        self._drained.clear()
        self._outbox_ready.set()

    async def flush_fanout(self) -> None:
        """Wait until every queued fan-out message has been handed to the Fanout."""
        if self._outbox or not self._drained.is_set():
            await self._drained.wait()

    async def _publisher(self) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            while self._outbox:
                key, message = self._outbox.popleft()
                try:
                    await self.fanout.publish(key, message)
                except Exception:
                    log.exception("fan-out publish failed for %s", key)
            self._drained.set()

    def _on_remote(self, key: PanelKey, message: FanoutMessage) -> None:
        if message.origin == self.replica_id:
            return
        room = self.rooms.get(key)
        if room is not None and not room.closed:
            room.inbox.put_nowait((room.apply_remote, (message,), None))
            if message.kind == FanoutKind.DELETED:
                self._tasks.append(asyncio.create_task(self.evict(key)))

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
        await room.stop()  # flushes its log writes before it lets go
        self.rooms.pop(key, None)
        subscription = self._subscriptions.pop(key, None)
        if subscription is not None:
            await subscription.close()

    async def evict_idle(self, idle_seconds: float | None = None) -> int:
        """Evict rooms with no client that have seen no work for `idle_seconds`."""
        limit = self.idle_seconds if idle_seconds is None else idle_seconds
        now = time.monotonic()
        idle = [
            key
            for key, room in self.rooms.items()
            if not room.connections and room.inbox.empty() and now - room.last_used >= limit
        ]
        for key in idle:
            await self.evict(key)
        return len(idle)

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(max(self.idle_seconds / 2, 0.5))
            try:
                await self.evict_idle()
            except Exception:
                log.exception("evicting idle rooms failed")

    async def close(self, close_code: int | None = None) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for room in list(self.rooms.values()):
            if close_code is not None:
                for conn in list(room.connections):
                    conn.close(close_code, "server shutting down")
        for key in list(self.rooms):
            await self.evict(key)
        while self._outbox:
            key, message = self._outbox.popleft()
            try:
                await self.fanout.publish(key, message)
            except Exception:
                break
