"""Retention and compaction (docs/RETENTION.md), on both stores: what compaction keeps and
drops, that loads, history and time travel answer as the policy promises, that it is safe
while the log is written, and `crdt-state compact` as a real process beside a real server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from adapters.postgres import PostgresUpdateLog
from adapters.sqlite import SqliteUpdateLog
from crdt_state.compaction import CompactionReport, Compactor, maintenance_of
from crdt_state.document import STATE, PanelDoc
from crdt_state.log_order import fill_patches
from crdt_state.model import Change, ChangeType, JSONPatch, LogEntry, PanelKey, TriggeredBy
from crdt_state.panels import render
from crdt_state.patch_events import PatchRecorder
from crdt_state.ports import Store
from crdt_state.replay import rebuild, write_checkpoint
from crdt_state.retention import GRACE, RetentionPolicy, VersionCompacted

from .conftest import token
from .inprocess import client_of, running_app
from .pg import empty_tables
from .server import ServerProcess
from .yjs_client import YjsClients

BACKENDS = ["sqlite", "postgres"]
UPDATES = 100_000
CHECKPOINT_EVERY = 1_000
# Versions whose row keeps no patch (as when two replicas wrote the panel): history computes
# theirs in log order, and compaction must store it before the update goes.
UNPATCHED = frozenset({*range(30_000, 30_100, 7), *range(70_000, 70_050, 3), 99_990})
EPOCH = "e-compaction"
KEY = PanelKey("ws", "big")
# With time travel 0.5 days and history 1 day, the big panel's timeline (big_timeline) puts the
# fold point at the checkpoint at 64,000 and the drop point at 20,800, hours from any boundary.
TRAVEL_DAYS, HISTORY_DAYS = 0.5, 1.0
FOLD_POINT, DROP_POINT = 64_000, 20_800
POLICY = RetentionPolicy.of_days(HISTORY_DAYS, TRAVEL_DAYS)

OpenStore = Callable[[], Awaitable[Store]]
Timeline = Callable[[int], datetime]  # when each version occurred


@dataclass(frozen=True, slots=True)
class PanelLog:
    """A panel's changes as a server would have logged them: $state.counter = v at version v,
    and every 100th version also sets one of 20 objects."""

    updates: list[bytes]  # version v at index v - 1
    patches: list[JSONPatch]

    def state_at(self, version: int) -> dict[str, Any]:
        state: dict[str, Any] = {"counter": version} if version > 1 else {}
        for v in range(100, version + 1, 100):
            state[f"k{v // 100 % 20}"] = {"at": v}
        return state


def panel_log(count: int) -> PanelLog:
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
    assert len(updates) == count
    return PanelLog(updates, patches)


@pytest.fixture(scope="module")
def big_log() -> PanelLog:
    return panel_log(UPDATES + 10)  # the last 10 for writing on after a compaction


def big_timeline(now: datetime) -> Timeline:
    """Versions up to 20,800 three days ago; then up to 64,999 between 20 and 14 hours ago;
    the rest between 6 and 2 hours ago."""

    def when(version: int) -> datetime:
        if version <= DROP_POINT:
            return now - timedelta(hours=72) + timedelta(seconds=version)
        if version < FOLD_POINT + CHECKPOINT_EVERY:
            return now - timedelta(hours=20) + timedelta(seconds=(version - DROP_POINT) / 2)
        return now - timedelta(hours=6) + timedelta(seconds=(version - FOLD_POINT) * 0.4)

    return when


def linear(
    newest: int, age: timedelta = timedelta(hours=2), now: datetime | None = None
) -> Timeline:
    """One version a second, `newest` occurring `age` before `now`."""
    base = (now or datetime.now(UTC)) - age - timedelta(seconds=newest)
    return lambda version: base + timedelta(seconds=version)


def logged(key: PanelKey, log: PanelLog, version: int, when: Timeline) -> Change:
    patch = None if version in UNPATCHED else log.patches[version - 1]
    return Change(
        key=key,
        epoch=EPOCH,
        update=log.updates[version - 1],
        change_type=ChangeType.CREATED if version == 1 else ChangeType.UPDATED,
        triggered_by=TriggeredBy.AI if version % 3 == 0 else TriggeredBy.USER,
        trigger_source="test",
        subject=f"user-{version % 5}",
        patch=patch,
        occurred_at=when(version),
    )


async def write_panel(
    store: Store,
    key: PanelKey,
    log: PanelLog,
    when: Timeline,
    *,
    first: int = 1,
    last: int | None = None,
    every: int = CHECKPOINT_EVERY,
) -> None:
    """Log versions first..last as the server would: batches, a checkpoint every `every`."""
    last = len(log.updates) if last is None else last
    if first == 1:
        assert await store.create(logged(key, log, 1, when)) is not None
        first = 2
    start = first
    while start <= last:
        end = min(((start - 1) // every + 1) * every, last)
        batch = [logged(key, log, v, when) for v in range(start, end + 1)]
        assert await store.append(batch) == list(range(start, end + 1))
        if end % every == 0:
            checkpoint = await write_checkpoint(store, key)
            assert checkpoint is not None and checkpoint.version == end
        start = end + 1


# -- the stores --------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    """Opens this test's own, empty store on one backend (again: the same data)."""
    if request.param == "sqlite":
        path = tmp_path / "data" / "crdt-state.sqlite3"
        return lambda: SqliteUpdateLog.open(path)
    dsn = request.getfixturevalue("pg_dsn")
    await empty_tables(dsn)
    return lambda: PostgresUpdateLog.open(dsn, max_size=4)


