"""Retention and compaction (docs/RETENTION.md): the policy, and the orchestration that folds a
panel's binary log into a checkpoint, removes history past the retention window and prunes the
checkpoints nothing can use any more. `crdt-state compact` and the server's schedule both run
`Compactor.run`; the store does the work through its LogMaintenance port.

Per panel, each step safe while replicas append, rooms load and clients join:

1. plan (`LogMaintenance.inspect`): the fold point F, the newest checkpoint of the current
   epoch whose version is older than the time-travel horizon, and the drop point H <= F, the
   newest version older than the history window. Nothing recent is ever touched (GRACE).
2. patches: every row up to F without a stored patch (written while two replicas wrote the
   panel) gets the one history computed for it in log order, now stored: once its update is
   gone it could not be computed again.
3. fold and drop, one range of versions per transaction: the first marks F and H on the panel
   (from then on a load before F answers 410 `version_compacted`, and history starts after H),
   then rows <= H are removed and the rows <= F left lose their Yjs update (set empty). A load
   at F or later starts from a checkpoint at F or later: it never needs a folded update.
4. prune: checkpoints before F, of earlier epochs, of deleted panels.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from .background import cancel
from .errors import StateError
from .log_order import fill_patches
from .model import ChangeType, JSONPatch, PanelKey, utcnow
from .ports import LogMaintenance, UpdateLog
from .retention import CompactionPlan, RetentionPolicy, StoredBytes

log = logging.getLogger(__name__)

# Versions per fold/drop transaction: short enough that group commits wait a few ms for one.
CHUNK_VERSIONS = 5_000
# Rows read per page while looking for rows without a patch.
PATCH_PAGE = 1_000


# -- the outcome -------------------------------------------------------------------------------


@dataclass(slots=True)
class PanelOutcome:
    key: PanelKey
    plan: CompactionPlan | None
    patched: int = 0  # patches computed in log order and stored
    folded: int = 0  # rows whose update was folded
    dropped: int = 0  # rows removed
    pruned: int = 0  # checkpoints removed
    after: StoredBytes | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        plan = self.plan
        answer: dict[str, Any] = {
            "workspaceId": self.key.workspace_id,
            "panelId": self.key.panel_id,
            "patched": self.patched,
            "folded": self.folded,
            "dropped": self.dropped,
            "prunedCheckpoints": self.pruned,
        }
        if plan is not None:
            answer |= {
                "version": plan.version,
                "foldedThrough": plan.fold_through,
                "droppedThrough": plan.drop_through,
                "before": plan.stored.to_json() if plan.stored else None,
                "after": self.after.to_json() if self.after else None,
            }
        if self.error is not None:
            answer["error"] = self.error
        return answer


@dataclass(slots=True)
class CompactionReport:
    policy: RetentionPolicy
    dry_run: bool
    panels: int = 0  # looked at
    outcomes: list[PanelOutcome] = field(default_factory=list)  # panels with work, or errors
    before: StoredBytes = field(default_factory=StoredBytes)
    after: StoredBytes = field(default_factory=StoredBytes)
    measured: bool = True
    vacuumed: bool = False
    seconds: float = 0.0

    @property
    def errors(self) -> list[PanelOutcome]:
        return [outcome for outcome in self.outcomes if outcome.error is not None]

    @property
    def factor(self) -> float | None:
        """How many times less the panels take (None: not measured, or nothing stored)."""
        if not self.measured or not self.after.total:
            return None
        return round(self.before.total / self.after.total, 2)

    def summary(self) -> str:
        """The report for a person (the CLI on a terminal)."""
        done = sum(1 for outcome in self.outcomes if outcome.error is None)
        verb = "would compact" if self.dry_run else "compacted"
        lines = [
            f"{verb} {done} of {self.panels} panels in {self.seconds:.2f} s "
            f"({self.policy.describe()})"
            + (" - dry run: nothing changed, 'after' is an estimate" if self.dry_run else "")
        ]
        if self.measured:
            lines.append(f"  {'':18} {'before':>15} {'after':>15}")
            for label, name in (
                ("history rows", "rows"),
                ("Yjs update bytes", "update_bytes"),
                ("row bytes", "row_bytes"),
                ("checkpoints", "checkpoints"),
                ("checkpoint bytes", "checkpoint_bytes"),
                ("stored bytes", "total"),
            ):
                before, after = getattr(self.before, name), getattr(self.after, name)
                lines.append(f"  {label:18} {before:>15,} {after:>15,}")
            if self.factor is not None:
                lines[-1] += f"   {self.factor:g}x less"
        totals = self.to_json()
        lines.append(
            ("  would have: " if self.dry_run else "  ")
            + f"{totals['patched']:,} patches stored, {totals['folded']:,} updates folded, "
            f"{totals['dropped']:,} history rows removed, {totals['prunedCheckpoints']:,} "
            "checkpoints pruned" + (", space reclaimed (VACUUM)" if self.vacuumed else "")
        )
        lines += [f"  failed: {o.key}: {o.error}" for o in self.errors]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "dryRun": self.dry_run,
            "policy": self.policy.to_json(),
            "panels": self.panels,
            "compacted": sum(1 for outcome in self.outcomes if outcome.error is None),
            "failed": len(self.errors),
            "patched": sum(outcome.patched for outcome in self.outcomes),
            "folded": sum(outcome.folded for outcome in self.outcomes),
            "dropped": sum(outcome.dropped for outcome in self.outcomes),
            "prunedCheckpoints": sum(outcome.pruned for outcome in self.outcomes),
            "before": self.before.to_json() if self.measured else None,
            "after": self.after.to_json() if self.measured else None,
            "factor": self.factor,
            "vacuumed": self.vacuumed,
            "seconds": round(self.seconds, 3),
            "details": [outcome.to_json() for outcome in self.outcomes],
        }


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a run is: panel `panel` of `panels`, `done` of its `total` versions."""

    panel: int
    panels: int
    key: PanelKey
    done: int = 0
    total: int = 0


