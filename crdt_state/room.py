"""A room: one live panel doc and its inbox. The room is the only way to change the doc.

Everything that touches the doc runs in the room, one step at a time (a room is an actor:
see actor.py), so each step sees and leaves a consistent doc.

A change, whatever made it (a Yjs client's update, a REST edit, a revert, a restore, a
deletion), leaves the room the same way: as one `Change` (the commit event: key, epoch,
update, patch, attribution) handed to the room's sink, the post-commit path
(crdt_state/pipeline.py), which relays, logs, publishes and materializes it. Updates that
other replicas made and logged come in through `apply_logged`: shown, never logged again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from pycrdt import merge_updates

from .actor import Actor
from .document import PanelDoc
from .errors import DocumentTooLarge, StateError
from .guard_memory import Plan
from .json_edits import write_in_bulk
from .jsonpatch import derived_patch
from .lib0 import (
    MalformedUpdate,
)
from .log_position import LogPosition
from .model import (
    Attribution,
    Change,
    ChangeType,
    JSONObject,
    JSONPatch,
    PanelInfo,
    PanelKey,
    PanelState,
    utcnow,
)
from .patch_events import PatchRecorder
from .patch_plan import apply_to_json
from .peers import Peers
from .protocol import AwarenessEntry, encode_awareness
from .update_guard import UpdateGuard
from .values import MAX_DEPTH

log = logging.getLogger(__name__)
T = TypeVar("T")
E = TypeVar("E", bound="Edit")
EMPTY_UPDATE = b"\x00\x00"
EMPTY_STATE_VECTOR = b"\x00"
# The JSON view is brought up to date when it is read, not at each change (a live room's view
# is read about once a second, when it is stored, while it may change hundreds of times).
# Past this many operations waiting, or one per this many bytes of the view's JSON if more, a
# fresh render costs less than replaying them: the view is dropped and rendered at the next
# read. A render's cost follows the live content, not the doc's history (measured: a 10-key
# view of a doc of 20,000 overwrites, 240 KB, renders in 12 us, the cost of 1.5 replayed
# operations; a view of 27 KB in 0.55 ms, of 40).
UNSEEN_OPS_MIN = 4
UNSEEN_OPS_PER_VIEW_BYTES = 1024


class InvalidUpdate(ValueError):
    """A Yjs update the doc could not take (malformed, or refused by the CRDT library)."""


class Edit(Protocol):
    """A change prepared against the room's current JSON view: `write` makes it in the doc,
    inside the room's transaction; `after` is the view it leaves (None: derive it from the
    change events)."""

    @property
    def after(self) -> JSONObject | None: ...

    @property
    def written_bytes(self) -> int:
        """About how much it adds to the doc (JSON bytes of what it writes)."""
        ...

    @property
    def bulky(self) -> bool:
        """Whether it writes enough values to be made on a scratch copy (write_in_bulk)."""
        ...

    def write(self, panel: PanelDoc) -> None: ...


class ChangeSink(Protocol):
    """Where a room's changes go: the post-commit path."""

    def changed(self, room: Room, change: Change, origin: object | None) -> None: ...

    def changed_remotely(self, room: Room, update: bytes) -> None: ...

    def presence_changed(self, room: Room, update: bytes) -> None: ...


@dataclass(slots=True)
class RoomSettings:
    checkpoint_every: int = 1000
    max_awareness_bytes: int = 64 * 1024
    max_doc_bytes: int = 16 * 1024 * 1024
    inbox_size: int = 1024


def is_crdt_panic(exc: BaseException) -> bool:
    # pycrdt's Rust panics surface as pyo3's PanicException, a BaseException.
    return type(exc).__name__ == "PanicException"