@pytest.fixture
async def store(open_store: OpenStore) -> AsyncIterator[Store]:
    log = await open_store()
    yield log
    await log.close()


def compactor(store: Store, policy: RetentionPolicy = POLICY, **options: Any) -> Compactor:
    maintenance = maintenance_of(store)
    assert maintenance is not None
    return Compactor(maintenance, store, policy, **options)


async def page(store: Store, key: PanelKey, **options: Any) -> tuple[list[LogEntry], int]:
    """A history page as the REST face answers it (PanelService.history)."""
    entries, total = await store.history(key, **options)
    await fill_patches(store, key, entries)
    return entries, total


def same_patch(version: int, patch: JSONPatch | None) -> Any:
    """A patch computed in log order lists the operations of one transaction on several keys
    of a map in the order pycrdt reports them, which varies from one computation to the next:
    compare those as sets."""
    if patch is None or version not in UNPATCHED:
        return patch
    return sorted(orjson.dumps(op, option=orjson.OPT_SORT_KEYS) for op in patch)


def shown(entry: LogEntry) -> tuple[Any, ...]:
    """What history shows of an entry, but its size (0 once its update is folded)."""
    return (
        entry.version,
        entry.epoch,
        entry.change_type,
        entry.triggered_by,
        entry.trigger_source,
        entry.subject,
        same_patch(entry.version, entry.patch),
        entry.occurred_at,
    )


async def state_at(store: Store, key: PanelKey, version: int | None = None) -> dict[str, Any]:
    loaded = await store.load(key, version)
    assert loaded is not None
    assert version is None or loaded.last_version == version
    return PanelDoc(rebuild(loaded)).render()[STATE]


# -- what compaction keeps ---------------------------------------------------------------------