ProgressCallback = Callable[[Progress], None]


# -- the orchestration -------------------------------------------------------------------------


class Compactor:
    def __init__(
        self,
        maintenance: LogMaintenance,
        log_store: UpdateLog,
        policy: RetentionPolicy,
        *,
        chunk_versions: int = CHUNK_VERSIONS,
    ) -> None:
        self.maintenance = maintenance
        self.log = log_store
        self.policy = policy
        self.chunk_versions = chunk_versions

    async def run(
        self,
        *,
        workspace_id: str | None = None,
        panel_id: str | None = None,
        dry_run: bool = False,
        measure: bool = True,
        vacuum: bool = False,
        now: datetime | None = None,
        progress: ProgressCallback | None = None,
    ) -> CompactionReport:
        """Compact every panel (of `workspace_id`; only `panel_id`), one after the other.

        `measure`: sum what each panel stores before and after (reads every row: the CLI's
        summary; the schedule skips it). `dry_run`: plan and measure, change nothing (`after`
        is then the estimate). `vacuum`: give the freed space back afterwards (SQLite VACUUM
        rewrites the file and holds the write lock meanwhile; PostgreSQL VACUUM)."""
        started = time.monotonic()
        moment = now or utcnow()
        fold_before, drop_before = self.policy.fold_before(moment), self.policy.drop_before(moment)
        keys = await self.maintenance.maintained_panels(workspace_id, panel_id)
        report = CompactionReport(self.policy, dry_run, len(keys), measured=measure)
        for index, key in enumerate(keys, 1):
            step = Progress(index, len(keys), key)
            if progress is not None:
                progress(step)
            outcome = PanelOutcome(key, None)
            try:
                plan = await self.maintenance.inspect(
                    key, fold_before=fold_before, drop_before=drop_before, measure=measure
                )
            except Exception as exc:
                outcome.error = _describe(exc)
                report.outcomes.append(outcome)
                log.warning("compaction of %s: planning failed: %s", key, outcome.error)
                continue
            if plan is None:  # gone meanwhile
                continue
            outcome.plan = plan
            stored = plan.stored or StoredBytes()
            report.before += stored
            if not plan.work:
                report.after += stored
                continue
            report.outcomes.append(outcome)
            if dry_run:  # what it would do
                outcome.patched = plan.unpatched if plan.folds else 0
                outcome.folded = max(plan.fold_through - max(plan.fold_from, plan.drop_through), 0)
                outcome.dropped = plan.drop_through - plan.drop_from
                outcome.pruned = plan.stale_checkpoints
                outcome.after = plan.expected
                report.after += plan.expected or stored
                continue
            try:
                await self._compact(plan, outcome, step, progress)
            except Exception as exc:
                outcome.error = _describe(exc)
                log.warning("compaction of %s failed: %s", key, outcome.error)
            if measure:
                outcome.after = await self._measured(key, fold_before, drop_before)
                report.after += outcome.after or stored
        if vacuum and not dry_run:
            await self.maintenance.reclaim()
            report.vacuumed = True
        report.seconds = time.monotonic() - started
        return report

    async def _measured(
        self, key: PanelKey, fold_before: datetime | None, drop_before: datetime | None
    ) -> StoredBytes | None:
        try:
            again = await self.maintenance.inspect(
                key, fold_before=fold_before, drop_before=drop_before, measure=True
            )
        except Exception as exc:
            log.info("compaction of %s: not measured afterwards: %r", key, exc)
            return None
        return None if again is None else again.stored

    async def _compact(
        self,
        plan: CompactionPlan,
        outcome: PanelOutcome,
        step: Progress,
        progress: ProgressCallback | None,
    ) -> None:
        if plan.folds and plan.unpatched:
            outcome.patched = await self._keep_patches(plan)
        after, until = plan.span
        start = after
        while after < until:
            end = min(after + self.chunk_versions, until)
            folded, dropped = await self.maintenance.compact(plan, after, end)
            outcome.folded += folded
            outcome.dropped += dropped
            after = end
            if progress is not None:
                progress(Progress(step.panel, step.panels, step.key, after - start, until - start))
            await asyncio.sleep(0)  # a turn for everything else between two transactions
        outcome.pruned = await self.maintenance.prune_checkpoints(plan.key)

    async def _keep_patches(self, plan: CompactionPlan) -> int:
        """Store the patch, computed in log order as history shows it, of every row about to
        lose its update that has none."""
        after, kept = plan.fold_from, 0
        while after < plan.fold_through:
            page = await self.log.read(
                plan.key, after=after, until=plan.fold_through, limit=PATCH_PAGE
            )
            if not page:
                break
            missing = [
                entry
                for entry in page
                if entry.patch is None and entry.change_type != ChangeType.DELETED and entry.update
            ]
            if missing:
                await fill_patches(self.log, plan.key, missing)
                patches = {e.version: cast(JSONPatch, e.patch) for e in missing if e.patch}
                await self.maintenance.keep_patches(plan.key, patches)
                kept += len(patches)
            after = page[-1].version
        return kept


