"""Git snapshots of workspaces as a service: taken on request, before an AI edit and every few
minutes for workspaces that changed (auto_snapshots.py); read back; panels restored from them.

Core only: the composition root hands in the SnapshotRepository (adapters/git.py) and the
snapshot catalogue. Live panels are read, and restores applied, through the panel service, so
connected Yjs clients see a restore as one more forward change. Nothing here ever rewrites
the log. See docs/GIT.md, "The snapshot service".
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
import weakref
from typing import Any

from .auto_snapshots import AutoSnapshots
from .errors import StateError, Unavailable
from .model import Attribution, JSONObject, PanelKey, PanelState, utcnow
from .panels import PanelService
from .ports import ReadModel, SnapshotCatalogue, SnapshotRepository
from .room import Room
from .snapshot_records import (
    CommitState,
    RestoredPanel,
    SnapshotResult,
    author_name,
    bounded,
    check_request,
    encode_panels,
    head_json,
    parse_files,
    pick,
    raise_if_incomplete,
    snapshot_json,
    snapshot_record,
)
from .snapshot_repository import (
    CommitResult,
    RepositoryCorrupt,
    check_sha,
    panel_versions,
    snapshot_message,
)

log = logging.getLogger(__name__)

ROOM_WAIT_SECONDS = 10.0  # a live room that does not answer in time fails the snapshot
READ_CONCURRENCY = 8  # live rooms asked, or panels rebuilt from the log, at a time
RESTORE_CONCURRENCY = 8
RECENT_SNAPSHOTS = 20


class SnapshotService:
    """Snapshots of the workspaces this replica serves. The repository belongs to the
    caller (the composition root closes it after `close()`)."""

    def __init__(
        self,
        panels: PanelService,
        read_model: ReadModel,
        catalogue: SnapshotCatalogue,
        repository: SnapshotRepository,
        *,
        interval_seconds: float = 300.0,
        concurrency: int = 2,
        check_ttl_seconds: float = 10.0,
    ) -> None:
        self.panels = panels
        self.read_model = read_model
        self.catalogue = catalogue
        self.repository = repository
        self.check_ttl_seconds = check_ttl_seconds
        self.auto = AutoSnapshots(
            catalogue,
            functools.partial(self.create, snapshot_type="auto"),
            interval_seconds=interval_seconds,
            concurrency=concurrency,
        )
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._touched: set[str] = set()
        self._checked: tuple[float, dict[str, Any]] | None = None

    def start(self) -> None:
        self.auto.start()

    async def close(self) -> None:
        await self.auto.close()

    def mark_changed(self, workspace_id: str) -> None:
        self.auto.mark_changed(workspace_id)

    async def run_auto_round(self) -> dict[str, str | None]:
        return await self.auto.run_round()

    # --- taking snapshots -----------------------------------------------------------------

    async def create(
        self,
        workspace_id: str,
        *,
        snapshot_type: str = "manual",
        description: str | None = None,
        commit_to_git: bool = True,
        subject: str | None = None,
    ) -> SnapshotResult:
        """Snapshot every live panel of the workspace, commit it (unless unchanged) and keep
        a state_snapshots row (an automatic snapshot only when it made a commit)."""
        check_request(snapshot_type, description)
        self._touched.add(workspace_id)
        async with self._lock(workspace_id):  # read and commit in order: heads never go back
            started = utcnow()
            panels = await self.collect(workspace_id)
            files = await asyncio.to_thread(encode_panels, panels)
            result = SnapshotResult(
                workspace_id,
                snapshot_type,
                description,
                {p.key.panel_id: p.version for p in panels},
                sum(len(data) for data in files.values()),
                started,
                subject,
            )
            if commit_to_git:
                commit = await self._commit(result, files)
                if commit is not None:
                    result.git_commit_hash, result.created = commit.sha, commit.created
                    result.changed_panels = commit.changed_panels
            if snapshot_type != "auto" or result.created:
                result.snapshot_id = str(uuid.uuid4())
                await self.catalogue.record_snapshot(snapshot_record(result))
            return result

    async def snapshot_before_edit(self, workspace_id: str, subject: str | None) -> SnapshotResult:
        """A `pre_ai_edit` snapshot, for a PATCH with "snapshotBefore": true (call it before
        applying; raises like create() does, e.g. RepositoryCorrupt or Unavailable)."""
        by = f" by {subject}" if subject else ""
        return await self.create(
            workspace_id,
            snapshot_type="pre_ai_edit",
            description=f"Before an AI edit{by}.",
            subject=subject,
        )

    async def _commit(self, result: SnapshotResult, files: dict[str, bytes]) -> CommitResult | None:
        workspace = result.workspace_id
        # Never build on a damaged repository: a commit would carry the damage forward.
        problem = await self.repository.check(workspace)
        if problem is not None:
            raise RepositoryCorrupt(f"The snapshot repository of {workspace!r}: {problem}")
        head = await self.repository.history(workspace, 1)
        if not files and not head:
            return None  # nothing to keep: no empty first commit
        before = head[0].panel_versions if head else {}
        now = result.panel_versions
        changed = [p for p in sorted(now.keys() | before.keys()) if now.get(p) != before.get(p)]
        message, trailers = snapshot_message(result.snapshot_type, result.description, now, changed)
        author = author_name(result.created_by)
        return await self.repository.commit(workspace, files, message, trailers, author)

    def _lock(self, workspace_id: str) -> asyncio.Lock:
        lock = self._locks.get(workspace_id)
        if lock is None:
            lock = self._locks[workspace_id] = asyncio.Lock()
        return lock

    # --- reading the live state -----------------------------------------------------------

    async def collect(self, workspace_id: str) -> list[PanelState]:
        """Every live panel of the workspace, by id: the view of its room when the room is
        live in this replica (settled first), else the stored view when it is current, else
        the log replayed."""
        ready: list[PanelState] = []
        slow: list[tuple[PanelKey, Room | None]] = []
        for listing in await self.read_model.list_panels(workspace_id):
            key = PanelKey(workspace_id, listing.panel_id)
            room = self.panels.live_room(key)
            if room is not None and room.deleted:
                continue  # deleted here, the log has not caught up yet
            if room is None and listing.view is not None:
                ready.append(PanelState(key, listing.view, listing.version, listing.epoch))
                continue
            slow.append((key, room))
        jobs = [functools.partial(self._read_panel, key, room) for key, room in slow]
        found = await bounded(READ_CONCURRENCY, jobs)
        states = ready + [state for state in found if state is not None]
        states.sort(key=lambda state: state.key.panel_id)
        return states

    async def _read_panel(self, key: PanelKey, room: Room | None) -> PanelState | None:
        if room is None:
            return await self.panels.replayed(key)
        try:
            async with asyncio.timeout(ROOM_WAIT_SECONDS):  # no task per panel, unlike wait_for
                state = await self.panels.room_state(room)
        except TimeoutError:
            raise Unavailable(
                f"Panel {key} did not answer within {ROOM_WAIT_SECONDS:.0f} s "
                "(its changes are still being committed); try again.",
                retryAfter=5,
            ) from None
        if state is None and not room.deleted:  # unloaded meanwhile: its view is stored now
            return await self.panels.replayed(key)
        return state

    # --- reading a commit -----------------------------------------------------------------

    async def at_commit(self, workspace_id: str, sha: str) -> CommitState:
        """The workspace as commit `sha` of its own repository holds it."""
        self._touched.add(workspace_id)
        snapshot = await self.repository.read(workspace_id, check_sha(sha))
        assert snapshot.sha is not None  # a sha was asked for: found, or CommitNotFound
        views = await asyncio.to_thread(parse_files, snapshot.panels)
        message = snapshot.message or ""
        return CommitState(
            workspace_id,
            snapshot.sha,
            snapshot.committed_at,
            message.split("\n", 1)[0],
            views,
            panel_versions(message),
        )

    # --- restoring ------------------------------------------------------------------------

    async def restore(
        self, workspace_id: str, sha: str, panel_ids: list[str] | None, who: Attribution
    ) -> tuple[str, dict[str, RestoredPanel]]:
        """Make panels equal to their view in commit `sha` (all of the commit's panels by
        default) through forward changes (change type `reverted`, trigger source
        `git:<sha>`). A panel of the commit that is gone is created again; panels not in the
        commit are left alone. Returns the full sha and the new version of each panel."""
        state = await self.at_commit(workspace_id, sha)
        views = pick(state, panel_ids)
        source = Attribution(who.triggered_by, f"git:{state.sha}", who.subject)
        jobs = [
            functools.partial(self._try_restore, PanelKey(workspace_id, p), view, source)
            for p, view in views.items()
        ]
        outcomes = await bounded(RESTORE_CONCURRENCY, jobs)
        done = dict(zip(views, outcomes, strict=True))
        raise_if_incomplete(state.sha, done)
        return state.sha, {p: r for p, r in done.items() if isinstance(r, RestoredPanel)}

    async def _try_restore(
        self, key: PanelKey, view: JSONObject, who: Attribution
    ) -> RestoredPanel | StateError:
        try:
            result = await self.panels.restore(key, view, who)
        except StateError as exc:
            return exc
        except Exception as exc:
            log.exception("restoring panel %s failed", key)
            return StateError(f"Restoring panel {key} failed: {type(exc).__name__}.")
        return RestoredPanel(result.version, result.epoch, result.created, result.changed)

    # --- status and health ----------------------------------------------------------------

    async def status(self, workspace_id: str) -> dict[str, Any]:
        """Head, repository health, push state, automatic snapshots, recent snapshot rows."""
        self._touched.add(workspace_id)
        problem = await self.repository.check(workspace_id)
        head = None
        if problem is None:
            history = await self.repository.history(workspace_id, 1)
            head = head_json(history[0]) if history else None
        rows = await self.catalogue.list_snapshots(workspace_id, RECENT_SNAPSHOTS)
        return {
            "workspaceId": workspace_id,
            "head": head,
            "repository": {"ok": problem is None, "problem": problem},
            "push": await self.repository.push_status(workspace_id),
            "autoSnapshot": self.auto.status(workspace_id),
            "snapshots": [snapshot_json(row) for row in rows],
        }

    async def check(self) -> dict[str, Any]:
        """For /ready: damaged repositories among the workspaces this service touched, and
        workspaces whose automatic snapshot keeps failing. Never raises; "degraded" must not
        make the replica unready (live editing does not depend on Git)."""
        now = time.monotonic()
        if self._checked is not None and now - self._checked[0] < self.check_ttl_seconds:
            return self._checked[1]
        workspaces = sorted(self._touched)
        problems = await asyncio.gather(*(self.repository.check(ws) for ws in workspaces))
        corrupt = {ws: p for ws, p in zip(workspaces, problems, strict=True) if p}
        failing = self.auto.failing()
        report = {
            "status": "degraded" if corrupt or failing else "ok",
            "repositories": len(workspaces),
            "corrupt": corrupt,
            "autoSnapshotFailures": failing,
        }
        self._checked = (now, report)
        return report