async def test_a_panel_of_100000_updates_compacts_and_answers_as_the_policy_promises(
    store: Store, big_log: PanelLog
) -> None:
    now = datetime.now(UTC)
    when = big_timeline(now)
    await write_panel(store, KEY, big_log, when, last=UPDATES)
    samples = [FOLD_POINT, FOLD_POINT + 1, 70_010, 99_990, UPDATES]
    before_states = {v: await state_at(store, KEY, v) for v in samples}
    pages = [
        {"limit": 50},
        {"limit": 100, "offset": 29_960},  # 70,040..69,941: patches to compute, not folded
        {"limit": 200, "offset": 69_950},  # 30,050..29,851: patches to compute, then folded
        {"limit": 100, "offset": 79_100},  # 20,900..20,801: the oldest kept
    ]
    before_pages = [await page(store, KEY, **options) for options in pages]
    windowed = {"limit": 30, "since": when(30_000), "until": when(30_100)}
    before_window = await page(store, KEY, **windowed)

    report = await compactor(store).run(now=now)

    assert not report.errors and report.panels == 1
    [outcome] = report.outcomes
    assert outcome.patched == sum(1 for v in UNPATCHED if v <= FOLD_POINT)
    assert outcome.dropped == DROP_POINT
    assert outcome.folded == FOLD_POINT - DROP_POINT
    assert outcome.pruned == FOLD_POINT // CHECKPOINT_EVERY - 1
    # What it stores: the rows after the drop point, updates only after the fold point.
    assert report.after.rows == UPDATES - DROP_POINT
    assert report.after.update_bytes == sum(map(len, big_log.updates[FOLD_POINT:UPDATES]))
    assert report.after.checkpoints == (UPDATES - FOLD_POINT) // CHECKPOINT_EVERY + 1
    assert report.factor is not None and report.factor > 1.3

    # The panel now, and every version inside the time-travel window, as before.
    assert await state_at(store, KEY) == big_log.state_at(UPDATES)
    for version, state in before_states.items():
        assert await state_at(store, KEY, version) == state == big_log.state_at(version)
    # Before the fold point: 410, with where time travel starts.
    for version in (FOLD_POINT - 1, 40_000, DROP_POINT, 5):
        with pytest.raises(VersionCompacted) as refused:
            await store.load(KEY, version)
        assert refused.value.status == 410
        assert refused.value.details == {"version": version, "availableFrom": FOLD_POINT}

    # History: rows after the drop point exactly as before (folded ones with their patch,
    # computed in log order and stored); rows up to it are gone and not counted.
    for options, (entries, total) in zip(pages, before_pages, strict=True):
        after, after_total = await page(store, KEY, **options)
        assert total == UPDATES and after_total == UPDATES - DROP_POINT
        kept = [e for e in entries if e.version > DROP_POINT]
        assert [shown(e) for e in after[: len(kept)]] == [shown(e) for e in kept]
        for entry in after:
            assert (len(entry.update) == 0) == (entry.version <= FOLD_POINT)
    entries, total = await page(store, KEY, limit=10, offset=UPDATES - DROP_POINT - 10)
    assert [e.version for e in entries] == list(range(DROP_POINT + 10, DROP_POINT, -1))
    assert await page(store, KEY, limit=10, offset=UPDATES - DROP_POINT) == ([], total)
    after_window = await page(store, KEY, **windowed)
    assert [shown(e) for e in after_window[0]] == [shown(e) for e in before_window[0]]
    assert after_window[1] == before_window[1]
    assert await store.read(KEY, limit=3) == (await store.read(KEY, after=DROP_POINT, limit=3))

    # Nothing left to do; writing on, the panel goes on from the newest checkpoint.
    again = await compactor(store).run(now=now)
    assert again.outcomes == [] and again.after == report.after
    await write_panel(store, KEY, big_log, when, first=UPDATES + 1)
    assert await state_at(store, KEY) == big_log.state_at(UPDATES + 10)


