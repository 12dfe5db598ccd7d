"""Storage per 100,000 updates, before and after compaction, under each retention policy.

    python -m bench.compaction_storage [--backends sqlite,postgres] [--updates 100000]
                                       [--json bench/results/compaction.json]

One panel gets `--updates` small Yjs updates through the log API, as the server logs them
(batches of 1,000, a checkpoint at every 1,000th version, each change with its JSON Patch,
attribution and change id), then `Compactor.run` (what `crdt-state compact` runs) compacts
it. Figures: the panel's stored bytes as compaction measures them (rows and checkpoints),
and the store's size on disk: SQLite's file, and the pages in use in it (freed pages are
reused by later writes; VACUUM returns them); PostgreSQL's tables with their indexes and TOAST,
what of them is in use after a plain VACUUM, as autovacuum leaves them (pgstattuple: live
tuples, the filled part of B-tree leaves; the rest is reused by later writes), and after
VACUUM FULL (space returned; measured on a database of its own). "Round 2" writes as
many updates again and compacts again: what the store takes once edits go on under the policy.
SQLite runs in a temporary folder, PostgreSQL in a temporary database on CRDT_STATE_BENCH_PG
(default: the local server, as user postgres), dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from adapters.postgres import PostgresUpdateLog, migrate
from adapters.sqlite import SqliteUpdateLog
from crdt_state.compaction import Compactor, maintenance_of
from crdt_state.document import STATE, PanelDoc
from crdt_state.model import Change, ChangeType, JSONPatch, PanelKey, TriggeredBy
from crdt_state.patch_events import PatchRecorder
from crdt_state.ports import Store
from crdt_state.replay import write_checkpoint
from crdt_state.retention import RetentionPolicy

ADMIN_DSN_VARIABLE = "CRDT_STATE_BENCH_PG"
DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
CHECKPOINT_EVERY = 1_000
KEY = PanelKey("bench", "panel")
EPOCH = "e1"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    policy: RetentionPolicy
    span: timedelta  # the updates occur evenly over this, the newest two hours ago


SCENARIOS = (
    Scenario("keep everything (default)", RetentionPolicy(), timedelta(days=2)),
    Scenario(
        "history forever, time travel 0 days", RetentionPolicy.of_days(None, 0), timedelta(days=2)
    ),
    Scenario(
        "history 30 days, time travel 7 days (edits over 60 days)",
        RetentionPolicy.of_days(30, 7),
        timedelta(days=60),
    ),
    Scenario("history 0 days", RetentionPolicy.of_days(0, 0), timedelta(days=2)),
)


@dataclass(slots=True)
class Figure:
    backend: str
    scenario: str
    updates: int
    write_seconds: float
    compact_seconds: float
    stored_before: dict[str, int]
    stored_after: dict[str, int]
    factor: float
    disk_before: int  # bytes: the SQLite file, or PostgreSQL's log tables
    disk_after: int  # after compaction (SQLite: the file, unchanged until VACUUM)
    disk_in_use_after: int  # SQLite: pages in use; PostgreSQL: after VACUUM, what is in use
    disk_vacuumed: int  # SQLite: after VACUUM; PostgreSQL: after VACUUM FULL
    # As many updates again, compacted again (after the VACUUM above): stored bytes, bytes on
    # disk in use, bytes on disk.
    round_two: dict[str, int] = field(default_factory=dict)


# The panel's updates, as a server logs them


@dataclass(slots=True)
class Updates:
    updates: list[bytes]
    patches: list[JSONPatch]


def make_updates(count: int) -> Updates:
    """$state.counter = v at version v; every 100th version also sets one of 20 objects."""
    panel = PanelDoc()
    updates: list[bytes] = []
    panel.doc.observe(lambda event: updates.append(event.update))
    panel.initialize(EPOCH)
    patches: list[JSONPatch] = [[]]
    with PatchRecorder(panel) as recorder:
        for version in range(2, count + 1):
            with panel.doc.transaction():
                panel.roots[STATE]["counter"] = version
                if version % 100 == 0:
                    panel.roots[STATE][f"k{version // 100 % 20}"] = {"at": version}
            patches.append(recorder.take())
    return Updates(updates, patches)


async def write(
    store: Store, log: Updates, first: int, last: int, when: Callable[[int], datetime]
) -> None:
    def change(version: int) -> Change:
        return Change(
            key=KEY,
            epoch=EPOCH,
            update=log.updates[version - 1],
            change_type=ChangeType.CREATED if version == 1 else ChangeType.UPDATED,
            triggered_by=TriggeredBy.USER,
            trigger_source="yjs",
            subject=f"user-{version % 7}",
            patch=log.patches[version - 1],
            occurred_at=when(version),
        )

    if first == 1:
        await store.create(change(1))
        first = 2
    start = first
    while start <= last:
        end = min(((start - 1) // CHECKPOINT_EVERY + 1) * CHECKPOINT_EVERY, last)
        await store.append([change(v) for v in range(start, end + 1)])
        if end % CHECKPOINT_EVERY == 0:
            await write_checkpoint(store, KEY)
        start = end + 1


# The stores, and their size on disk


@dataclass(slots=True)
class Backend:
    name: str
    store: Store
    disk: Callable[[], Awaitable[int]]  # bytes on disk now
    in_use: Callable[[], Awaitable[int]]  # bytes in use (reusable space left out)
    vacuum_full: Callable[[], Awaitable[int]]  # give space back; bytes on disk then


@asynccontextmanager
async def sqlite_backend() -> AsyncIterator[Backend]:
    with tempfile.TemporaryDirectory(prefix="crdt-state-bench-") as folder:
        path = Path(folder) / "crdt-state.sqlite3"
        store = await SqliteUpdateLog.open(path)

        def pragma(db: sqlite3.Connection, name: str) -> int:
            return int(db.execute(f"PRAGMA {name}").fetchone()[0])

        def measure(kind: str) -> int:
            db = sqlite3.connect(path)
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                if kind == "vacuum":
                    db.execute("VACUUM")
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                if kind == "in use":
                    pages = pragma(db, "page_count") - pragma(db, "freelist_count")
                    return pages * pragma(db, "page_size")
            finally:
                db.close()
            wal = Path(f"{path}-wal")
            return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)

        try:
            yield Backend(
                "sqlite",
                store,
                lambda: asyncio.to_thread(measure, "disk"),
                lambda: asyncio.to_thread(measure, "in use"),
                lambda: asyncio.to_thread(measure, "vacuum"),
            )
        finally:
            await store.close()


TABLES = ("state_history", "state_checkpoints", "panel_states")


@asynccontextmanager
async def postgres_backend() -> AsyncIterator[Backend]:
    admin_dsn = os.environ.get(ADMIN_DSN_VARIABLE, DEFAULT_ADMIN_DSN)
    database = f"crdt_state_bench_{uuid.uuid4().hex[:12]}"
    dsn = urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{database}"))
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
        try:
            await migrate(dsn)
            store = await PostgresUpdateLog.open(dsn)

            async def size(query: str, before: str | None = None) -> int:
                conn = await asyncpg.connect(dsn)
                try:
                    if before is not None:
                        await conn.execute(before, timeout=3600)
                    return int(await conn.fetchval(query))
                finally:
                    await conn.close()

            tables = ", ".join(f"'{table}'::regclass" for table in TABLES)
            disk = f"SELECT sum(pg_total_relation_size(t)) FROM unnest(ARRAY[{tables}]) AS t"
            # After a plain VACUUM (what autovacuum does): the live tuples of the tables and
            # their TOAST, the used part of B-tree indexes, other indexes whole.
            in_use = f"""
                WITH t AS (SELECT unnest(ARRAY[{tables}]) AS oid),
                heaps AS (
                    SELECT oid FROM t UNION
                    SELECT reltoastrelid FROM pg_class WHERE oid IN (SELECT oid FROM t)
                ),
                indexes AS (
                    SELECT i.indexrelid AS oid, a.amname FROM pg_index AS i
                    JOIN pg_class AS c ON c.oid = i.indexrelid
                    JOIN pg_am AS a ON a.oid = c.relam
                    WHERE i.indrelid IN (SELECT oid FROM heaps)
                )
                SELECT (SELECT sum((pgstattuple(oid)).tuple_len) FROM heaps)
                     + coalesce((SELECT sum((s.internal_pages + s.leaf_pages
                                            * nullif(s.avg_leaf_density, 'NaN') / 100.0) * 8192)
                                 FROM indexes, LATERAL pgstatindex(indexes.oid) AS s
                                 WHERE amname = 'btree'), 0)
                     + coalesce((SELECT sum(pg_relation_size(oid)) FROM indexes
                                 WHERE amname <> 'btree'), 0)
            """
            setup = await asyncpg.connect(dsn)
            try:
                await setup.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
            finally:
                await setup.close()

            try:
                yield Backend(
                    "postgres",
                    store,
                    lambda: size(disk),
                    lambda: size(in_use, f"VACUUM (ANALYZE) {', '.join(TABLES)}"),
                    lambda: size(disk, f"VACUUM (FULL, ANALYZE) {', '.join(TABLES)}"),
                )
            finally:
                await store.close()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await admin.close()


BACKENDS = {"sqlite": sqlite_backend, "postgres": postgres_backend}


# One scenario


async def run_scenario(backend: Backend, scenario: Scenario, log: Updates, count: int) -> Figure:
    newest = datetime.now(UTC) - timedelta(hours=2)
    step = scenario.span / count

    def when(version: int) -> datetime:
        return newest - scenario.span + step * version

    maintenance = maintenance_of(backend.store)
    assert maintenance is not None
    compactor = Compactor(maintenance, backend.store, scenario.policy)
    started = time.perf_counter()
    await write(backend.store, log, 1, count, when)
    written = time.perf_counter()
    disk_before = await backend.disk()
    report = await compactor.run(now=newest + timedelta(hours=2))
    compacted = time.perf_counter()
    assert not report.errors, report.errors
    disk_after = await backend.disk()
    in_use = await backend.in_use()
    vacuumed = await backend.vacuum_full()
    # Round two: as many updates again (the next `span`), compacted under the same policy:
    # what edits going on take under the policy.
    await write(backend.store, log, count + 1, 2 * count, when)
    again = await compactor.run(now=newest + scenario.span + timedelta(hours=2))
    assert not again.errors, again.errors
    round_two = {
        "storedBytes": again.after.total,
        "diskInUse": await backend.in_use(),
        "disk": await backend.disk(),
    }
    return Figure(
        backend=backend.name,
        scenario=scenario.name,
        updates=count,
        write_seconds=round(written - started, 2),
        compact_seconds=round(compacted - written, 2),
        stored_before=report.before.to_json(),
        stored_after=report.after.to_json(),
        factor=report.factor or 0.0,
        disk_before=disk_before,
        disk_after=disk_after,
        disk_in_use_after=in_use,
        disk_vacuumed=vacuumed,
        round_two=round_two,
    )


async def run(backends: list[str], count: int) -> list[Figure]:
    log = make_updates(2 * count)
    figures = []
    for name in backends:
        for scenario in SCENARIOS:
            async with BACKENDS[name]() as backend:
                figure = await run_scenario(backend, scenario, log, count)
            print(f"{name}: {scenario.name}: done", file=sys.stderr)
            figures.append(figure)
    return figures


def mb(count: int) -> str:
    return f"{count / 1e6:.1f}"


def table(figures: list[Figure]) -> str:
    lines = [
        "| backend | policy | stored MB before | after | factor | disk MB before | after "
        "compaction (in use) | after VACUUM (FULL) | round 2: stored MB | disk MB (in use) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        lines.append(
            f"| {f.backend} | {f.scenario} | {mb(f.stored_before['totalBytes'])}"
            f" | {mb(f.stored_after['totalBytes'])} | {f.factor:g}x | {mb(f.disk_before)}"
            f" | {mb(f.disk_after)} ({mb(f.disk_in_use_after)}) | {mb(f.disk_vacuumed)}"
            f" | {mb(f.round_two['storedBytes'])} | {mb(f.round_two['disk'])}"
            f" ({mb(f.round_two['diskInUse'])}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--updates", type=int, default=100_000)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    backends = [name for name in args.backends.split(",") if name]
    figures = asyncio.run(run(backends, args.updates))
    print(table(figures))
    if args.json is not None:
        payload: dict[str, Any] = {
            "command": "python -m bench.compaction_storage " + " ".join(argv or sys.argv[1:]),
            "figures": [asdict(figure) for figure in figures],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
