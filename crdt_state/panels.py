"""The panel service: what every face does to a panel, as one API.

Read, read at a version, history, replace, patch (current or stale), revert, restore,
delete. Faces (REST, the JSON socket, snapshots) parse and authorize; this decides and acts,
through the room (the only way to change a doc) and the post-commit path.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

from .committer import Committer
from .document import PanelDoc
from .errors import PanelNotFound, TooManyValues, Unavailable, VersionConflict
from .json_edits import (
    check_panel_paths,
    check_targets_still_exist,
    patch_edit,
    preview_merge,
    replace_edit,
    stale_update,
    whole_root_inverse,
)
from .jsonpatch import Operation
from .log_order import fill_patches
from .materializer import Materializer
from .model import (
    Attribution,
    Change,
    ChangeType,
    JSONObject,
    JSONPatch,
    LoadedPanel,
    LogEntry,
    PanelKey,
    PanelState,
)
from .pipeline import Pipeline
from .ports import ReadModel, StateCache, UpdateLog
from .registry import RoomRegistry
from .replay import rebuild
from .room import Room
from .values import CONTAINER_COST, count_values


@dataclass(slots=True)
class WriteResult:
    """What a write did: the version it was committed as (the current one when it changed
    nothing), the views before and after, and the patch that undoes it."""

    key: PanelKey
    version: int
    before: JSONObject
    after: JSONObject
    inverse: JSONPatch
    merged: bool = False  # applied as a concurrent change against an older version
    created: bool = False  # the panel did not exist (or was deleted) and was created
    changed: bool = True
    epoch: str = ""
    updated_at: datetime | None = None  # when the version it names came about


@dataclass(slots=True)
class ReadCounters:
    cache_hits: int = 0
    cache_misses: int = 0


@dataclass(slots=True)
class PanelService:
    registry: RoomRegistry
    log: UpdateLog
    read_model: ReadModel
    committer: Committer
    cache: StateCache | None = None
    max_patch_write_bytes: int | None = None  # what one patch may write (copies amplify)
    max_write_values: int | None = None  # values one PATCH or PUT may write (count_values)
    counters: ReadCounters = field(default_factory=ReadCounters)

    @property
    def pipeline(self) -> Pipeline:
        return self.registry.pipeline

    @property
    def materializer(self) -> Materializer:
        return self.registry.materializer

    # -- reads -------------------------------------------------------------------------------

    async def settle(self, room: Room) -> None:
        """Wait until the room's state is all committed and numbered: the version a read
        then reports covers everything the state holds."""
        await room.settle()
        await self.registry.replication.numbered(room.key)

    async def read(self, key: PanelKey) -> PanelState:
        """The panel now. With several replicas, the hot cache answers for panels this
        replica does not hold, and for held ones when it is newer (a change acknowledged by
        another replica whose fan-out has not arrived yet)."""
        cached = await self.cache.get(key) if self.cache is not None else None
        room = self.registry.rooms.get(key)
        held = room is not None and not room.closed and bool(room.peers)
        if cached is not None and not held:
            self.counters.cache_hits += 1
            return PanelState(key, cached.state, cached.version, cached.epoch, cached.updated_at)
        room = await self.registry.open(key, create=False)
        await self.settle(room)
        state = await room.call(room.state)
        if cached is not None and cached.epoch == room.epoch and cached.version > state.version:
            self.counters.cache_hits += 1
            return PanelState(key, cached.state, cached.version, cached.epoch, cached.updated_at)
        if self.cache is not None and not held:
            self.counters.cache_misses += 1
            await self.materializer.refresh_cache(room)
        return state

    async def read_at(self, key: PanelKey, version: int) -> tuple[PanelState, int]:
        """The panel as it was at `version` (checkpoint + replay of the log, on a thread), and
        the panel's current version."""
        loaded = await self.log.load(key, until=version)
        if loaded is None:
            raise PanelNotFound(f"Panel '{key}' does not exist.")
        if loaded.last_version != version:
            raise PanelNotFound(
                f"Panel '{key}' has no version {version} in its current epoch "
                f"(versions up to {loaded.info.version}).",
                currentVersion=loaded.info.version,
            )
        view = await asyncio.to_thread(render, loaded)
        when = loaded.tail[-1].occurred_at if loaded.tail else None
        return PanelState(key, view, version, loaded.info.epoch, when), loaded.info.version

    async def history(
        self,
        key: PanelKey,
        *,
        limit: int,
        offset: int = 0,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> tuple[list[LogEntry], int]:
        """A page of the panel's log, newest first, every entry with its patch in log order;
        PanelNotFound for a panel that never existed."""
        entries, total = await self.read_model.history(
            key, limit=limit, offset=offset, since=since, until=until
        )
        await fill_patches(self.log, key, entries)
        if total == 0 and key not in self.registry.rooms and await self.log.load(key) is None:
            raise PanelNotFound(f"Panel '{key}' has no history.")
        return entries, total

    def live_room(self, key: PanelKey) -> Room | None:
        """The panel's room if this replica holds it now."""
        room = self.registry.rooms.get(key)
        return room if room is not None and not room.closed else None

    async def room_state(self, room: Room) -> PanelState | None:
        """A held room's state once settled; None when it was deleted or unloaded meanwhile
        (then its view is in the store)."""
        await self.settle(room)
        if room.deleted or room.closed:
            return None
        return await room.call(room.state)

    async def replayed(self, key: PanelKey) -> PanelState | None:
        """The panel's current state from the log (on a thread); None when deleted."""
        loaded = await self.log.load(key)
        if loaded is None:
            return None
        view = await asyncio.to_thread(render, loaded)
        return PanelState(key, view, loaded.info.version, loaded.info.epoch)

    # -- writes ------------------------------------------------------------------------------

    def writable(self) -> None:
        """Refuse a write up front while the log cannot commit: nothing gets applied."""
        if not self.committer.healthy:
            raise Unavailable(
                "The database is unreachable; nothing was changed. Retry shortly.", retryAfter=2
            )

    async def exists(self, key: PanelKey) -> Room:
        return await self.registry.open(key, create=False)

    async def patch(
        self,
        key: PanelKey,
        ops: list[Operation],
        who: Attribution,
        *,
        version: int | None = None,
        strict: bool = False,
        dry_run: bool = False,
    ) -> WriteResult:
        """Apply a JSON Patch: all operations or none, one version. Against the current state
        (`version` current or None), or merged as a concurrent change (`version` older)."""
        room = await self.registry.open(key, create=False)
        check_panel_paths(ops)
        await self.settle(room)
        current = room.version
        if version is not None and version > current:
            raise VersionConflict(
                f"Version {version} is newer than the panel's ({current}).",
                currentVersion=current,
            )
        if strict and version is not None and version != current:
            raise VersionConflict(
                f"The panel is at version {current}, not {version}.", currentVersion=current
            )
        if version is not None and version != current:
            return await self._merge(room, ops, version, who, dry_run)
        prepare = patch_edit(ops, self.max_patch_write_bytes, self.max_write_values)
        if dry_run:
            edit = await room.call(lambda: prepare(room.view()))
            return WriteResult(
                key,
                current,
                edit.before,
                edit.after,
                edit.inverse,
                changed=False,
                epoch=room.epoch,
                updated_at=room.updated_at,
            )
        edit, change = await room.call(room.edit, prepare, who, ChangeType.UPDATED)
        return await self._result(room, change, edit.before, edit.after, edit.inverse)

    async def _merge(
        self, room: Room, ops: list[Operation], version: int, who: Attribution, dry_run: bool
    ) -> WriteResult:
        loaded = await self.log.load(room.key, until=version)
        if loaded is None:
            raise PanelNotFound(f"Panel '{room.key}' does not exist.")
        update = await asyncio.to_thread(
            stale_update, loaded, ops, self.max_patch_write_bytes, self.max_write_values
        )

        def merge() -> tuple[JSONObject, JSONObject, Change | None]:
            before = room.view()
            check_targets_still_exist(ops, before, version)
            if dry_run:
                return before, preview_merge(room.encode_state(), update), None
            change = room.apply(update, None, who)
            return before, room.view(), change

        before, after, change = await room.call(merge)
        inverse = whole_root_inverse(before, after)
        if dry_run:
            return WriteResult(
                room.key,
                room.version,
                before,
                after,
                inverse,
                merged=True,
                changed=False,
                epoch=room.epoch,
                updated_at=room.updated_at,
            )
        result = await self._result(room, change, before, after, inverse)
        result.merged = True
        return result

    def check_values(self, view: object) -> None:
        """A state a client PUTs may hold at most `max_write_values` values (count_values):
        writing it holds the room's process for about that many steps."""
        limit = self.max_write_values
        if limit is not None and count_values(view, limit) > limit:
            raise TooManyValues(
                f"The state holds more than {limit} values (an object or array counts "
                f"{CONTAINER_COST}); nothing was changed. Write it in parts with PATCH.",
                limit=limit,
            )

    async def replace(
        self,
        key: PanelKey,
        view: JSONObject,
        who: Attribution,
        *,
        version: int | None = None,
        change_type: ChangeType = ChangeType.UPDATED,
        create: bool = True,
    ) -> WriteResult:
        """Make the roots named in `view` (checked by json_edits.check_view) equal its;
        creates the panel when missing (if `create`). `version`: the one the caller expects
        the panel to be at (a conflict otherwise, unless this call created it)."""
        if create:
            room, created = await self.registry.open_or_create(key, who.subject)
        else:
            room, created = await self.registry.open(key, create=False), False
        await self.settle(room)
        if version is not None and version != room.version and not created:
            raise VersionConflict(
                f"The panel is at version {room.version}, not {version}.",
                currentVersion=room.version,
            )
        edit, change = await room.call(room.edit, replace_edit(view), who, change_type)
        result = await self._result(room, change, edit.before, edit.after, edit.inverse)
        result.created = created
        return result

    async def revert(self, key: PanelKey, target: int, who: Attribution) -> WriteResult:
        """Make the view equal the view at `target`: a new, forward change (`reverted`)."""
        state, _ = await self.read_at(key, target)
        return await self.replace(
            key, state.view, who, change_type=ChangeType.REVERTED, create=False
        )

    async def restore(self, key: PanelKey, view: JSONObject, who: Attribution) -> WriteResult:
        """Make a panel equal a snapshot's view; a panel that is gone is created again."""
        return await self.replace(key, view, who, change_type=ChangeType.REVERTED)

    async def delete(self, key: PanelKey, who: Attribution) -> int:
        """Delete the panel (its clients are closed with 4404); its history is kept."""
        room = await self.registry.open(key, create=False)
        change = await room.call(room.delete, who)
        version = await self.pipeline.acknowledged(room, change)
        await self.registry.evict(key)
        if self.cache is not None:
            await self.cache.drop(key)
        return version

    async def _result(
        self,
        room: Room,
        change: Change | None,
        before: JSONObject,
        after: JSONObject,
        inverse: JSONPatch,
    ) -> WriteResult:
        if change is None:  # nothing changed: the current version, once it is on disk
            await self.settle(room)
            return WriteResult(
                room.key,
                room.version,
                before,
                after,
                inverse,
                changed=False,
                epoch=room.epoch,
                updated_at=room.updated_at,
            )
        version = await self.pipeline.acknowledged(room, change)
        return WriteResult(
            room.key,
            version,
            before,
            after,
            inverse,
            epoch=room.epoch,
            updated_at=change.occurred_at,
        )


def render(loaded: LoadedPanel) -> JSONObject:
    """The JSON view of a panel as `loaded` holds it (replays into a fresh doc)."""
    return PanelDoc(rebuild(loaded)).render()
