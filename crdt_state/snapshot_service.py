"""Git snapshots of workspaces as a service: taken on request, before an AI edit and every few
minutes for workspaces that changed; read back; panels restored from them.

Core only: the composition root hands in the SnapshotRepository (adapters/git.py), the
UpdateLog and the room registry. Rooms own their docs, so a live panel's view is read, and a
restore applied, through `room.call`: connected Yjs clients see a restore as one more forward
change. Nothing here ever rewrites the log. See docs/GIT.md, "The snapshot service".
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import orjson

from . import edits
from .document import VIEW_ROOTS, PanelDoc
from .edits import Attribution
from .errors import BadRequest, StateError, Unavailable
from .ports import ChangeType, LoadedPanel, PanelKey, SnapshotRecord, UpdateLog, utcnow
from .registry import RoomRegistry
from .replay import rebuild
from .room import Room
from .snapshots import (
    CommitInfo,
    CommitResult,
    RepositoryCorrupt,
    SnapshotRepository,
    canonical_json,
    check_sha,
    panel_versions,
    snapshot_message,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

SNAPSHOT_TYPES = ("manual", "auto", "pre_ai_edit")
SYSTEM_AUTHOR = "crdt-state"
MAX_DESCRIPTION = 2000  # characters
ROOM_WAIT_SECONDS = 10.0  # a live room that does not answer in time fails the snapshot
READ_CONCURRENCY = 8  # live rooms asked, or panels rebuilt from the log, at a time
RESTORE_CONCURRENCY = 8
RECENT_SNAPSHOTS = 20


# --- values -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PanelState:
    """A panel as a snapshot takes it: its JSON view and the version it is of."""

    panel_id: str
    version: int
    epoch: str
    view: dict[str, Any]


@dataclass(slots=True)
class SnapshotResult:
    workspace_id: str
    snapshot_type: str
    description: str | None
    panel_versions: dict[str, int]
    total_size_bytes: int
    created_at: datetime  # when the panels were read
    created_by: str | None
    snapshot_id: str | None = None  # None: not recorded (an automatic one that changed nothing)
    git_commit_hash: str | None = None  # None: not committed (commitToGit false, no panels)
    created: bool = False  # a new commit was made
    changed_panels: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshotId": self.snapshot_id,
            "workspaceId": self.workspace_id,
            "type": self.snapshot_type,
            "description": self.description,
            "panelCount": len(self.panel_versions),
            "totalSizeBytes": self.total_size_bytes,
            "gitCommitHash": self.git_commit_hash,
            "created": self.created,
            "changedPanels": self.changed_panels,
            "panelVersions": self.panel_versions,
            "createdBy": self.created_by,
            "createdAt": self.created_at.isoformat(),
        }


@dataclass(slots=True)
class CommitState:
    """A workspace as one Git commit holds it."""

    workspace_id: str
    sha: str
    committed_at: datetime | None
    subject: str
    views: dict[str, Any]
    versions: dict[str, int]  # from the commit's Panel-Version trailers

    def to_json(self) -> dict[str, Any]:
        return {
            "workspaceId": self.workspace_id,
            "gitCommit": self.sha,
            "committedAt": self.committed_at.isoformat() if self.committed_at else None,
            "subject": self.subject,
            "panelCount": len(self.views),
            "panels": {
                panel_id: {"state": view, "version": self.versions.get(panel_id)}
                for panel_id, view in self.views.items()
            },
        }


@dataclass(frozen=True, slots=True)
class RestoredPanel:
    version: int  # the panel's version after the restore
    epoch: str
    created: bool  # the panel did not exist (or was deleted) and was created again
    changed: bool  # False: it already equalled the commit's view, nothing was logged

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "epoch": self.epoch,
            "created": self.created,
            "changed": self.changed,
        }


@dataclass(slots=True)
class AutoState:
    """How the automatic snapshots of one workspace went (for status and /ready)."""

    last_attempt_at: datetime | None = None
    last_success_at: datetime | None = None
    last_commit: str | None = None
    last_error: str | None = None
    failures: int = 0  # in a row

    def to_json(self) -> dict[str, Any]:
        return {
            "lastAttemptAt": _iso(self.last_attempt_at),
            "lastSuccessAt": _iso(self.last_success_at),
            "lastCommit": self.last_commit,
            "lastError": self.last_error,
            "failures": self.failures,
        }


class PanelNotInSnapshot(StateError):
    code = "panel_not_in_snapshot"
    status = 404


class RestoreIncomplete(StateError):
    """Some panels were restored, others failed: the details name both."""

    code = "restore_incomplete"


def snapshot_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A state_snapshots row (UpdateLog.list_snapshots) as the API shows it."""
    return {
        "snapshotId": row["snapshot_id"],
        "workspaceId": row["workspace_id"],
        "type": row["snapshot_type"],
        "description": row["description"],
        "panelCount": row["panel_count"],
        "totalSizeBytes": row["total_size_bytes"],
        "gitCommitHash": row["git_commit_hash"],
        "panelVersions": row["panel_versions"],
        "createdBy": row["created_by"],
        "createdAt": _iso(row["created_at"]),
    }


