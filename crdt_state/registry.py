"""The rooms of a replica: load on demand, evict when idle (after their log writes land)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass
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
    Outgoing,
    PanelKey,
    StateCache,
    Subscription,
    TriggeredBy,
    UpdateLog,
)
from .replay import rebuild
from .room import Room, RoomSettings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Watch:
    """The notice subscription of a workspace, shared by its live rooms."""

    subscription: Subscription
    rooms: int = 0


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
        cache: StateCache | None = None,
    ) -> None:
        self.cache = cache
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
        self._outbox: deque[Outgoing] = deque()
        self._outbox_ready = asyncio.Event()
        self._drained = asyncio.Event()  # clear while messages wait to be published
        self._drained.set()
        self._tasks: list[asyncio.Task[Any]] = []
        self._catch_up: asyncio.Queue[tuple[PanelKey, int, int | None]] = asyncio.Queue()
        self._notice_subscriptions: dict[str, _Watch] = {}
        self.loads = 0

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._publisher(), name="fanout publisher"))
        self._tasks.append(asyncio.create_task(self._catch_up_worker(), name="catch-up"))
        self.fanout.on_replica_lost(self._on_replica_lost)
        self.fanout.on_reconnected(self._on_reconnected)
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
            room = await self._build(key, create=create, subject=subject)
            self.rooms[key] = room
            self._subscriptions[key] = await self.fanout.subscribe(
                key, functools.partial(self._on_remote, key)
            )
            await self._watch_workspace(key.workspace_id)
            # What another replica published between our load and our subscription.
            self.request_catch_up(key, room.caught_up, None)
            # Ask the replicas that hold this panel too for their clients' presence.
            self.publish(key, FanoutMessage(FanoutKind.AWARENESS, b"", self.replica_id))
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
            submit_view=self.committer.save_view,
            publish=self.publish,
            publish_notice=self.publish_notice,
            request_catch_up=self.request_catch_up,
            cache=self.cache,
            replica_id=self.replica_id,
            settings=self.settings,
        )

    def publish(self, key: PanelKey, message: FanoutMessage) -> None:
        """Queue a message for the other replicas; one task sends them all, in order."""
        if not self.fanout.may_reach_others(key):
            return
        self._outbox.append((key, message))
        self._drained.clear()
        self._outbox_ready.set()

    def publish_notice(self, workspace_id: str, notice: dict[str, Any]) -> None:
        self._outbox.append((workspace_id, notice))
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
                batch = list(self._outbox)  # everything queued, in order: one round trip
                self._outbox.clear()
                try:
                    await self.fanout.publish_all(batch)
                except Exception as exc:  # the log is the truth: replicas catch up from it
                    log.warning("fan-out publish of %d messages failed: %r", len(batch), exc)
            self._drained.set()

    def request_catch_up(self, key: PanelKey, after: int, until: int | None) -> None:
        """Have a room apply the log entries (after, until] it may have missed (idempotent)."""
        self._catch_up.put_nowait((key, after, until))

    async def _catch_up_worker(self) -> None:
        while True:
            key, after, until = await self._catch_up.get()
            room = self.rooms.get(key)
            if room is None or room.closed:
                continue
            try:
                entries = await self.log.read(key, after=after, until=until, limit=100_000)
                for entry in entries:
                    if entry.epoch == room.epoch and entry.update:
                        await room.submit(room.apply_logged, entry.update)
                if entries:
                    await room.submit(room.caught_up_to, entries[-1].version)
            except Exception as exc:
                log.warning("catching up %s from the log failed: %r; retrying", key, exc)
                await asyncio.sleep(0.5)
                self._catch_up.put_nowait((key, after, until))

    def _on_notice(self, notice: dict[str, Any]) -> None:
        if notice.get("replica") == self.replica_id:
            return
        key = PanelKey(str(notice.get("workspaceId")), str(notice.get("panelId")))
        room = self.rooms.get(key)
        if room is not None and not room.closed:
            room.inbox.put_nowait((room.on_notice, (notice,), None))

    def _on_replica_lost(self, replica_id: str) -> None:
        log.info("replica %s is gone: removing its clients' presence", replica_id)
        for room in self.rooms.values():
            if not room.closed:
                room.inbox.put_nowait((room.forget_replica, (replica_id,), None))

    def _on_reconnected(self) -> None:
        log.info("fan-out reconnected: catching up every live room from the log")
        for key, room in self.rooms.items():
            self.request_catch_up(key, room.caught_up, None)

    async def _watch_workspace(self, workspace_id: str) -> None:
        watch = self._notice_subscriptions.get(workspace_id)
        if watch is None:
            subscription = await self.fanout.subscribe_notices(workspace_id, self._on_notice)
            watch = self._notice_subscriptions[workspace_id] = _Watch(subscription)
        watch.rooms += 1

    async def _unwatch_workspace(self, workspace_id: str) -> None:
        watch = self._notice_subscriptions.get(workspace_id)
        if watch is not None:
            watch.rooms -= 1
            if watch.rooms <= 0:
                del self._notice_subscriptions[workspace_id]
                await watch.subscription.close()

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
            await self._unwatch_workspace(key.workspace_id)

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
        if self._outbox:  # the publisher task is gone: send what is left from here
            batch = list(self._outbox)
            self._outbox.clear()
            try:
                await self.fanout.publish_all(batch)
            except Exception as exc:
                log.warning("fan-out publish of %d messages failed: %r", len(batch), exc)
