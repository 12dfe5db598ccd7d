"""Group commit: live updates share a transaction, waited-for writes go at once, views ride
along."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from adapters.sqlite import SqliteUpdateLog
from crdt_state.committer import Committer
from crdt_state.model import Change, ChangeType, PanelKey, PanelView
from crdt_state.ports import UpdateLog

KEY = PanelKey("ws", "p")


@pytest.fixture
async def store(tmp_path: Path):
    log = await SqliteUpdateLog.open(tmp_path / "log.sqlite3")
    info = await log.create(
        Change(key=KEY, epoch="e1", update=b"u", change_type=ChangeType.CREATED)
    )
    assert info is not None
    yield log
    await log.close()


async def started(store: UpdateLog, window_seconds: float) -> Committer:
    committer = Committer(store, window_seconds=window_seconds)
    committer.start(probe_seconds=0)
    return committer


def live(n: int) -> list[Change]:
    return [Change(key=KEY, epoch="e1", update=f"u{i}".encode()) for i in range(n)]


def stored_view_version(path: Path) -> int | None:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT state_version FROM panels WHERE panel_id = 'p'").fetchone()
    return row[0]


async def test_live_updates_of_one_window_share_one_transaction(store: UpdateLog) -> None:
    committer = await started(store, window_seconds=0.05)
    futures = [committer.submit(change) for change in live(50)]
    assert await asyncio.gather(*futures) == list(range(2, 52))
    assert committer.batches == 1
    await committer.close()


async def test_a_waited_for_change_does_not_wait_out_the_window(store: UpdateLog) -> None:
    committer = await started(store, window_seconds=30)
    queued = [committer.submit(change) for change in live(3)]
    waited_for = live(1)[0]
    waited_for.urgent = True
    urgent = committer.submit(waited_for)
    # Written at once, and after what was queued before it: the log keeps submission order.
    assert await asyncio.wait_for(urgent, 5) == 5
    assert [f.result() for f in queued] == [2, 3, 4]
    await committer.close()


async def test_a_lone_live_update_is_committed_when_its_window_ends(store: UpdateLog) -> None:
    committer = await started(store, window_seconds=0.02)
    assert await asyncio.wait_for(committer.submit(live(1)[0]), 5) == 2
    await committer.close()


async def test_a_view_rides_in_the_next_batch_and_a_newer_one_replaces_a_waiting_one(
    store: UpdateLog, tmp_path: Path
) -> None:
    committer = await started(store, window_seconds=0.05)
    version = committer.submit(live(1)[0])
    older = committer.save_view(PanelView(KEY, "e1", 1, {"$state": {"v": 1}}))
    newer = committer.save_view(PanelView(KEY, "e1", 2, {"$state": {"v": 2}}))
    assert await older is False  # replaced before it was written
    assert await version == 2
    assert await newer is True
    assert committer.batches == 1  # the view cost no transaction of its own
    assert stored_view_version(tmp_path / "log.sqlite3") == 2
    await committer.close()


async def test_flush_writes_waiting_changes_and_views_at_once(
    store: UpdateLog, tmp_path: Path
) -> None:
    committer = await started(store, window_seconds=30)
    version = committer.submit(live(1)[0])
    view = committer.save_view(PanelView(KEY, "e1", 2, {"$state": {}}))
    await asyncio.wait_for(committer.flush(), 5)
    assert version.result() == 2 and view.result() is True
    assert stored_view_version(tmp_path / "log.sqlite3") == 2
    await committer.close()


def test_change_ids_never_repeat_not_even_in_a_forked_worker() -> None:
    import os

    from crdt_state.model import next_change_id

    ids = {next_change_id() for _ in range(10_000)}
    assert len(ids) == 10_000 and all(len(i) == 32 for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child writes the id it would give next, and leaves at once
        os.write(write, next_change_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert child not in ids and child[:16] != next_change_id()[:16]