def _describe(exc: Exception) -> str:
    return exc.message if isinstance(exc, StateError) else repr(exc)


# -- the schedule ------------------------------------------------------------------------------


class CompactionSchedule:
    """Run the compactor every `interval_seconds` in the server (0: never). Every replica runs
    its own: compactions of one panel at once are safe (each step is idempotent and its marks
    only grow), and replicas started at different times run at different times."""

    def __init__(self, compactor: Compactor, interval_seconds: float) -> None:
        self.compactor = compactor
        self.interval_seconds = interval_seconds
        self.last: CompactionReport | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval_seconds > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="compaction")

    async def close(self) -> None:
        await cancel(self._task)

    async def run_once(self) -> CompactionReport:
        report = await self.compactor.run(measure=False)
        self.last = report
        summary = report.to_json()
        log.info(
            "compaction: %d panels, %d compacted (%d rows folded, %d removed, %d checkpoints "
            "pruned), %d failed, %.1f s",
            report.panels,
            summary["compacted"],
            summary["folded"],
            summary["dropped"],
            summary["prunedCheckpoints"],
            summary["failed"],
            report.seconds,
        )
        return report

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            try:
                await self.run_once()
            except Exception:  # never let the loop die; the next round tries again
                log.exception("compaction: the round failed")


def maintenance_of(store: object) -> LogMaintenance | None:
    """The store's LogMaintenance side, when it has one (both log adapters do)."""
    names = ("maintained_panels", "inspect", "keep_patches", "compact", "prune_checkpoints")
    if all(callable(getattr(store, name, None)) for name in (*names, "reclaim")):
        return cast(LogMaintenance, store)
    return None