# --- the service --------------------------------------------------------------------------


class SnapshotService:
    """Snapshots of the workspaces this replica serves. The repository belongs to the
    caller (the composition root closes it after `close()`)."""

    def __init__(
        self,
        log_store: UpdateLog,
        registry: RoomRegistry,
        repository: SnapshotRepository,
        *,
        interval_seconds: float = 300.0,
        concurrency: int = 2,
        check_ttl_seconds: float = 10.0,
    ) -> None:
        self.log = log_store
        self.registry = registry
        self.repository = repository
        self.interval_seconds = interval_seconds
        self.concurrency = concurrency
        self.check_ttl_seconds = check_ttl_seconds
        self._dirty: set[str] = set()
        self._seeded = False
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._auto: dict[str, AutoState] = {}
        self._touched: set[str] = set()
        self._checked: tuple[float, dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the automatic snapshots (none when interval_seconds is 0)."""
        if self.interval_seconds > 0 and self._task is None:
            self._task = asyncio.create_task(self._auto_loop(), name="automatic snapshots")

    async def close(self) -> None:
        """Stop the automatic snapshots (a round in progress is cancelled)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def mark_changed(self, workspace_id: str) -> None:
        """Note that a change of the workspace was committed (cheap: one set insertion)."""
        if self.interval_seconds > 0:
            self._dirty.add(workspace_id)

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
            files = await asyncio.to_thread(_encode, panels)
            result = SnapshotResult(
                workspace_id,
                snapshot_type,
                description,
                {p.panel_id: p.version for p in panels},
                sum(len(data) for data in files.values()),
                started,
                subject,
            )
            if commit_to_git:
                self._commit_result(result, await self._commit(result, files))
            if snapshot_type != "auto" or result.created:
                await self._record(result)
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
        author = _author(result.created_by)
        return await self.repository.commit(workspace, files, message, trailers, author)

    @staticmethod
    def _commit_result(result: SnapshotResult, commit: CommitResult | None) -> None:
        if commit is not None:
            result.git_commit_hash, result.created = commit.sha, commit.created
            result.changed_panels = commit.changed_panels

    async def _record(self, result: SnapshotResult) -> None:
        result.snapshot_id = str(uuid.uuid4())
        await self.log.record_snapshot(
            SnapshotRecord(
                workspace_id=result.workspace_id,
                snapshot_id=result.snapshot_id,
                snapshot_type=result.snapshot_type,
                description=result.description,
                panel_count=len(result.panel_versions),
                total_size_bytes=result.total_size_bytes,
                git_commit_hash=result.git_commit_hash,
                panel_versions=result.panel_versions,
                created_by=result.created_by,
                created_at=result.created_at,
            )
        )

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
        for panel_id, version, epoch, view in await self.log.list_panels(workspace_id):
            key = PanelKey(workspace_id, panel_id)
            room = self.registry.rooms.get(key)
            if room is not None and room.deleted:
                continue  # deleted here, the log has not caught up yet
            if room is None or room.closed:
                if view is not None:
                    ready.append(PanelState(panel_id, version, epoch, view))
                    continue
                room = None
            slow.append((key, room))
        jobs = [functools.partial(self._read_panel, key, room) for key, room in slow]
        found = await _bounded(READ_CONCURRENCY, jobs)
        states = ready + [state for state in found if state is not None]
        states.sort(key=lambda state: state.panel_id)
        return states

    async def _read_panel(self, key: PanelKey, room: Room | None) -> PanelState | None:
        if room is None:
            return await self._log_state(key)
        try:
            async with asyncio.timeout(ROOM_WAIT_SECONDS):  # no task per panel, unlike wait_for
                return await self._room_state(room)
        except TimeoutError:
            raise Unavailable(
                f"Panel {key} did not answer within {ROOM_WAIT_SECONDS:.0f} s "
                "(its changes are still being committed); try again.",
                retryAfter=5,
            ) from None

    async def _room_state(self, room: Room) -> PanelState | None:
        await room.settle()
        if room.deleted:
            return None
        if room.closed:  # unloaded meanwhile: its view is in the store now
            return await self._log_state(room.key)
        view, version, _ = await room.call(room.view)
        return PanelState(room.key.panel_id, version, room.epoch, view)

    async def _log_state(self, key: PanelKey) -> PanelState | None:
        loaded = await self.log.load(key)
        if loaded is None:
            return None  # deleted meanwhile
        view = await asyncio.to_thread(_render, loaded)
        return PanelState(key.panel_id, loaded.info.version, loaded.info.epoch, view)

    # --- reading a commit -----------------------------------------------------------------

    async def at_commit(self, workspace_id: str, sha: str) -> CommitState:
        """The workspace as commit `sha` of its own repository holds it."""
        self._touched.add(workspace_id)
        snapshot = await self.repository.read(workspace_id, check_sha(sha))
        assert snapshot.sha is not None  # a sha was asked for: found, or CommitNotFound
        views = await asyncio.to_thread(_parse_files, snapshot.panels)
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
        views = _pick(state, panel_ids)
        source = Attribution(who.triggered_by, f"git:{state.sha}", who.subject)
        jobs = [
            functools.partial(self._try_restore, PanelKey(workspace_id, p), view, source)
            for p, view in views.items()
        ]
        outcomes = await _bounded(RESTORE_CONCURRENCY, jobs)
        done = dict(zip(views, outcomes, strict=True))
        _raise_if_incomplete(state.sha, done)
        return state.sha, {p: r for p, r in done.items() if isinstance(r, RestoredPanel)}

    async def _try_restore(
        self, key: PanelKey, view: dict[str, Any], who: Attribution
    ) -> RestoredPanel | StateError:
        try:
            return await self._restore_panel(key, view, who)
        except StateError as exc:
            return exc
        except Exception as exc:
            log.exception("restoring panel %s failed", key)
            return StateError(f"Restoring panel {key} failed: {type(exc).__name__}.")

    async def _restore_panel(
        self, key: PanelKey, view: dict[str, Any], who: Attribution
    ) -> RestoredPanel:
        room, created = await self.registry.open_or_create(key, who.subject)
        await room.settle()
        result = await room.call(edits.replace, room, view, who, change_type=ChangeType.REVERTED)
        if result.future is None:
            await room.settle()
            return RestoredPanel(room.version, room.epoch, created, changed=False)
        version = await result.future
        if room.cache is not None:  # as REST writes do: other replicas read it at once
            current, _, _ = await room.call(room.view)
            await room.put_cache(current, max(version, room.version))
        return RestoredPanel(version, room.epoch, created, changed=True)

    # --- status and health ----------------------------------------------------------------

    async def status(self, workspace_id: str) -> dict[str, Any]:
        """Head, repository health, push state, automatic snapshots, recent snapshot rows."""
        self._touched.add(workspace_id)
        problem = await self.repository.check(workspace_id)
        head = None
        if problem is None:
            history = await self.repository.history(workspace_id, 1)
            head = _head_json(history[0]) if history else None
        rows = await self.log.list_snapshots(workspace_id, RECENT_SNAPSHOTS)
        return {
            "workspaceId": workspace_id,
            "head": head,
            "repository": {"ok": problem is None, "problem": problem},
            "push": await self.repository.push_status(workspace_id),
            "autoSnapshot": self._auto_json(workspace_id),
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
        failing = {ws: s.last_error for ws, s in self._auto.items() if s.last_error}
        report = {
            "status": "degraded" if corrupt or failing else "ok",
            "repositories": len(workspaces),
            "corrupt": corrupt,
            "autoSnapshotFailures": failing,
        }
        self._checked = (now, report)
        return report

    def _auto_json(self, workspace_id: str) -> dict[str, Any]:
        state = self._auto.get(workspace_id) or AutoState()
        return {
            "enabled": self.interval_seconds > 0,
            "intervalSeconds": self.interval_seconds,
            "pending": workspace_id in self._dirty,
            **state.to_json(),
        }

    # --- automatic snapshots --------------------------------------------------------------

    async def _auto_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            try:
                await self.run_auto_round()
            except Exception:  # never let the loop die; the next round tries again
                log.exception("automatic snapshots: the round failed")

    async def run_auto_round(self) -> dict[str, str | None]:
        """Snapshot every workspace changed since its last snapshot; {workspace: sha or None
        when it failed}. Failed ones are tried again next round."""
        await self._seed()
        dirty, self._dirty = sorted(self._dirty), set()
        jobs = [functools.partial(self._auto_one, ws) for ws in dirty]
        outcomes = await _bounded(self.concurrency, jobs)
        return dict(zip(dirty, outcomes, strict=True))

    async def _seed(self) -> None:
        # Changes made before this process started (or by other replicas) are only in the
        # store: ask it once which workspaces changed after their last Git snapshot.
        if self._seeded:
            return
        try:
            self._dirty.update(await self.log.changed_workspaces())
            self._seeded = True
        except Exception as exc:
            log.warning("automatic snapshots: cannot list changed workspaces yet (%r)", exc)

    async def _auto_one(self, workspace_id: str) -> str | None:
        state = self._auto.setdefault(workspace_id, AutoState())
        state.last_attempt_at = utcnow()
        try:
            result = await self.create(workspace_id, snapshot_type="auto")
        except Exception as exc:
            self._auto_failed(workspace_id, state, exc)
            return None
        state.failures, state.last_error, state.last_success_at = 0, None, utcnow()
        state.last_commit = result.git_commit_hash or state.last_commit
        return result.git_commit_hash

    def _auto_failed(self, workspace_id: str, state: AutoState, exc: Exception) -> None:
        state.failures += 1
        state.last_error = exc.message if isinstance(exc, StateError) else repr(exc)
        if isinstance(exc, BadRequest):  # e.g. a name Git cannot store: retrying cannot help
            log.error("automatic snapshot of %r impossible: %s", workspace_id, state.last_error)
            return
        self._dirty.add(workspace_id)
        log.warning(
            "automatic snapshot of %r failed (%s); retrying in %.0f s",
            workspace_id,
            state.last_error,
            self.interval_seconds,
        )


# --- helpers ------------------------------------------------------------------------------


def check_request(snapshot_type: str, description: str | None) -> None:
    if snapshot_type not in SNAPSHOT_TYPES:
        raise BadRequest(
            f"'type' must be one of {', '.join(SNAPSHOT_TYPES)}; got {snapshot_type!r}.",
            field="type",
        )
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise BadRequest(
            f"'description' is at most {MAX_DESCRIPTION} characters.", field="description"
        )


async def _bounded(limit: int, jobs: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """The jobs' results in order, run by `limit` worker tasks. Not one task per job: a
    thousand tasks made at once hold the event loop up for tens of milliseconds."""
    results: dict[int, T] = {}
    queue = iter(enumerate(jobs))

    async def worker() -> None:
        for index, job in queue:
            results[index] = await job()

    workers = [asyncio.create_task(worker()) for _ in range(min(limit, len(jobs)))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for task in workers:
            task.cancel()
        raise
    return [results[index] for index in range(len(jobs))]


def _encode(panels: list[PanelState]) -> dict[str, bytes]:
    return {panel.panel_id: canonical_json(panel.view) for panel in panels}


def _render(loaded: LoadedPanel) -> dict[str, Any]:
    return PanelDoc(rebuild(loaded)).render()


def _parse_files(files: Mapping[str, bytes]) -> dict[str, Any]:
    return {panel_id: _file_view(panel_id, data) for panel_id, data in files.items()}


def _file_view(panel_id: str, data: bytes) -> dict[str, Any]:
    """A panel file's view with both roots; RepositoryCorrupt for a file we never wrote."""
    try:
        view = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RepositoryCorrupt(f"The file of panel {panel_id!r} is not JSON: {exc}.") from None
    if not isinstance(view, dict) or any(root not in VIEW_ROOTS for root in view):
        raise RepositoryCorrupt(f"The file of panel {panel_id!r} is not a panel view.")
    return {root: view.get(root, {}) for root in VIEW_ROOTS}


def _pick(state: CommitState, panel_ids: list[str] | None) -> dict[str, Any]:
    wanted = list(state.views) if panel_ids is None else list(dict.fromkeys(panel_ids))
    missing = [p for p in wanted if p not in state.views]
    if missing:
        raise PanelNotInSnapshot(
            f"Commit {state.sha} holds no panel {', '.join(map(repr, missing[:10]))}.",
            missing=missing,
        )
    views = {p: state.views[p] for p in wanted}
    for view in views.values():
        edits.check_view(view)  # all checked before anything is changed
    return views


def _raise_if_incomplete(sha: str, done: Mapping[str, RestoredPanel | StateError]) -> None:
    failed = {p: e for p, e in done.items() if isinstance(e, StateError)}
    if not failed:
        return
    error = RestoreIncomplete(
        f"{len(failed)} of {len(done)} panels could not be restored from {sha}; "
        "the others were. Retry for the failed ones.",
        gitCommit=sha,
        restored={p: r.to_json() for p, r in done.items() if isinstance(r, RestoredPanel)},
        failed={p: {"error": e.code, "message": e.message} for p, e in failed.items()},
    )
    error.status = next(iter(failed.values())).status
    raise error


def _author(subject: str | None) -> str:
    """A plain name Git accepts as author (the adapter writes it as `name <>`)."""
    cleaned = "".join(c for c in (subject or "") if c not in "<>\n\r\0").strip()
    return cleaned or SYSTEM_AUTHOR


def _head_json(info: CommitInfo) -> dict[str, Any]:
    return {
        "gitCommitHash": info.sha,
        "committedAt": info.committed_at.isoformat(),
        "subject": info.subject,
        "author": info.author,
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