class Room(Actor):
    def __init__(
        self,
        key: PanelKey,
        panel: PanelDoc,
        info: PanelInfo,
        sink: ChangeSink,
        settings: RoomSettings,
        guard: UpdateGuard,
        state: bytes,
    ) -> None:
        super().__init__(f"room {key}", settings.inbox_size)
        self.key = key
        self.epoch = info.epoch
        self.version = info.version
        self.updated_at: datetime = info.updated_at
        self.settings = settings
        self.peers = Peers()
        self.position = LogPosition(info.version)
        self.deleted = False
        self._panel = panel
        self._sink = sink
        self._guard = guard  # knows the doc's structure: checks clients' updates against it
        self._captured: list[bytes] = []
        self._subscription = panel.doc.observe(self._on_transaction)
        self._recorder = PatchRecorder(panel)
        self._changes = 0  # changes applied so far: keys the cached full state
        self._full_state: tuple[int, bytes] | None = (0, state)
        # The doc's encoded size, measured at load and when the estimate nears the limit,
        # plus every update applied since (deletions free less than that: an overestimate).
        self.size = len(state)
        self._view: JSONObject | None = None
        self._unseen: list[JSONPatch] = []  # patches of changes not applied to the view yet
        self._unseen_ops = 0
        self._pending: set[asyncio.Future[int]] = set()  # commits not answered yet

    async def stop(self) -> None:
        """Finish queued work and take no more; then wait for this room's pending commits."""
        await self.finish()
        await self.settle()

    def release(self) -> None:
        """Let go of the doc (after stop): its observers keep callbacks alive from Rust."""
        self._panel.doc.unobserve(self._subscription)
        self._recorder.close()
        self._captured.clear()

    async def settle(self) -> None:
        """Wait until every change applied so far has been answered by the log."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # -- changing the doc (run in the room) ------------------------------------------------

    def apply(
        self,
        update: bytes,
        origin: object | None,
        who: Attribution,
        change_type: ChangeType = ChangeType.UPDATED,
        *,
        may_write_computed: bool = False,
    ) -> Change | None:
        """Apply a Yjs update: a client's (`origin`, checked first) or the server's own (a
        stale REST patch merged as one). Returns the change it made, None when it changed
        nothing. A client's update the guard refuses (UpdateRefused), or that would make the
        doc larger than its limit (DocumentTooLarge), is not applied at all; InvalidUpdate
        when the doc refused it (whatever part it did take in is recorded all the same)."""
        if update == EMPTY_UPDATE:
            return None
        checked = None
        if origin is not None:
            checked = self._guard.check(update, may_write_computed=may_write_computed)
        self.check_size(len(update))
        error: InvalidUpdate | None = None
        try:
            with self._panel.doc.transaction(origin=origin):
                self._panel.doc.apply_update(update)
        except ValueError as exc:
            error = InvalidUpdate(f"invalid Yjs update: {exc}")
        except BaseException as exc:
            if not is_crdt_panic(exc):
                raise
            error = InvalidUpdate("invalid Yjs update: the CRDT library refused it")
        # What the check found is what the doc integrated, unless the doc refused part of it.
        change = self._record(origin, who, change_type, checked=None if error else checked)
        if error is not None:
            raise error
        return change

    def check_size(self, adding: int) -> None:
        """DocumentTooLarge unless `adding` more bytes keep the doc within its limit."""
        limit = self.settings.max_doc_bytes
        if self.size + adding <= limit:
            return
        self.size = len(self.encode_state())  # the estimate only grows: measure it again
        if self.size + adding > limit:
            raise DocumentTooLarge(
                f"The panel would grow past its limit of {limit} bytes "
                f"(it holds {self.size}); nothing was changed.",
                limit=limit,
            )

    def edit(
        self, prepare: Callable[[JSONObject], E], who: Attribution, change_type: ChangeType
    ) -> tuple[E, Change | None]:
        """Prepare a change against the current view (it may refuse: nothing is touched),
        then write it in one transaction. Returns the edit and the change (None: no-op)."""
        edit = prepare(self.view())
        self.check_size(edit.written_bytes)
        # A large write is made on a scratch copy and comes in as one update (linear time).
        bulk = write_in_bulk(self._panel, edit.write) if edit.bulky else None
        try:
            with self._panel.doc.transaction(origin="server"):
                if bulk is None:
                    edit.write(self._panel)
                else:
                    self._panel.doc.apply_update(bulk)
        except BaseException:
            self._record(None, who, change_type)  # what did get in is logged all the same
            raise
        return edit, self._record(None, who, change_type, edit.after)

    def delete(self, who: Attribution) -> Change:
        """Log the panel's deletion; its clients are closed (4404). History is kept."""
        self.deleted = True
        change = Change(
            self.key,
            self.epoch,
            EMPTY_UPDATE,
            ChangeType.DELETED,
            who.triggered_by,
            who.trigger_source,
            who.subject,
            patch=[],
            urgent=True,
        )
        self._sink.changed(self, change, None)
        return change

    def apply_logged(self, *updates: bytes) -> bool:
        """Apply updates another replica took and logs, in one transaction: show them, never
        log them again. Returns whether they changed the doc."""
        with self._panel.doc.transaction(origin="remote"):
            for update in updates:
                try:
                    self._panel.doc.apply_update(update)
                except ValueError as exc:  # checked by the replica that took it: never seen
                    log.error("room %s: an update of another replica failed: %s", self.key, exc)
        if not self._captured:
            return False
        captured, self._captured = self._captured, []
        self._learn(captured)
        self._changes += 1
        self.position.foreign_applied()
        self._advance_view(self._recorder.take())
        self._sink.changed_remotely(
            self, captured[0] if len(captured) == 1 else merge_updates(*captured)
        )
        return True

    def _record(
        self,
        origin: object | None,
        who: Attribution,
        change_type: ChangeType,
        view: JSONObject | None = None,
        checked: Plan | None = None,
    ) -> Change | None:
        """After a transaction: the change it made, if any, handed to the sink. `checked`:
        the guard's analysis of the update applied, to record instead of decoding it again."""
        if not self._captured:
            self._recorder.take()  # keep the recorder in step even for no-op transactions
            return None
        # One transaction gives one event; merging a handful is cheap should there be more.
        captured, self._captured = self._captured, []
        if checked is not None:
            self._guard.commit(checked)
            self.size += sum(len(update) for update in captured)
        else:
            self._learn(captured)
        delta = captured[0] if len(captured) == 1 else merge_updates(*captured)
        patch = self._recorder.take()
        self._changes += 1
        if view is not None and self._view is not None:
            self._view = view  # the edit computed it in its one pass over the JSON
            self._unseen, self._unseen_ops = [], 0  # from view(): it saw them all
        else:
            self._advance_view(patch)
        subject = who.subject
        if subject is None and origin is not None:
            subject = getattr(origin, "subject", None)
        change = Change(
            self.key,
            self.epoch,
            delta,
            change_type,
            who.triggered_by,
            who.trigger_source,
            subject,
            patch,
            # A client's live update was relayed already and nobody waits for its commit; a
            # server-side change (REST, revert) is answered after it: that one is urgent.
            urgent=origin is None,
        )
        change.expected_version = self.position.expect(change.change_id)
        self._sink.changed(self, change, origin)
        return change

    def relay_presence(self, entries: list[AwarenessEntry], sender: object | None) -> None:
        """Presence that changed here: to this room's other clients, and other replicas."""
        if entries:
            self.peers.send_awareness(entries, sender)
            self._sink.presence_changed(self, encode_awareness(entries))

    # -- commits (told by the post-commit path) --------------------------------------------

    def committing(self, future: asyncio.Future[int]) -> None:
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    def committed(self, change: Change, version: int | None) -> None:
        """The log answered a change of this room: its version, or None (refused)."""
        self.position.committed(change.change_id, version)
        if version is not None:
            self.advance_to(version)

    def advance_to(self, version: int) -> None:
        """A version of this panel is committed (here, or by another replica)."""
        if version > self.version:
            self.version = version
            self.updated_at = utcnow()

    @property
    def quiet(self) -> bool:
        """No change of this room is waiting for the log."""
        return not self._pending

    # -- reading (run in the room) ---------------------------------------------------------

    def view(self) -> JSONObject:
        """The JSON view, kept current from the changes' JSON Patches, applied when it is read
        (or rendered afresh when that is cheaper): never re-rendered per read."""
        if self._unseen:
            unseen, self._unseen, self._unseen_ops = self._unseen, [], 0
            self._view = _replayed(self._view, unseen, self.key)
        if self._view is None:
            # Entries the log holds too deep to render (from before updates were checked)
            # show as a placeholder: rendering them could crash the process.
            self._view = self._panel.render(self._guard.too_deep(MAX_DEPTH))
        return self._view

    def state(self) -> PanelState:
        return PanelState(self.key, self.view(), self.version, self.epoch, self.updated_at)

    def state_vector(self) -> bytes:
        return self._panel.doc.get_state()

    def encode_state(self) -> bytes:
        """The whole doc as one update; encoded once per change (cold joins all ask)."""
        if self._full_state is None or self._full_state[0] != self._changes:
            self._full_state = (self._changes, self._panel.doc.get_update())
        return self._full_state[1]

    def encode_missing(self, state_vector: bytes) -> bytes:
        """What a peer with `state_vector` lacks; InvalidUpdate for a malformed vector."""
        if state_vector == EMPTY_STATE_VECTOR:
            return self.encode_state()
        try:
            return self._panel.doc.get_update(state_vector)
        except ValueError as exc:
            raise InvalidUpdate(f"invalid state vector: {exc}") from None
        except BaseException as exc:
            if is_crdt_panic(exc):
                raise InvalidUpdate("invalid state vector") from None
            raise

    # -- helpers ---------------------------------------------------------------------------

    def _advance_view(self, patch: JSONPatch) -> None:
        if self._view is None or not patch:
            return
        self._unseen.append(patch)
        self._unseen_ops += len(patch)
        bound = max(UNSEEN_OPS_MIN, self._panel.rendered_bytes // UNSEEN_OPS_PER_VIEW_BYTES)
        if self._unseen_ops > bound:
            self._view = None  # rendered at the next read
            self._unseen, self._unseen_ops = [], 0

    def _learn(self, updates: list[bytes]) -> None:
        for update in updates:
            self.size += len(update)
            try:
                self._guard.learn(update)
            except MalformedUpdate:  # pycrdt wrote something the decoder does not know
                log.exception("room %s: the update guard cannot read an applied update", self.key)

    def _on_transaction(self, event: Any) -> None:
        # Runs inside pycrdt: must not raise nor touch the doc.
        self._captured.append(event.update)


def _replayed(
    view: JSONObject | None, patches: list[JSONPatch], key: PanelKey
) -> JSONObject | None:
    """`view` with the patches applied; None (render afresh) should one not apply."""
    try:
        for patch in patches:
            view = apply_to_json(view, derived_patch(patch))
    except StateError:  # should not happen; a fresh render is always right
        log.exception("room %s: change events did not replay; re-rendering", key)
        return None
    return view
