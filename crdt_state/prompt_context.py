"""The AI context of a workspace (docs/AI-CONTEXT.md): its panels' state rendered for an
LLM prompt within a token budget, with what changed, the version of every panel it shows,
and a cache per set of panel versions (the design document's "AI context
pre-computation"): a repeated request for unchanged panels renders nothing.

    prepared = await prepare(panels, workspace, options)   # versions only: cheap
    answer, how = await cache.obtain(prepared.tag, lambda: produce(panels, cache, prepared))

The face (faces/ai_context.py) parses and authorizes; this reads and renders.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import Unavailable
from .model import JSONObject, PanelKey, PanelListing, PanelState
from .panels import PanelService
from .prompt_budget import ESTIMATOR
from .prompt_changes import ChangesSince, Listed, change_meta, format_versions, read_changes
from .prompt_document import STYLES, Rendered, render_context
from .room import Room
from .snapshot_records import bounded

FORMATS = ("markdown", "json")
DEFAULT_MAX_TOKENS = 8_000
MIN_MAX_TOKENS = 50
MAX_MAX_TOKENS = 1_000_000
READ_CONCURRENCY = 8
ROOM_WAIT_SECONDS = 10.0
CACHE_ENTRIES = 256
CACHE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ContextOptions:
    format: str = "markdown"
    panel_ids: tuple[str, ...] | None = None  # the panels chosen, in this order; None: all
    max_tokens: int = DEFAULT_MAX_TOKENS
    since: ChangesSince | None = None  # None: no changes section

    def key(self) -> tuple[Any, ...]:
        return (self.format, self.max_tokens, self.since.key() if self.since else None)


@dataclass(frozen=True, slots=True)
class Slot:
    """A panel to show, as listed: its version now, and where its view is to be read."""

    key: PanelKey
    version: int
    epoch: str
    view: JSONObject | None  # the stored view, when it is of `version` and no room holds it
    room: Room | None


@dataclass(frozen=True, slots=True)
class Prepared:
    workspace: str
    options: ContextOptions
    slots: list[Slot]
    missing: list[str]
    tag: str  # the ETag of the answer these versions and options make


@dataclass(frozen=True, slots=True)
class ContextAnswer:
    body: bytes  # the JSON answer
    tag: str
    versions: str  # `p1=3,p2=7` (prompt_changes.format_versions)


def context_tag(
    workspace: str, panels: list[tuple[str, str, int]], missing: list[str], options: ContextOptions
) -> str:
    """The ETag of a context: a digest of the workspace, the (panel, epoch, version) of every
    panel in it, in order, the ids not found and the options."""
    raw = orjson.dumps([workspace, panels, missing, options.key()])
    return '"ctx-' + hashlib.sha256(raw).hexdigest()[:32] + '"'


async def prepare(panels: PanelService, workspace: str, options: ContextOptions) -> Prepared:
    """The panels the context shows and the version of each (rooms this replica holds are
    settled first: their version covers all they hold); no view is read."""
    listed = {item.panel_id: item for item in await panels.read_model.list_panels(workspace)}
    ids = list(options.panel_ids) if options.panel_ids is not None else sorted(listed)
    slots: list[Slot] = []
    missing: list[str] = []
    for panel_id in ids:
        key = PanelKey(workspace, panel_id)
        listing = listed.get(panel_id)
        room = panels.live_room(key)
        if room is not None:
            await panels.settle(room)
            if room.deleted:
                missing.append(panel_id)  # deleted here, the store has not caught up yet
                continue
            if not room.closed and not _behind(room, listing):
                slots.append(Slot(key, room.version, room.epoch, None, room))
                continue
        if listing is None:
            missing.append(panel_id)
        else:
            slots.append(Slot(key, listing.version, listing.epoch, listing.view, None))
    triples = [(s.key.panel_id, s.epoch, s.version) for s in slots]
    return Prepared(
        workspace, options, slots, missing, context_tag(workspace, triples, missing, options)
    )


def _behind(room: Room, listing: PanelListing | None) -> bool:
    """Another replica committed a change of the panel that this room has not applied yet:
    the store is newer."""
    if listing is None or listing.epoch != room.epoch:
        return False
    return listing.version > room.version


async def produce(panels: PanelService, cache: ContextCache, prepared: Prepared) -> ContextAnswer:
    """Read the views and changes, render (on a thread), keep the answer in `cache` under
    the tag of the versions actually read."""
    started = time.perf_counter()
    states, gone = await _read_states(panels, prepared.slots)
    options = prepared.options
    listed = await read_changes(panels, states, options.since) if options.since else None
    missing = prepared.missing + gone
    rendered = await asyncio.to_thread(
        render_context,
        prepared.workspace,
        states,
        missing,
        listed,
        STYLES[options.format],
        options.max_tokens,
    )
    triples = [(s.key.panel_id, s.epoch, s.version) for s in states]
    tag = context_tag(prepared.workspace, triples, missing, options)
    versions = format_versions([(s.key.panel_id, s.version) for s in states])
    body = envelope(prepared.workspace, options, rendered, missing, listed, versions)
    answer = ContextAnswer(orjson.dumps(body), tag, versions)
    cache.counters.renders += 1
    cache.counters.render_seconds += time.perf_counter() - started
    cache.put(tag, answer)
    return answer


def envelope(
    workspace: str,
    options: ContextOptions,
    rendered: Rendered,
    missing: list[str],
    listed: Listed | None,
    versions: str,
) -> dict[str, Any]:
    """The answer: the text in `context`, and for the agent (not counted in the budget) the
    version of every panel, how each is shown, what was cut and the changes."""
    panels = []
    cut: list[dict[str, Any]] = []
    for shown in rendered.panels:
        state = shown.state
        ident = {"panelId": state.key.panel_id, "version": state.version}
        if shown.level is None:
            how = "omitted"
            cut.append({**ident, "cut": "omitted"})
        elif shown.cuts:
            how = "shortened"
            cut.append({**ident, "cut": how, "level": shown.level, **shown.cuts.to_json()})
        else:
            how = "full"
        panels.append({**ident, "epoch": state.epoch, "shown": how})
    body: dict[str, Any] = {
        "workspaceId": workspace,
        "format": options.format,
        "maxTokens": options.max_tokens,
        "tokenEstimate": rendered.tokens,
        "tokenEstimator": ESTIMATOR,
        "truncated": rendered.truncated,
        "versions": versions,
        "panels": panels,
        "missing": missing,
        "cut": cut,
    }
    if listed is not None:
        changes = [
            change_meta(panel_id, entry, index < rendered.changes_shown)
            for index, (panel_id, entry) in enumerate(listed.changes)
        ]
        not_shown = len(changes) - rendered.changes_shown
        if not_shown:
            cut.append({"cut": "changes", "notShown": not_shown})
        body["changes"] = changes
        body["olderChangesNotListed"] = listed.more
    body["context"] = rendered.text
    return body


async def _read_states(
    panels: PanelService, slots: list[Slot]
) -> tuple[list[PanelState], list[str]]:
    """The slots' states, in order, and the ids of panels deleted meanwhile."""

    async def read(slot: Slot) -> PanelState | None:
        if slot.room is not None:
            try:
                async with asyncio.timeout(ROOM_WAIT_SECONDS):
                    state = await panels.room_state(slot.room)
            except TimeoutError:
                raise Unavailable(
                    f"Panel {slot.key} did not answer within {ROOM_WAIT_SECONDS:.0f} s; try again.",
                    retryAfter=5,
                ) from None
            if state is not None or slot.room.deleted:
                return state
        elif slot.view is not None:
            return PanelState(slot.key, slot.view, slot.version, slot.epoch)
        return await panels.replayed(slot.key)

    found = await bounded(READ_CONCURRENCY, [functools.partial(read, slot) for slot in slots])
    states = [state for state in found if state is not None]
    gone = [s.key.panel_id for s, state in zip(slots, found, strict=True) if state is None]
    return states, gone