async def test_keeping_everything_keeps_every_row_update_and_version(store: Store) -> None:
    log = panel_log(3_000)
    await write_panel(store, KEY, log, linear(3_000, timedelta(days=400)), every=500)
    gone = PanelKey("ws", "gone")  # deleted, then re-created: its old checkpoints are useless
    await write_panel(store, gone, log, linear(600, timedelta(days=400)), last=600, every=500)
    await store.append([Change(gone, EPOCH, b"", ChangeType.DELETED)])
    recreated = Change(gone, "e2", log.updates[0], ChangeType.CREATED, patch=[])
    assert await store.create(recreated) is not None

    report = await compactor(store, RetentionPolicy()).run()

    assert not report.errors
    assert [(o.key, o.folded, o.dropped, o.pruned) for o in report.outcomes] == [(gone, 0, 0, 1)]
    assert report.after.rows == report.before.rows == 3_000 + 602
    assert report.after.update_bytes == report.before.update_bytes
    for version in (1, 2, 499, 500, 1_234, 3_000):
        assert await state_at(store, KEY, version) == log.state_at(version)
    entries, total = await page(store, KEY, limit=3_000)
    assert total == 3_000 and all(entry.update for entry in entries)
    assert [e.patch for e in reversed(entries)] == log.patches
    assert await state_at(store, gone) == {}


async def test_a_deleted_panel_loses_its_updates_and_checkpoints_but_not_its_history(
    store: Store,
) -> None:
    log = panel_log(2_500)
    key = PanelKey("ws", "old")
    when = linear(2_501, timedelta(days=10))
    await write_panel(store, key, log, when, every=500)
    deleted = Change(key, EPOCH, b"\x00\x00", ChangeType.DELETED, occurred_at=when(2_501))
    await store.append([deleted])
    before = await page(store, key, limit=3_000)

    report = await compactor(store, RetentionPolicy.of_days(None, 1)).run()

    [outcome] = report.outcomes
    assert (outcome.folded, outcome.dropped, outcome.pruned) == (2_501, 0, 5)
    assert report.after.update_bytes == 0 and report.after.checkpoints == 0
    after = await page(store, key, limit=3_000)
    assert [shown(e) for e in after[0]] == [shown(e) for e in before[0]] and after[1] == 2_501
    assert await store.load(key) is None
    recreated = Change(key, "e2", log.updates[0], ChangeType.CREATED, patch=[])
    assert (info := await store.create(recreated)) is not None and info.version == 2_502
    assert await state_at(store, key) == {}


async def test_nothing_younger_than_the_grace_period_is_folded_or_dropped(store: Store) -> None:
    log = panel_log(2_000)
    # Version 800 is exactly as old as the grace period, the newest one 20 minutes old.
    now = datetime.now(UTC)
    when = linear(2_000, GRACE - timedelta(seconds=1_200), now)
    await write_panel(store, KEY, log, when, last=1_900, every=500)
    recent = [logged(KEY, log, version, when) for version in range(1_901, 2_001)]
    assert await store.append(recent) == list(range(1_901, 2_001))

    report = await compactor(store, RetentionPolicy.of_days(0, 0)).run(now=now)

    [outcome] = report.outcomes
    # The newest checkpoint older than the grace period is at 500: rows up to it go.
    assert (outcome.folded, outcome.dropped, outcome.pruned) == (0, 500, 0)
    assert report.after.rows == 1_500
    with pytest.raises(VersionCompacted):
        await store.load(KEY, 499)
    assert await state_at(store, KEY, 500) == log.state_at(500)
    # A retried batch of recent changes still finds its change ids: logged once.
    assert await store.append(recent) == list(range(1_901, 2_001))
    loaded = await store.load(KEY)
    assert loaded is not None and loaded.info.version == 2_000


