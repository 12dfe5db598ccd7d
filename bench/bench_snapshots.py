"""Snapshot service timings: a workspace of 1,000 panels (~1.2 KB of JSON each) through the
real store, rooms and Git repository (no HTTP).

    .venv/bin/python -m bench.bench_snapshots                      # SQLite, 3 runs
    .venv/bin/python -m bench.bench_snapshots --database-url postgresql://…   # PostgreSQL
                                                                   # (an empty, migrated db)

Each run builds the workspace in a fresh store, unloads its rooms (their views are stored,
as in a server that has been quiet), then measures:

- create_s: the first snapshot (every panel read, encoded, committed; the row recorded);
- unchanged_s: a snapshot of the same state (no commit);
- one_change_s: one panel edited, then a snapshot (one new blob);
- load_current_s: the current state of every panel (GET /snapshot);
- load_commit_s: the first commit read back and parsed (GET /snapshot?git_commit=);
- create_live_s / load_current_live_s: the same with all 1,000 rooms live (views read
  through `room.call`);
- edit_during_snapshot_*_ms: commit latency of edits to a live panel made back to back while
  a snapshot of the live workspace runs, against edit_idle_*_ms with nothing else going on
  (a snapshot must not hold writes up);
- restore_s: all 1,000 panels restored from the first commit (1,000 forward changes).

Prints one JSON document (best and median of the runs); exits 1 when create or load misses
its target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from adapters.git import GitSnapshotRepository
from adapters.local import LocalFanout
from adapters.sqlite import SqliteUpdateLog
from bench.bench_git import panel_view
from crdt_state.config import Settings
from crdt_state.model import Attribution, PanelKey, TriggeredBy
from crdt_state.panels import PanelService
from crdt_state.ports import Store
from crdt_state.registry import RoomRegistry
from crdt_state.server import Server
from crdt_state.snapshots import SnapshotService

TARGETS = {"create_s": 2.0, "load_current_s": 1.0, "load_commit_s": 1.0}
WHO = Attribution(TriggeredBy.SYSTEM, "bench", "bench")
T = TypeVar("T")


@dataclass
class Stack:
    store: Store
    registry: RoomRegistry
    service: SnapshotService
    panels: PanelService
    workspace: str


async def open_store(root: Path, database_url: str | None) -> Store:
    if database_url is None:
        return await SqliteUpdateLog.open(root / "state.db")
    from adapters.postgres import PostgresUpdateLog

    return await PostgresUpdateLog.open(database_url)


@asynccontextmanager
async def stack(store: Store, git_root: Path, workspace: str) -> AsyncIterator[Stack]:
    repository = GitSnapshotRepository(git_root)
    settings = Settings(room_idle_seconds=0, snapshot_interval_seconds=0)
    server = Server(store, LocalFanout(), repository, settings)
    server.start()
    try:
        yield Stack(store, server.registry, server.snapshots, server.panels, workspace)
    finally:
        await server.close()  # rooms store their final view as they unload
        await repository.close()


async def timed(work: Awaitable[T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = await work
    return time.perf_counter() - started, result


async def edit(built: Stack, panel: int, revision: int) -> int:
    key = PanelKey(built.workspace, f"panel-{panel}")
    result = await built.panels.replace(key, panel_view(panel, revision), WHO)
    return result.version


async def populate(store: Store, git_root: Path, workspace: str, panels: int) -> None:
    async with stack(store, git_root, workspace) as built:
        for start in range(0, panels, 100):
            chunk = range(start, min(start + 100, panels))
            await asyncio.gather(*(edit(built, n, 0) for n in chunk))


async def open_all(built: Stack, panels: int) -> None:
    keys = [PanelKey(built.workspace, f"panel-{n}") for n in range(panels)]
    await asyncio.gather(*(built.registry.open(key, create=False) for key in keys))


async def edits_during(work: Callable[[], Coroutine[Any, Any, Any]], built: Stack) -> list[float]:
    """Commit latencies (s) of edits made back to back while `work` runs."""
    task: asyncio.Task[Any] = asyncio.create_task(work())
    samples, revision = [], 1000
    while not task.done():
        revision += 1
        took, _ = await timed(edit(built, 0, revision))
        samples.append(took)
    await task
    return samples


async def idle_edits(built: Stack, count: int) -> list[float]:
    """Commit latencies (s) of edits with nothing else going on: the baseline."""
    return [(await timed(edit(built, 0, 5000 + n)))[0] for n in range(count)]


async def cold(built: Stack, panels: int) -> tuple[dict[str, float], str]:
    service = built.service
    create_s, first = await timed(service.create(built.workspace))
    assert first.created and len(first.panel_versions) == panels
    unchanged_s, same = await timed(service.create(built.workspace))
    assert not same.created
    await edit(built, 1, 1)
    one_change_s, changed = await timed(service.create(built.workspace))
    assert changed.changed_panels == ["panel-1"]
    load_current_s, states = await timed(service.collect(built.workspace))
    assert len(states) == panels
    assert first.git_commit_hash is not None
    load_commit_s, commit = await timed(service.at_commit(built.workspace, first.git_commit_hash))
    assert len(commit.views) == panels
    figures = {
        "create_s": create_s,
        "unchanged_s": unchanged_s,
        "one_change_s": one_change_s,
        "load_current_s": load_current_s,
        "load_commit_s": load_commit_s,
    }
    return figures, first.git_commit_hash


async def live(built: Stack, panels: int, first_commit: str) -> dict[str, float]:
    service = built.service
    await open_all(built, panels)
    await edit(built, 2, 1)
    create_live_s, _ = await timed(service.create(built.workspace))
    load_live_s, _ = await timed(service.collect(built.workspace))
    await edit(built, 3, 1)
    during = await edits_during(lambda: service.create(built.workspace), built)
    idle = await idle_edits(built, max(len(during), 20))
    restoring = service.restore(built.workspace, first_commit, None, WHO)
    restore_s, (_, restored) = await timed(restoring)
    assert len(restored) == panels
    return {
        "create_live_s": create_live_s,
        "load_current_live_s": load_live_s,
        "edit_idle_p50_ms": statistics.median(idle) * 1000,
        "edit_idle_max_ms": max(idle) * 1000,
        "edit_during_snapshot_p50_ms": statistics.median(during) * 1000,
        "edit_during_snapshot_max_ms": max(during) * 1000,
        "restore_s": restore_s,
    }


async def one_run(panels: int, database_url: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-snapshots-") as folder:
        root = Path(folder)
        store = await open_store(root, database_url)
        try:
            workspace = f"bench-{uuid.uuid4().hex[:8]}"  # a shared database keeps old runs
            await populate(store, root / "setup-git", workspace, panels)
            async with stack(store, root / "git", workspace) as built:
                figures, first = await cold(built, panels)
                figures.update(await live(built, panels, first))
        finally:
            await store.close()
    return figures


def summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    names = runs[0].keys()
    return {
        name: {
            "best": round(min(run[name] for run in runs), 4),
            "median": round(statistics.median(run[name] for run in runs), 4),
        }
        for name in names
    }


async def main_async(args: argparse.Namespace) -> int:
    runs = [await one_run(args.panels, args.database_url) for _ in range(args.runs)]
    figures = summary(runs)
    missed = [name for name, limit in TARGETS.items() if figures[name]["median"] >= limit]
    print(
        json.dumps(
            {
                "panels": args.panels,
                "store": "postgres" if args.database_url else "sqlite",
                "runs": args.runs,
                "targets": TARGETS,
                "figures": figures,
                "missed": missed,
            },
            indent=2,
        )
    )
    return 1 if missed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--panels", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", help="an empty, migrated PostgreSQL database")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
