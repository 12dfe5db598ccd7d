"""A room: one live panel doc, its clients, its presence. The room serializes work on its doc.

Connections and REST handlers never touch the doc: they hand the room work through its inbox
(`submit` for protocol messages, `call` for anything that wants an answer). Work is synchronous,
so each step sees and leaves a consistent doc. The room's task runs what queued up; when nothing
is queued, work runs at once in the caller's task (same order, no hop).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pycrdt import merge_updates

from .awareness import Presence
from .changes import PatchRecorder
from .connection import CLOSE_BAD_MESSAGE, CLOSE_NOT_FOUND, CLOSE_TOO_LARGE, Connection
from .document import META, SCHEMA_VERSION, PanelDoc
from .errors import StateError
from .jsonpatch import apply_to_json, derived_patch
from .log_position import LogPosition
from .ports import (
    Change,
    ChangeType,
    Checkpoint,
    FanoutKind,
    FanoutMessage,
    PanelInfo,
    PanelKey,
    PanelView,
    StateCache,
    TriggeredBy,
    UpdateLog,
    utcnow,
)
from .protocol import (
    Message,
    MessageType,
    ProtocolError,
    SyncType,
    awareness_message,
    decode_awareness,
    encode_awareness,
    sync_step1,
    sync_step2,
    sync_update,
)
from .replay import rebuild, write_checkpoint

log = logging.getLogger(__name__)
T = TypeVar("T")
EMPTY_UPDATE = b"\x00\x00"
EMPTY_STATE_VECTOR = b"\x00"
SEEN_REMOTE_LIMIT = 10_000
NOTICE_WAIT_SECONDS = 1.0  # how long a read waits for the version of a change seen live
CACHE_TTL_SECONDS = 1800
VIEW_SAVE_INTERVAL = 1.0  # seconds: a room stores its view at most this often
CHANGE_ID_BYTES = 32  # uuid4 hex


def pack_update(change_id: str, update: bytes) -> bytes:
    """A live update as it travels between replicas: its change id, then the update."""
    return change_id.encode("ascii") + update


def unpack_update(payload: bytes) -> tuple[str, bytes]:
    return payload[:CHANGE_ID_BYTES].decode("ascii", "replace"), payload[CHANGE_ID_BYTES:]


def is_crdt_panic(exc: BaseException) -> bool:
    # pycrdt's Rust panics surface as pyo3's PanicException, a BaseException.
    return type(exc).__name__ == "PanicException"


@dataclass(slots=True)
class RoomSettings:
    checkpoint_every: int = 1000
    max_awareness_bytes: int = 64 * 1024
    inbox_size: int = 1024


class Room:
    def __init__(
        self,
        key: PanelKey,
        panel: PanelDoc,
        info: PanelInfo,
        *,
        checkpoint_version: int,
        log_store: UpdateLog,
        submit_change: Callable[..., asyncio.Future[int]],
        submit_view: Callable[[PanelView], asyncio.Future[bool]],
        publish: Callable[[PanelKey, FanoutMessage], None],
        publish_notice: Callable[[str, dict[str, Any]], None],
        request_catch_up: Callable[[PanelKey, int, int | None], None],
        cache: StateCache | None = None,
        replica_id: str,
        settings: RoomSettings,
    ) -> None:
        self.key = key
        self.panel = panel
        self.epoch = info.epoch
        self.version = info.version
        self.updated_at: datetime = info.updated_at
        self.checkpoint_version = checkpoint_version
        self.log = log_store
        self._submit_change = submit_change
        self._submit_view = submit_view
        self._publish = publish
        self._publish_notice = publish_notice
        self._request_catch_up = request_catch_up
        self.cache = cache
        self.caught_up = info.version  # every log entry up to here is applied to the doc
        self.position = LogPosition(info.version)
        self._seen_remote: OrderedDict[str, None] = OrderedDict()
        # Changes of other replicas applied live whose commit notice (their version) has not
        # come yet: change id -> (replica, when applied). A read waits for them (settle).
        self._unnumbered: dict[str, tuple[str, float]] = {}
        self._numbered = asyncio.Event()
        self._numbered.set()
        self.replica_id = replica_id
        self.settings = settings
        self.connections: set[Connection] = set()
        self.presence = Presence()
        self.last_used = time.monotonic()
        self.dropped_read_only = 0
        self.inbox: asyncio.Queue[tuple[Callable[..., Any], tuple[Any, ...], Any]] = asyncio.Queue(
            settings.inbox_size
        )
        self._captured: list[bytes] = []
        self._subscription = panel.doc.observe(self._on_transaction)
        self._meta_touched = False  # set by the $meta observer: only then is it checked
        self._meta_subscription = panel.roots[META].observe(self._on_meta_event)
        self._recorder = PatchRecorder(panel)
        self._changes = 0
        self._full_state: tuple[int, bytes] | None = None
        self._view: dict[str, Any] | None = None
        self._pending: set[asyncio.Future[int]] = set()
        self._checkpointing: asyncio.Task[Any] | None = None
        self._view_timer: asyncio.TimerHandle | None = None
        self._after_view_task: asyncio.Task[None] | None = None
        self._view_saved_version = info.version
        self._view_saved_at = 0.0
        self._task = asyncio.create_task(self._run(), name=f"room {key}")
        self.closed = False
        self.deleted = False

    # -- the room's task ------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            fn, args, future = await self.inbox.get()
            if fn is _STOP:
                return
            self._execute(fn, args, future)

    def _execute(self, fn: Callable[..., Any], args: tuple[Any, ...], future: Any) -> None:
        try:
            result = fn(*args)
        except (KeyboardInterrupt, SystemExit, asyncio.CancelledError):
            raise
        except BaseException as exc:  # PanicException included: the room must live on
            if future is None:
                log.exception("room %s: %s failed", self.key, getattr(fn, "__name__", fn))
            elif not future.done():
                future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(exc))
        else:
            if future is not None and not future.done():
                future.set_result(result)

    # Work is synchronous: nothing else runs on the thread while it does. So when the inbox
    # is empty (the task is idle, nothing queued ahead), work runs at once in the caller's
    # task, in order, saving a queue hop and a task switch; otherwise it queues behind.

    async def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue work without waiting for it (waits only for room in a full inbox)."""
        self.last_used = time.monotonic()
        if self.inbox.empty() and not self.closed:
            self._execute(fn, args, None)
            return
        await self.inbox.put((fn, args, None))

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` in the room (see above) and return its result."""
        self.last_used = time.monotonic()
        if kwargs:
            fn = functools.partial(fn, **kwargs)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        if self.inbox.empty() and not self.closed:
            self._execute(fn, args, future)
        else:
            await self.inbox.put((fn, args, future))
        return await future

    async def stop(self) -> None:
        """Finish queued work, wait for pending log writes, let go of the doc."""
        if self.closed:
            return
        self.closed = True
        await self.inbox.put((_STOP, (), None))
        await self._task
        await self.settle(numbered=False)
        if self._view_timer is not None:
            self._view_timer.cancel()  # it may be waiting out its interval: save right here
        if self._after_view_task is not None:
            await asyncio.gather(self._after_view_task, return_exceptions=True)
        if self._checkpointing is not None:
            await asyncio.gather(self._checkpointing, return_exceptions=True)
        if self._checkpoint_due() and self.position.exact and self.position.settled:
            # Unloading: the doc is at hand, so the next load replays less.
            live = Checkpoint(version=self.position.base, state=self.panel.doc.get_update())
            await self._checkpoint(live)
        if self._view_saved_version < self.version:  # the task is done: safe to render here
            try:
                await self.log.save_view(self.key, self.epoch, self.version, self.view()[0])
            except Exception as exc:
                log.info("room %s: final view not saved: %r", self.key, exc)
        self.panel.doc.unobserve(self._subscription)
        self.panel.roots[META].unobserve(self._meta_subscription)
        self._recorder.close()
        self._captured.clear()

    async def settle(self, *, numbered: bool = True) -> None:
        """Wait for every change applied so far to be committed to the log, and (`numbered`)
        for the versions of other replicas' changes applied live, so that the version a
        read reports covers everything its state holds (at most NOTICE_WAIT_SECONDS: a lost
        notice is the catch-up's business)."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        if numbered and self._unnumbered:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._numbered.wait(), NOTICE_WAIT_SECONDS)
            too_old = time.monotonic() - NOTICE_WAIT_SECONDS
            for change_id, (_, applied) in list(self._unnumbered.items()):
                if applied <= too_old:
                    self._unnumbered.pop(change_id)
            self._check_numbered()

    def _check_numbered(self) -> None:
        if not self._unnumbered:
            self._numbered.set()

    # -- work run inside the task ---------------------------------------------------------

    def join(self, conn: Connection) -> None:
        self.connections.add(conn)
        conn.send(sync_step1(self.panel.doc.get_state()))
        present = self.presence.current()
        if present:
            conn.send(awareness_message(encode_awareness(present)))

    def leave(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.last_used = time.monotonic()
        removed = self.presence.remove_owner(conn)
        if removed:
            self._relay_awareness(encode_awareness(removed), None)

    def receive(self, conn: Connection, message: Message) -> None:
        if conn.closing or conn not in self.connections:
            return
        try:
            self._dispatch(conn, message)
        except ProtocolError as exc:
            log.info("room %s: closing a client that sent a bad message: %s", self.key, exc)
            conn.close(CLOSE_BAD_MESSAGE, str(exc))

    def _dispatch(self, conn: Connection, message: Message) -> None:
        if message.type == MessageType.SYNC:
            if message.sync_type == SyncType.STEP1:
                conn.send(sync_step2(self._encode_missing(message.payload)))
            elif not conn.can_write:
                self.dropped_read_only += 1
            else:
                self.apply_update(message.payload, conn, trigger_source="yjs")
        elif message.type == MessageType.AWARENESS:
            if not conn.can_write:
                self.dropped_read_only += 1
                return
            if len(message.payload) > self.settings.max_awareness_bytes:
                conn.close(CLOSE_TOO_LARGE, "awareness state too large")
                return
            changed = self.presence.apply(decode_awareness(message.payload), conn)
            if changed:
                self._relay_awareness(encode_awareness(changed), conn)
        elif message.type == MessageType.QUERY_AWARENESS:
            conn.send(awareness_message(encode_awareness(self.presence.current())))

    def apply_update(
        self,
        update: bytes,
        origin: Connection | None,
        *,
        trigger_source: str,
        triggered_by: TriggeredBy = TriggeredBy.USER,
        subject: str | None = None,
        change_type: ChangeType = ChangeType.UPDATED,
    ) -> asyncio.Future[int] | None:
        """Apply a Yjs update; broadcast, log and publish what it changed.

        Returns the future of its log version, or None when it changed nothing.
        """
        if update == EMPTY_UPDATE:
            return None
        error: ProtocolError | None = None
        try:
            with self.panel.doc.transaction(origin=origin):
                self.panel.doc.apply_update(update)
        except ValueError as exc:
            error = ProtocolError(f"invalid Yjs update: {exc}")
        except BaseException as exc:
            if not is_crdt_panic(exc):
                raise
            error = ProtocolError("invalid Yjs update: the CRDT library refused it")
        # Whatever the doc did take in is broadcast and logged, so replicas and log agree.
        future = self.record_change(origin, trigger_source, triggered_by, subject, change_type)
        if self._meta_touched:
            self._meta_touched = False
            if origin is not None:
                self._guard_meta()
                self._meta_touched = False  # the guard's own write
        if error is not None:
            raise error
        return future

    def _guard_meta(self) -> None:
        """`$meta` is server-owned: undo a client's edit of it with a forward change."""
        meta = self.panel.roots[META]
        if meta.get("epoch") == self.epoch and meta.get("schema") == SCHEMA_VERSION:
            return
        log.warning("room %s: a client changed $meta; restoring it", self.key)
        with self.panel.doc.transaction(origin="server"):
            meta["epoch"] = self.epoch
            meta["schema"] = SCHEMA_VERSION
        self.record_change(None, "meta-guard", TriggeredBy.SYSTEM, None, ChangeType.UPDATED)

    def record_change(
        self,
        origin: Connection | None,
        trigger_source: str | None,
        triggered_by: TriggeredBy,
        subject: str | None,
        change_type: ChangeType,
    ) -> asyncio.Future[int] | None:
        """After a transaction: broadcast, log and publish what it changed, if anything.

        Returns the future of the change's log version (None when nothing changed).
        """
        if not self._captured:
            self._recorder.take()  # keep the recorder in step even for no-op transactions
            return None
        # One transaction gives one event; merging a handful is cheap should there be more.
        captured, self._captured = self._captured, []
        delta = captured[0] if len(captured) == 1 else merge_updates(*captured)
        patch = self._recorder.take()
        self._changes += 1
        self._advance_view(patch)
        frame = sync_update(delta)
        for conn in self.connections:
            if conn is not origin:
                conn.send(frame)
        change = Change(
            key=self.key,
            epoch=self.epoch,
            update=delta,
            change_type=change_type,
            triggered_by=triggered_by,
            trigger_source=trigger_source,
            subject=subject if subject is not None else (origin.subject if origin else None),
            patch=patch,
        )
        change.expected_version = self.position.expect(change.change_id)
        # A client's live update was relayed already and nobody waits for its commit; a
        # server-side change (REST, revert) is answered after it: that one is urgent.
        future = self._submit(change, urgent=origin is None)
        self._publish(
            self.key,
            FanoutMessage(FanoutKind.UPDATE, pack_update(change.change_id, delta), self.replica_id),
        )
        return future

    def _submit(self, change: Change, *, urgent: bool) -> asyncio.Future[int]:
        future = self._submit_change(change, urgent=urgent)
        self._pending.add(future)
        future.add_done_callback(functools.partial(self._committed, change))
        return future

    def delete(
        self, subject: str | None, triggered_by: TriggeredBy, trigger_source: str | None
    ) -> asyncio.Future[int]:
        """Log the panel's deletion and close its clients (4404). History is kept."""
        change = Change(
            key=self.key,
            epoch=self.epoch,
            update=EMPTY_UPDATE,
            change_type=ChangeType.DELETED,
            triggered_by=triggered_by,
            trigger_source=trigger_source,
            subject=subject,
            patch=[],
        )
        future = self._submit(change, urgent=True)
        self._publish(self.key, FanoutMessage(FanoutKind.DELETED, b"", self.replica_id))
        self._drop_clients()
        return future

    def _drop_clients(self) -> None:
        self.deleted = True
        for conn in list(self.connections):
            conn.close(CLOSE_NOT_FOUND, "the panel was deleted")

    def apply_remote(self, message: FanoutMessage) -> None:
        """A change another replica applied and logged: apply and show it, do not re-log it."""
        if message.kind == FanoutKind.UPDATE:
            change_id, update = unpack_update(message.payload)
            self._seen_remote[change_id] = None
            if len(self._seen_remote) > SEEN_REMOTE_LIMIT:
                self._seen_remote.popitem(last=False)
            self._unnumbered[change_id] = (message.origin, time.monotonic())
            if len(self._unnumbered) > SEEN_REMOTE_LIMIT:
                self._unnumbered.pop(next(iter(self._unnumbered)))
            self._numbered.clear()
            self.apply_logged(update)
        elif message.kind == FanoutKind.DELETED:
            self._drop_clients()
        elif message.kind == FanoutKind.AWARENESS and not message.payload:
            # A replica that just opened this panel asks who is here.
            present = self.presence.local()
            if present:
                update = encode_awareness(present)
                self._publish(
                    self.key, FanoutMessage(FanoutKind.AWARENESS, update, self.replica_id)
                )
        elif message.kind == FanoutKind.AWARENESS:
            changed = self.presence.apply(decode_awareness(message.payload), message.origin)
            if changed:
                frame = awareness_message(encode_awareness(changed))
                for conn in self.connections:
                    conn.send(frame)

    def apply_logged(self, update: bytes) -> None:
        """Apply an update another replica took (and logs): show it, do not log it again."""
        with self.panel.doc.transaction(origin="remote"):
            self.panel.doc.apply_update(update)
        if self._captured:
            self._captured = []
            self._changes += 1
            self.position.foreign_applied()
            self._advance_view(self._recorder.take())
            frame = sync_update(update)
            for conn in self.connections:
                conn.send(frame)

    def on_notice(self, notice: dict[str, Any]) -> None:
        """Another replica committed a version of this panel. If this room never saw that
        change live (a lost message), it asks for it from the log."""
        version = notice.get("version")
        if self._unnumbered.pop(str(notice.get("changeId")), None) is not None:
            self._check_numbered()
        if not isinstance(version, int) or notice.get("epoch") != self.epoch:
            return
        if version > self.version:
            self.version = version
            self.updated_at = utcnow()
        if notice.get("changeId") not in self._seen_remote:  # its live frame was lost
            self._request_catch_up(self.key, version - 1, version)

    def caught_up_to(self, version: int) -> None:
        self.caught_up = max(self.caught_up, version)
        if version > self.version:
            self.version = version

    def forget_replica(self, replica_id: str) -> None:
        """A replica died: the presence of its clients goes, for everyone here (and no
        read waits for the versions of its changes any more)."""
        for change_id, (origin, _) in list(self._unnumbered.items()):
            if origin == replica_id:
                self._unnumbered.pop(change_id)
        self._check_numbered()
        removed = self.presence.remove_owner(replica_id)
        if removed:
            frame = awareness_message(encode_awareness(removed))
            for conn in self.connections:
                conn.send(frame)

    def view(self) -> tuple[dict[str, Any], int, datetime]:
        """The JSON view, its version and time. Kept current from each change's JSON Patch,
        so a read never re-renders the doc."""
        if self._view is None:
            self._view = self.panel.render()
        return self._view, self.version, self.updated_at

    def _advance_view(self, patch: list[dict[str, Any]]) -> None:
        if self._view is None or not patch:
            return
        try:
            self._view = apply_to_json(self._view, derived_patch(patch))
        except StateError:  # should not happen; a fresh render is always right
            log.exception("room %s: change events did not replay; re-rendering", self.key)
            self._view = None

    # -- helpers --------------------------------------------------------------------------

    def _on_transaction(self, event: Any) -> None:
        # Runs inside pycrdt: must not raise nor touch the doc.
        self._captured.append(event.update)

    def _on_meta_event(self, event: Any) -> None:
        self._meta_touched = True

    def _encode_missing(self, state_vector: bytes) -> bytes:
        # Cold joins all ask for everything: encode the full state once per change.
        if state_vector == EMPTY_STATE_VECTOR:
            if self._full_state is None or self._full_state[0] != self._changes:
                self._full_state = (self._changes, self.panel.doc.get_update())
            return self._full_state[1]
        try:
            return self.panel.doc.get_update(state_vector)
        except ValueError as exc:
            raise ProtocolError(f"invalid state vector: {exc}") from None
        except BaseException as exc:
            if is_crdt_panic(exc):
                raise ProtocolError("invalid state vector") from None
            raise

    def _relay_awareness(self, update: bytes, sender: Connection | None) -> None:
        frame = awareness_message(update)
        for conn in self.connections:
            if conn is not sender:
                conn.send(frame)
        self._publish(self.key, FanoutMessage(FanoutKind.AWARENESS, update, self.replica_id))

    def _committed(self, change: Change, future: asyncio.Future[int]) -> None:
        self._pending.discard(future)
        if future.cancelled() or future.exception() is not None:
            self.position.committed(change.change_id, None)
            if not future.cancelled():
                log.error("room %s: the log refused a change: %s", self.key, future.exception())
            return
        version = future.result()
        self.position.committed(change.change_id, version)
        self._notify(change, version)
        if version > self.version:
            self.version = version
            self.updated_at = utcnow()
        if not self._pending:
            self._view_due()
        self._checkpoint_if_due()

    def _checkpoint_if_due(self) -> None:
        if not self._checkpoint_due() or self._checkpointing is not None or self.closed:
            return
        if not self._pending and self.position.exact:
            # Quiet, and the doc is exactly the log's prefix: encode it, no replay.
            with contextlib.suppress(asyncio.QueueFull):  # else a later commit retries
                self.inbox.put_nowait((self._checkpoint_live, (), None))
        elif self._checkpoint_overdue():
            self._checkpointing = asyncio.create_task(self._checkpoint())

    # The stored view (and the hot cache) is a query cache of the log: it is written when the
    # room is quiet (every applied change committed, so the view is of `version`), at most
    # once per VIEW_SAVE_INTERVAL, and rides in a group-commit transaction.

    def _view_due(self) -> None:
        if self.closed or self._view_timer is not None:
            return
        if self._view_saved_version >= self.version:
            return
        wait = self._view_saved_at + VIEW_SAVE_INTERVAL - time.monotonic()
        if wait > 0:
            loop = asyncio.get_running_loop()
            self._view_timer = loop.call_later(wait, self._view_timer_fired)
            return
        with contextlib.suppress(asyncio.QueueFull):  # a busy room: its next commit retries
            self.inbox.put_nowait((self._save_view, (), None))

    def _view_timer_fired(self) -> None:
        self._view_timer = None
        if not self._pending:  # else the next commit brings it back
            self._view_due()

    def _save_view(self) -> None:
        """Runs in the room's task: hand the current view to the committer."""
        if self.closed or self._pending or self._view_saved_version >= self.version:
            return
        version = self.version
        view = self.view()[0]
        self._view_saved_at = time.monotonic()
        written = self._submit_view(PanelView(self.key, self.epoch, version, view))
        written.add_done_callback(functools.partial(self._view_written, version, view))

    def _view_written(
        self, version: int, view: dict[str, Any], written: asyncio.Future[bool]
    ) -> None:
        if written.cancelled() or not written.result():
            return
        self._view_saved_version = max(self._view_saved_version, version)
        rebaseline = not self.position.exact and self.position.settled
        if (self.cache is not None or rebaseline) and not self.closed:
            if self._after_view_task is None:
                self._after_view_task = asyncio.create_task(self._after_view(view, version))

    async def _after_view(self, view: dict[str, Any], version: int) -> None:
        try:
            await self.put_cache(view, version)
            if not self.position.exact and self.position.settled and not self.closed:
                await self._rebaseline()
        except Exception as exc:
            log.info("room %s: cache not refreshed (%r); the next save retries", self.key, exc)
        finally:
            self._after_view_task = None

    def _notify(self, change: Change, version: int) -> None:
        """Tell every replica (and JSON subscribers) that `version` is committed."""
        kind = "state_deleted" if change.change_type == ChangeType.DELETED else "state_update"
        self._publish_notice(
            self.key.workspace_id,
            {
                "type": kind,
                "workspaceId": self.key.workspace_id,
                "panelId": self.key.panel_id,
                "version": version,
                "epoch": self.epoch,
                "changeType": change.change_type.value,
                "patch": change.patch_for(version),
                "triggeredBy": change.triggered_by.value,
                "triggerSource": change.trigger_source,
                "subject": change.subject,
                "timestamp": change.occurred_at.isoformat(),
                "changeId": change.change_id,
                "replica": self.replica_id,
            },
        )

    async def _rebaseline(self) -> None:
        """After updates from other replicas: is the doc again exactly the log's prefix?
        Then this room's patches are the log's again (equal state vectors: equal docs)."""
        loaded = await self.log.load(self.key)
        if loaded is None or loaded.info.epoch != self.epoch:
            return
        logged = rebuild(loaded).get_state()
        version = loaded.info.version

        def compare() -> None:
            if self.position.settled and self.panel.doc.get_state() == logged:
                self.position.rebaseline(version)

        await self.call(compare)

    async def put_cache(self, view: dict[str, Any], version: int) -> None:
        """Refresh the hot JSON view other replicas read (`state:{ws}:{panel}`)."""
        if self.cache is not None:
            entry = {
                "version": version,
                "epoch": self.epoch,
                "state": view,
                "updatedAt": self.updated_at.isoformat(),
            }
            await self.cache.put(self.key, entry, CACHE_TTL_SECONDS)

    def _checkpoint_due(self) -> bool:
        return self.version - self.checkpoint_version >= self.settings.checkpoint_every

    def _checkpoint_overdue(self) -> bool:
        # A room that is never quiet (or holds other replicas' updates) replays the log.
        return self.version - self.checkpoint_version >= 2 * self.settings.checkpoint_every

    def _checkpoint_live(self) -> None:
        """Runs in the room: checkpoint the doc itself when it is exactly the log's first
        `position.base` entries (every applied change committed, none from elsewhere). The
        replay from the log that it saves stalled every room of the replica for tens of ms."""
        if self.closed or self._checkpointing is not None or not self._checkpoint_due():
            return
        if self._pending or not (self.position.exact and self.position.settled):
            return
        checkpoint = Checkpoint(version=self.position.base, state=self.panel.doc.get_update())
        self._checkpointing = asyncio.create_task(self._checkpoint(checkpoint))

    async def _checkpoint(self, live: Checkpoint | None = None) -> None:
        """Store `live` (the doc's own state), or else replay the log into a fresh doc, never
        touching the live one, until no checkpoint is due."""
        progressed = False
        try:
            if live is not None:
                await self.log.save_checkpoint(self.key, self.epoch, live)
                self.checkpoint_version = max(self.checkpoint_version, live.version)
                progressed = True
                return
            while self._checkpoint_due():
                checkpoint = await write_checkpoint(self.log, self.key, self.version)
                if checkpoint is None:
                    return
                self.checkpoint_version = max(self.checkpoint_version, checkpoint.version)
                progressed = True
        except StateError as exc:
            log.info("room %s: checkpoint skipped: %s", self.key, exc)
        except Exception:
            log.exception("room %s: checkpoint failed", self.key)
        finally:
            self._checkpointing = None
            if progressed:  # changes that came meanwhile may have made another one due
                self._checkpoint_if_due()


def _STOP() -> None:  # sentinel for the inbox
    return None
