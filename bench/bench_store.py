"""Benchmark of the update logs: append throughput by batch size, cold-load time by log length.

    python -m bench.bench_store [--backends sqlite,postgres] [--seconds 2] [--repeats 3]

Prints JSON on stdout and a table on stderr. SQLite runs in a temporary folder; PostgreSQL in a
temporary database on the server of CRDT_STATE_BENCH_PG (default: the local one, as user
postgres), dropped at the end. Not a test: figures depend on the machine, its disk above all
(a batch of one change costs a disk flush on either backend).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from pycrdt import Doc, Map, TransactionEvent

from adapters.postgres import PostgresUpdateLog, migrate
from adapters.sqlite import SqliteUpdateLog
from crdt_state.model import Change, ChangeType, PanelKey
from crdt_state.ports import UpdateLog
from crdt_state.replay import rebuild, write_checkpoint

ADMIN_DSN_VARIABLE = "CRDT_STATE_BENCH_PG"
DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
BATCH_SIZES = (1, 10, 100, 1000)
LOG_LENGTHS = (1_000, 10_000, 100_000)
CHECKPOINT_EVERY = 1_000
EPOCH = "e1"


@dataclass(slots=True)
class AppendFigure:
    backend: str
    batch_size: int
    changes: int
    seconds: float
    updates_per_second: float
    transactions_per_second: float


@dataclass(slots=True)
class LoadFigure:
    backend: str
    entries: int
    checkpoint_every: int | None  # None: no checkpoint, the whole log is replayed
    replayed: int  # log entries after the checkpoint
    load_ms: float  # medians over the repeats
    rebuild_ms: float
    total_ms: float


def real_updates(count: int) -> list[bytes]:
    """`count` Yjs updates as a client sends them: one field set per update, over 10 fields."""
    doc: Doc = Doc()
    state = doc.get("$state", type=Map)
    updates: list[bytes] = []

    def capture(event: TransactionEvent) -> None:
        updates.append(event.update)

    doc.observe(capture)
    for number in range(count):
        state[f"field-{number % 10}"] = number
    return updates


def changes_for(key: PanelKey, updates: list[bytes]) -> list[Change]:
    return [Change(key=key, epoch=EPOCH, update=update) for update in updates]


async def create_panel(log: UpdateLog, key: PanelKey, first_update: bytes) -> None:
    created = await log.create(
        Change(key=key, epoch=EPOCH, update=first_update, change_type=ChangeType.CREATED)
    )
    if created is None:
        raise RuntimeError(f"panel {key} exists already")


# Append throughput


async def measure_appends(
    name: str, log: UpdateLog, updates: list[bytes], batch_size: int, seconds: float
) -> AppendFigure:
    """Append batches of `batch_size` one after the other for about `seconds`."""
    key = PanelKey("bench", f"append-{batch_size}")
    await create_panel(log, key, updates[0])
    changes = transactions = 0
    started = time.perf_counter()
    while transactions < 3 or time.perf_counter() - started < seconds:
        start = (changes % (len(updates) - batch_size)) + 1
        await log.append(changes_for(key, updates[start : start + batch_size]))
        changes += batch_size
        transactions += 1
    elapsed = time.perf_counter() - started
    return AppendFigure(
        name, batch_size, changes, elapsed, changes / elapsed, transactions / elapsed
    )


# Cold loads


async def build_panel(
    log: UpdateLog, key: PanelKey, updates: list[bytes], checkpoint_every: int | None
) -> None:
    """Log `updates` as the server would: batches of 1,000, checkpoints if asked."""
    await create_panel(log, key, updates[0])
    step = checkpoint_every or 1_000
    for end in range(step, len(updates) + step, step):
        batch = updates[max(end - step, 1) : min(end, len(updates))]
        if batch:
            await log.append(changes_for(key, batch))
        if checkpoint_every is not None:
            await write_checkpoint(log, key)


async def measure_load(
    name: str, log: UpdateLog, key: PanelKey, entries: int, every: int | None, repeats: int
) -> LoadFigure:
    """What opening the panel's room costs: load() and rebuild(), medians of `repeats`."""
    loads: list[float] = []
    rebuilds: list[float] = []
    replayed = 0
    for _ in range(repeats):
        started = time.perf_counter()
        loaded = await log.load(key)
        loaded_at = time.perf_counter()
        if loaded is None:
            raise RuntimeError(f"panel {key} is missing")
        rebuild(loaded)
        loads.append(loaded_at - started)
        rebuilds.append(time.perf_counter() - loaded_at)
        replayed = len(loaded.tail)
    load_ms, rebuild_ms = statistics.median(loads) * 1e3, statistics.median(rebuilds) * 1e3
    return LoadFigure(name, entries, every, replayed, load_ms, rebuild_ms, load_ms + rebuild_ms)