async def test_the_server_compacts_on_its_schedule(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log = panel_log(3_000)
    store = await SqliteUpdateLog.open(data / "crdt-state.sqlite3")
    try:
        await write_panel(store, KEY, log, linear(3_000), every=500)
        settings = {"compact_interval_seconds": 0.2, "time_travel_days": 0.0}
        async with running_app(data, **settings) as app, client_of(app, token()) as api:
            maintenance = maintenance_of(store)
            assert maintenance is not None
            async with asyncio.timeout(10):
                while True:
                    plan = await maintenance.inspect(KEY, fold_before=None, drop_before=None)
                    if plan is not None and plan.folded_through == 3_000:
                        break
                    await asyncio.sleep(0.05)
            answer = await api.get("/api/state/ws/big")
            assert answer.json()["state"]["$state"] == log.state_at(3_000)
            refused = await api.get("/api/state/ws/big", params={"version": 2_999})
            assert refused.status_code == 410 and refused.json()["availableFrom"] == 3_000
    finally:
        await store.close()


async def test_a_dry_run_changes_nothing_and_estimates_what_a_run_leaves(
    store: Store, big_log: PanelLog
) -> None:
    await write_panel(store, KEY, big_log, linear(20_000), last=20_000)
    policy = RetentionPolicy.of_days(None, 0)

    dry = await compactor(store, policy).run(dry_run=True)
    assert (await compactor(store, policy).run(dry_run=True)).after == dry.after
    assert await state_at(store, KEY, 2) == big_log.state_at(2)
    real = await compactor(store, policy).run()

    assert dry.before == real.before
    assert dry.after.rows == real.after.rows and dry.after.checkpoints == real.after.checkpoints
    assert dry.after.update_bytes == real.after.update_bytes
    assert abs(dry.after.total - real.after.total) < real.before.total * 0.05
    assert dry.to_json()["folded"] == real.to_json()["folded"] == 20_000


async def test_an_interrupted_compaction_is_finished_by_the_next_run(
    store: Store, big_log: PanelLog
) -> None:
    await write_panel(store, KEY, big_log, linear(10_000), last=10_000)
    policy = RetentionPolicy.of_days(None, 0)
    maintenance = maintenance_of(store)
    assert maintenance is not None
    plan = await maintenance.inspect(
        KEY, fold_before=policy.fold_before(datetime.now(UTC)), drop_before=None
    )
    assert plan is not None and plan.fold_through == 10_000
    assert await maintenance.compact(plan, 0, 3_000) == (3_000, 0)  # then the process died

    with pytest.raises(VersionCompacted):  # marked before anything was folded
        await store.load(KEY, 5_000)
    report = await compactor(store, policy).run()

    assert report.outcomes[0].folded == 7_000 and report.after.update_bytes == 0
    assert await state_at(store, KEY) == big_log.state_at(10_000)


# -- compaction while the log is written -------------------------------------------------------


async def test_compaction_alongside_appends_loads_and_another_compaction_loses_nothing(
    open_store: OpenStore,
) -> None:
    total, every = 6_000, 250
    log = panel_log(total)
    writer, other = await open_store(), await open_store()
    problems: list[str] = []
    loads = 0
    try:
        # Everything counts as old: the fold point follows the newest checkpoint closely.
        later = datetime.now(UTC) + 2 * GRACE
        when = linear(total, timedelta(0))
        await write_panel(writer, KEY, log, when, last=2_000, every=every)
        done = asyncio.Event()

        async def write() -> None:
            try:
                for start in range(2_001, total + 1, 50):
                    batch = [logged(KEY, log, v, when) for v in range(start, start + 50)]
                    await writer.append(batch)
                    if (start + 49) % every == 0:
                        await write_checkpoint(writer, KEY)
                    await asyncio.sleep(0)
            finally:
                done.set()

        async def load() -> None:
            nonlocal loads
            while not done.is_set():
                loads += 1
                loaded = await writer.load(KEY)
                assert loaded is not None
                try:
                    state = await asyncio.to_thread(render, loaded)
                except Exception as exc:
                    problems.append(f"load at {loaded.info.version}: {exc!r}")
                    continue
                if state[STATE] != log.state_at(loaded.info.version):
                    problems.append(f"load at {loaded.info.version}: wrong state")
                await asyncio.sleep(0)

        async def compact(store: Store, policy: RetentionPolicy) -> list[CompactionReport]:
            reports = []
            while not done.is_set():
                run = compactor(store, policy, chunk_versions=97).run(now=later)
                reports.append(await run)
            return reports

        # One folds only, the other also drops the rows it folded: both at once, as two replicas'
        # schedules (or the CLI beside a server) may.
        folding, dropping = RetentionPolicy.of_days(None, 0), RetentionPolicy.of_days(0, 0)
        _, _, mine, theirs = await asyncio.gather(
            write(), load(), compact(writer, folding), compact(other, dropping)
        )
        assert problems == [] and loads > 5 and len(mine) > 1 and len(theirs) > 1
        outcomes = [o for report in mine + theirs for o in report.outcomes]
        assert [o.error for o in outcomes if o.error] == []
        # Both compactions did work while the writer wrote (how much depends on the machine's
        # pace: 388 rows folded on a loaded CI run, over 500 on most).
        assert sum(o.folded for o in outcomes) > 0 and sum(o.dropped for o in outcomes) > 0
        final = await compactor(writer, folding).run(now=later)
        assert not final.errors
        assert await state_at(writer, KEY) == log.state_at(total)
        entries = await writer.read(KEY, limit=total)
        assert [e.version for e in entries] == list(range(total - len(entries) + 1, total + 1))
        assert final.after.rows == len(entries) and final.after.update_bytes == 0
    finally:
        await writer.close()
        await other.close()


# -- `crdt-state compact` beside a real server --------------------------------------------------


@pytest.fixture
async def node() -> AsyncIterator[YjsClients]:
    async with YjsClients() as clients:
        yield clients


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crdt_state", "compact", *args],
        env={**{k: v for k, v in os.environ.items() if k != "DATABASE_URL"}, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


AUTH = {"Authorization": f"Bearer {token('reader', {'ws': 'read'})}"}
# History pages (newest first) of the newest versions, of 30,099..30,000 (folded, with patches
# computed in log order) and of 20,850..20,751 (half of it past the window).
OFFSETS = (0, 69_901, 79_150)


async def rest(server: ServerProcess, path: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.http, headers=AUTH, timeout=30) as client:
        return await client.get(f"/api/state/ws/big{path}", params=params)


async def yjs_state(node: YjsClients, server: ServerProcess, name: str) -> dict[str, Any]:
    client = await node.connect(
        name, server.yjs_url("ws"), "big", params={"token": token(name)}, within=20
    )
    state = await client.json()
    await client.destroy()
    return state


def history_of(answer: httpx.Response) -> list[dict[str, Any]]:
    """A history page as shown, but sizes (0 once an update is folded)."""
    assert answer.status_code == 200, answer.text
    return [
        {k: v for k, v in e.items() if k != "sizeBytes"}
        | {"patch": same_patch(e["version"], e["patch"])}
        for e in answer.json()["history"]
    ]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_crdt_state_compact_beside_a_running_server(
    backend: str,
    tmp_path: Path,
    big_log: PanelLog,
    node: YjsClients,
    request: pytest.FixtureRequest,
) -> None:
    data = tmp_path / "data"
    env = {"CRDT_STATE_DATA_DIR": str(data)}
    if backend == "sqlite":
        store: Store = await SqliteUpdateLog.open(data / "crdt-state.sqlite3")
    else:
        dsn = request.getfixturevalue("pg_dsn")
        await empty_tables(dsn)
        env["DATABASE_URL"] = dsn
        store = await PostgresUpdateLog.open(dsn, max_size=2)
    try:
        await write_panel(store, KEY, big_log, big_timeline(datetime.now(UTC)), last=UPDATES)
    finally:
        await store.close()
    server = ServerProcess(data, env=env).start()
    try:
        before = (await rest(server, "")).json()
        assert before["state"]["$state"] == big_log.state_at(UPDATES)
        before_yjs = await yjs_state(node, server, "first")
        versions = (70_000, FOLD_POINT, 50_000)
        before_versions = [(await rest(server, "", version=v)).json() for v in versions]
        before_history = [
            history_of(await rest(server, "/history", limit=100, offset=offset))
            for offset in OFFSETS
        ]

        policy = ("--history-days", "1", "--time-travel-days", "0.5")
        dry = await asyncio.to_thread(cli, env, "--dry-run", *policy)
        assert dry.returncode == 0, dry.stderr
        done = await asyncio.to_thread(cli, env, *policy, "--vacuum")
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""  # piped: no progress, no noise
        summary, estimate = orjson.loads(done.stdout), orjson.loads(dry.stdout)
        assert summary["panels"] == summary["compacted"] == 1 and summary["failed"] == 0
        assert summary["folded"] == estimate["folded"] == FOLD_POINT - DROP_POINT
        assert summary["dropped"] == estimate["dropped"] == DROP_POINT
        assert summary["after"]["rows"] == estimate["after"]["rows"] == UPDATES - DROP_POINT
        assert summary["factor"] > 1.3 and summary["vacuumed"]
        assert (await rest(server, "")).json()["state"] == before["state"]  # the live room
    finally:
        server.stop()

    server.start()  # cold: rooms load from the newest checkpoint
    try:
        assert (await rest(server, "")).json()["state"] == before["state"]
        assert await yjs_state(node, server, "cold") == before_yjs
        inside = await rest(server, "", version=70_000)
        assert inside.json()["state"] == before_versions[0]["state"]
        assert (await rest(server, "", version=FOLD_POINT)).json() == before_versions[1]
        outside = await rest(server, "", version=50_000)
        assert outside.status_code == 410 and before_versions[2]["version"] == 50_000
        assert outside.json()["error"] == "version_compacted"
        assert outside.json()["availableFrom"] == FOLD_POINT
        newest = history_of(await rest(server, "/history", limit=100))
        assert newest == before_history[0]
        folded = history_of(await rest(server, "/history", limit=100, offset=OFFSETS[1]))
        assert folded == before_history[1]
        answer = await rest(server, "/history", limit=100, offset=OFFSETS[2])
        assert answer.json()["totalChanges"] == UPDATES - DROP_POINT
        assert history_of(answer) == [e for e in before_history[2] if e["version"] > DROP_POINT]
    finally:
        server.stop()


def test_the_cli_says_what_is_wrong_without_a_traceback(tmp_path: Path) -> None:
    missing = cli({"CRDT_STATE_DATA_DIR": str(tmp_path / "none")})
    assert missing.returncode == 2 and "no database at" in missing.stderr
    assert not (tmp_path / "none").exists()
    lonely = cli({"CRDT_STATE_DATA_DIR": str(tmp_path)}, "--panel", "p")
    assert lonely.returncode == 2 and "--workspace" in lonely.stderr
    negative = cli({"CRDT_STATE_DATA_DIR": str(tmp_path)}, "--history-days", "-1")
    assert negative.returncode == 2 and "0 or more" in negative.stderr


async def test_on_a_terminal_the_cli_shows_progress_and_a_summary(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = await SqliteUpdateLog.open(data / "crdt-state.sqlite3")
    try:
        await write_panel(store, KEY, panel_log(3_000), linear(3_000), every=500)
    finally:
        await store.close()
    code, text = await asyncio.to_thread(
        on_a_terminal,
        [sys.executable, "-m", "crdt_state", "compact", "--time-travel-days", "0"],
        {**os.environ, "CRDT_STATE_DATA_DIR": str(data)},
    )
    assert code == 0, text
    assert "compacted 1 of 1 panels" in text and "stored bytes" in text and "x less" in text
    assert "3,000 updates folded" in text


def on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run a command with stdout and stderr on a pseudo-terminal; its exit code and output."""
    primary, secondary = os.openpty()
    with subprocess.Popen(args, env=env, stdout=secondary, stderr=secondary) as process:
        os.close(secondary)
        output = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the command closed the terminal
                break
            if not chunk:
                break
            output += chunk
        os.close(primary)
        return process.wait(timeout=60), output.decode(errors="replace")
