"""Automatic snapshots: every `interval_seconds`, each workspace that changed since its last
Git snapshot is snapshotted again. Which workspaces changed is told by the post-commit path
(`mark_changed`), seeded once from the store for changes made before this process started."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .background import cancel
from .errors import BadRequest, StateError
from .model import utcnow
from .ports import SnapshotCatalogue
from .snapshot_records import AutoState, SnapshotResult, bounded

log = logging.getLogger(__name__)

Create = Callable[[str], Awaitable[SnapshotResult]]


class AutoSnapshots:
    def __init__(
        self,
        catalogue: SnapshotCatalogue,
        create: Create,
        *,
        interval_seconds: float,
        concurrency: int = 2,
    ) -> None:
        self.catalogue = catalogue
        self.create = create
        self.interval_seconds = interval_seconds
        self.concurrency = concurrency
        self.states: dict[str, AutoState] = {}
        self._dirty: set[str] = set()
        self._seeded = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the rounds (none when interval_seconds is 0)."""
        if self.interval_seconds > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="automatic snapshots")

    async def close(self) -> None:
        """Stop the rounds (a round in progress is cancelled)."""
        await cancel(self._task)

    def mark_changed(self, workspace_id: str) -> None:
        """Note that a change of the workspace was committed (cheap: one set insertion)."""
        if self.interval_seconds > 0:
            self._dirty.add(workspace_id)

    def status(self, workspace_id: str) -> dict[str, Any]:
        state = self.states.get(workspace_id) or AutoState()
        return {
            "enabled": self.interval_seconds > 0,
            "intervalSeconds": self.interval_seconds,
            "pending": workspace_id in self._dirty,
            **state.to_json(),
        }

    def failing(self) -> dict[str, str]:
        return {ws: s.last_error for ws, s in self.states.items() if s.last_error}

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            try:
                await self.run_round()
            except Exception:  # never let the loop die; the next round tries again
                log.exception("automatic snapshots: the round failed")

    async def run_round(self) -> dict[str, str | None]:
        """Snapshot every workspace changed since its last snapshot; {workspace: sha or None
        when it failed}. Failed ones are tried again next round."""
        await self._seed()
        dirty, self._dirty = sorted(self._dirty), set()
        jobs = [functools.partial(self._one, ws) for ws in dirty]
        outcomes = await bounded(self.concurrency, jobs)
        return dict(zip(dirty, outcomes, strict=True))

    async def _seed(self) -> None:
        # Changes made before this process started (or by other replicas) are only in the
        # store: ask it once which workspaces changed after their last Git snapshot.
        if self._seeded:
            return
        try:
            self._dirty.update(await self.catalogue.changed_workspaces())
            self._seeded = True
        except Exception as exc:
            log.warning("automatic snapshots: cannot list changed workspaces yet (%r)", exc)

    async def _one(self, workspace_id: str) -> str | None:
        state = self.states.setdefault(workspace_id, AutoState())
        state.last_attempt_at = utcnow()
        try:
            result = await self.create(workspace_id)
        except Exception as exc:
            self._failed(workspace_id, state, exc)
            return None
        state.failures, state.last_error, state.last_success_at = 0, None, utcnow()
        state.last_commit = result.git_commit_hash or state.last_commit
        return result.git_commit_hash

    def _failed(self, workspace_id: str, state: AutoState, exc: Exception) -> None:
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