# --- the cache ----------------------------------------------------------------------------


@dataclass(slots=True)
class ContextCounters:
    renders: int = 0  # answers rendered (each a cache miss)
    hits: int = 0  # answers served from the cache
    joined: int = 0  # requests that waited for the same answer being rendered
    not_modified: int = 0  # 304s: If-None-Match held the current ETag
    evictions: int = 0
    render_seconds: float = 0.0


@dataclass(slots=True)
class ContextCache:
    """Rendered answers by ETag (workspace, panel versions, options), least recently used
    first out, within `max_entries` and `max_bytes`; one rendering per tag at a time."""

    max_entries: int = CACHE_ENTRIES
    max_bytes: int = CACHE_BYTES
    counters: ContextCounters = field(default_factory=ContextCounters)
    _entries: OrderedDict[str, ContextAnswer] = field(default_factory=OrderedDict)
    _bytes: int = 0
    _running: dict[str, asyncio.Future[ContextAnswer]] = field(default_factory=dict)

    def get(self, tag: str) -> ContextAnswer | None:
        answer = self._entries.get(tag)
        if answer is not None:
            self._entries.move_to_end(tag)
        return answer

    def put(self, tag: str, answer: ContextAnswer) -> None:
        size = len(answer.body)
        if size > self.max_bytes // 4 or self.max_entries <= 0:
            return
        old = self._entries.pop(tag, None)
        if old is not None:
            self._bytes -= len(old.body)
        self._entries[tag] = answer
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= len(dropped.body)
            self.counters.evictions += 1

    async def obtain(
        self, tag: str, produce: Callable[[], Awaitable[ContextAnswer]]
    ) -> tuple[ContextAnswer, str]:
        """The answer for `tag` and how it came: "hit" (cached), "joined" (rendered for a
        request that came first) or "rendered"."""
        cached = self.get(tag)
        if cached is not None:
            self.counters.hits += 1
            return cached, "hit"
        running = self._running.get(tag)
        if running is not None:
            self.counters.joined += 1
            return await asyncio.shield(running), "joined"
        task = asyncio.ensure_future(produce())
        self._running[tag] = task
        task.add_done_callback(lambda done: self._finished(tag, done))
        return await asyncio.shield(task), "rendered"

    def _finished(self, tag: str, task: asyncio.Future[ContextAnswer]) -> None:
        if self._running.get(tag) is task:
            del self._running[tag]
        if not task.cancelled():
            task.exception()  # retrieved: a failure reaches its waiters, never the log twice

    def stats(self) -> dict[str, Any]:
        c = self.counters
        return {
            "contextRenders": c.renders,
            "contextCacheHits": c.hits,
            "contextJoined": c.joined,
            "contextNotModified": c.not_modified,
            "contextEvictions": c.evictions,
            "contextRenderSeconds": round(c.render_seconds, 6),
            "entries": len(self._entries),
            "bytes": self._bytes,
            "maxEntries": self.max_entries,
            "maxBytes": self.max_bytes,
        }
