"""The records of Git snapshots (results, commit states, restored panels, automatic-snapshot
status) as the API shows them, and the small rules the snapshot service applies."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import orjson

from .document import VIEW_ROOTS
from .errors import BadRequest, StateError
from .json_edits import check_view
from .model import PanelState, SnapshotRecord
from .snapshot_repository import CommitInfo, RepositoryCorrupt, canonical_json

T = TypeVar("T")

SNAPSHOT_TYPES = ("manual", "auto", "pre_ai_edit")
SYSTEM_AUTHOR = "crdt-state"
MAX_DESCRIPTION = 2000  # characters


# --- values -------------------------------------------------------------------------------


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
            "panels": {
                panel_id: {**view, "version": self.versions.get(panel_id)}
                for panel_id, view in self.views.items()
            },
            "totalPanels": len(self.views),
            "panelCount": len(self.views),
            "snapshotAt": self.committed_at.isoformat() if self.committed_at else None,
            "gitCommit": self.sha,
            "committedAt": self.committed_at.isoformat() if self.committed_at else None,
            "subject": self.subject,
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


def snapshot_json(record: SnapshotRecord) -> dict[str, Any]:
    """A state_snapshots row as the API shows it."""
    return {
        "snapshotId": record.snapshot_id,
        "workspaceId": record.workspace_id,
        "type": record.snapshot_type,
        "description": record.description,
        "panelCount": record.panel_count,
        "totalSizeBytes": record.total_size_bytes,
        "gitCommitHash": record.git_commit_hash,
        "panelVersions": record.panel_versions,
        "createdBy": record.created_by,
        "createdAt": _iso(record.created_at),
    }


def snapshot_record(result: SnapshotResult) -> SnapshotRecord:
    assert result.snapshot_id is not None
    return SnapshotRecord(
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


async def bounded(limit: int, jobs: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
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


def encode_panels(panels: list[PanelState]) -> dict[str, bytes]:
    return {panel.key.panel_id: canonical_json(panel.view) for panel in panels}


def parse_files(files: Mapping[str, bytes]) -> dict[str, Any]:
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


def pick(state: CommitState, panel_ids: list[str] | None) -> dict[str, Any]:
    wanted = list(state.views) if panel_ids is None else list(dict.fromkeys(panel_ids))
    missing = [p for p in wanted if p not in state.views]
    if missing:
        raise PanelNotInSnapshot(
            f"Commit {state.sha} holds no panel {', '.join(map(repr, missing[:10]))}.",
            missing=missing,
        )
    views = {p: state.views[p] for p in wanted}
    for view in views.values():
        check_view(view)  # all checked before anything is changed
    return views


def raise_if_incomplete(sha: str, done: Mapping[str, RestoredPanel | StateError]) -> None:
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


def author_name(subject: str | None) -> str:
    """A plain name Git accepts as author (the adapter writes it as `name <>`)."""
    cleaned = "".join(c for c in (subject or "") if c not in "<>\n\r\0").strip()
    return cleaned or SYSTEM_AUTHOR


def head_json(info: CommitInfo) -> dict[str, Any]:
    return {
        "gitCommitHash": info.sha,
        "committedAt": info.committed_at.isoformat(),
        "subject": info.subject,
        "author": info.author,
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