async def measure_loads(
    name: str, log: UpdateLog, updates: list[bytes], repeats: int
) -> list[LoadFigure]:
    figures: list[LoadFigure] = []
    for entries in LOG_LENGTHS:
        for every in (CHECKPOINT_EVERY, None):
            key = PanelKey("bench", f"load-{entries}-{every or 'none'}")
            await build_panel(log, key, updates[:entries], every)
            figures.append(await measure_load(name, log, key, entries, every, repeats))
    return figures


# Backends


@asynccontextmanager
async def sqlite_log() -> AsyncIterator[UpdateLog]:
    with tempfile.TemporaryDirectory(prefix="crdt-state-bench-") as folder:
        log = await SqliteUpdateLog.open(Path(folder) / "state.db")
        try:
            yield log
        finally:
            await log.close()


def _database_dsn(admin: str, database: str) -> str:
    return urlunsplit(urlsplit(admin)._replace(path=f"/{database}"))


@asynccontextmanager
async def postgres_log() -> AsyncIterator[UpdateLog]:
    admin_dsn = os.environ.get(ADMIN_DSN_VARIABLE, DEFAULT_ADMIN_DSN)
    database = f"crdt_state_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
        try:
            dsn = _database_dsn(admin_dsn, database)
            await migrate(dsn)
            log = await PostgresUpdateLog.open(dsn)
            try:
                yield log
            finally:
                await log.close()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await admin.close()


BACKENDS: dict[str, Callable[[], AbstractAsyncContextManager[UpdateLog]]] = {
    "sqlite": sqlite_log,
    "postgres": postgres_log,
}


# Report


def table(appends: list[AppendFigure], loads: list[LoadFigure]) -> str:
    lines = ["append throughput (one batch after the other)"]
    lines.append(f"  {'backend':<9} {'batch':>6} {'updates/s':>11} {'commits/s':>10}")
    for a in appends:
        lines.append(
            f"  {a.backend:<9} {a.batch_size:>6} {a.updates_per_second:>11,.0f}"
            f" {a.transactions_per_second:>10,.0f}"
        )
    lines.append("cold load: load() + rebuild(), median")
    lines.append(
        f"  {'backend':<9} {'entries':>8} {'checkpoints':>12} {'replayed':>9}"
        f" {'load ms':>9} {'rebuild ms':>11} {'total ms':>9}"
    )
    for f in loads:
        every = f"every {f.checkpoint_every}" if f.checkpoint_every else "none"
        lines.append(
            f"  {f.backend:<9} {f.entries:>8,} {every:>12} {f.replayed:>9,}"
            f" {f.load_ms:>9.1f} {f.rebuild_ms:>11.1f} {f.total_ms:>9.1f}"
        )
    return "\n".join(lines)


async def run(backends: list[str], seconds: float, repeats: int) -> dict[str, Any]:
    updates = real_updates(max(LOG_LENGTHS))
    appends: list[AppendFigure] = []
    loads: list[LoadFigure] = []
    for name in backends:
        async with BACKENDS[name]() as log:
            for size in BATCH_SIZES:
                appends.append(await measure_appends(name, log, updates, size, seconds))
            loads.extend(await measure_loads(name, log, updates, repeats))
    print(table(appends, loads), file=sys.stderr)
    return {
        "appends": [asdict(figure) for figure in appends],
        "cold_loads": [asdict(figure) for figure in loads],
        "update_bytes_mean": statistics.fmean(len(update) for update in updates),
        "seconds_per_append_measure": seconds,
        "load_repeats": repeats,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgres", help="[sqlite,postgres]")
    parser.add_argument("--seconds", type=float, default=2.0, help="per append figure [2]")
    parser.add_argument("--repeats", type=int, default=3, help="loads per figure [3]")
    args = parser.parse_args(argv)
    backends = [name for name in args.backends.split(",") if name]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    started = time.perf_counter()
    report = asyncio.run(run(backends, args.seconds, args.repeats))
    report["run_seconds"] = round(time.perf_counter() - started, 1)
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
