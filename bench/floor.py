"""What a live update costs on this stack, stage by stage, measured in-process.

The fan-out workload's update (one writer overwrites its key of `$state` with `{s, t}`, as
bench/js/loadgen.mjs does) is put through each stage the server must run, N times at the
fan-out workload's pace (400 updates/s: the server idles between updates, as it does serving
the workload, and a warm tight loop would cost much less: the interpreter's and the CPU's caches
go cold in between), and the process CPU (every thread) is divided by N:

- `pace`: nothing but the pauses between updates (their timer wake-ups): subtracted from the
  stages below in the report.
- `crdt`: pycrdt applies the update in a transaction (yrs: the CRDT itself).
- `crdt_events`: the same with what the room observes: the transaction's update captured and
  the deep change events turned into the JSON Patch the log keeps.
- `guard`: the update guard's decoding and checks (docs/SECURITY.md: every client update
  is read before pycrdt sees it).
- `room`: the whole in-process path of a client update through a real room on SQLite (guard,
  apply, events, the change record, the group commit and the durable append on the log's
  thread, fsync included), without the network: `Room.apply` through the room's actor, the
  group commit batching what came in its window as it does live.

The report (docs/BENCHMARKS.md, "The floor of the stack") sets these beside the relay floor
(bench/servers/relay_floor.py: uvicorn + websockets relaying frames, no document) and
y-websocket, from `make bench-compare`.

    python -m bench.floor > bench/results/floor.json
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pycrdt import Doc, Map

from adapters.git import GitSnapshotRepository
from adapters.local import LocalFanout
from adapters.sqlite import SqliteUpdateLog
from crdt_state.config import Settings
from crdt_state.document import PanelDoc
from crdt_state.model import Attribution, PanelKey, TriggeredBy
from crdt_state.patch_events import PatchRecorder
from crdt_state.server import Server
from crdt_state.update_guard import UpdateGuard

from .machine import machine, our_versions

UPDATES = 2000
REPEATS = 3
WRITERS = 4  # the fan-out room: 4 clients, each writing its own key
PACE_S = 1 / 400  # the fan-out workload: 50 rooms × 4 writers × 2 updates/s
WHO = Attribution(TriggeredBy.USER, "bench", "bench")


def client_updates(count: int) -> list[bytes]:
    """The fan-out workload's updates: writers w0..w3 in turn, each `{s, t}` on its key."""
    writers = []
    for w in range(WRITERS):
        doc = Doc(client_id=1000 + w)
        updates: list[bytes] = []
        doc.observe(lambda event, updates=updates: updates.append(event.update))
        writers.append((doc, doc.get("$state", type=Map), updates))
    out: list[bytes] = []
    for i in range(count):
        doc, state, updates = writers[i % WRITERS]
        state[f"w{i % WRITERS}"] = {"s": i // WRITERS, "t": time.monotonic() * 1000}
        out.append(updates[-1])
    return out


def per_update_us(run: Callable[[list[bytes]], None], updates: list[bytes]) -> float:
    """Median over REPEATS of process CPU per update, the garbage collector paused."""
    samples = []
    for _ in range(REPEATS):
        gc.collect()
        gc.disable()
        try:
            started = time.process_time()
            run(updates)
            samples.append((time.process_time() - started) / len(updates) * 1e6)
        finally:
            gc.enable()
    return statistics.median(samples)


def pace(updates: list[bytes]) -> None:
    for _ in updates:
        time.sleep(PACE_S)


async def _apace(updates: list[bytes]) -> None:
    for _ in updates:
        await asyncio.sleep(PACE_S)


def apace(updates: list[bytes]) -> None:
    asyncio.run(_apace(updates))


def crdt(updates: list[bytes]) -> None:
    doc = Doc()
    doc.get("$state", type=Map)
    for update in updates:
        with doc.transaction(origin="client"):
            doc.apply_update(update)
        time.sleep(PACE_S)


def crdt_events(updates: list[bytes]) -> None:
    panel = PanelDoc(Doc())
    captured: list[bytes] = []
    subscription = panel.doc.observe(lambda event: captured.append(event.update))
    recorder = PatchRecorder(panel)
    for update in updates:
        with panel.doc.transaction(origin="client"):
            panel.doc.apply_update(update)
        recorder.take()
        captured.clear()
        time.sleep(PACE_S)
    recorder.close()
    panel.doc.unobserve(subscription)


def guard(updates: list[bytes]) -> None:
    checker = UpdateGuard()
    for update in updates:
        checker.commit(checker.check(update, may_write_computed=False))
        time.sleep(PACE_S)


def room(updates: list[bytes]) -> None:
    asyncio.run(_room(updates))


async def _room(updates: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder)
        store = await SqliteUpdateLog.open(path / "log.sqlite3")
        settings = Settings(room_idle_seconds=0, snapshot_interval_seconds=0)
        server = Server(store, LocalFanout(), GitSnapshotRepository(path / "git"), settings)
        server.start(probe_seconds=0)
        try:
            key = PanelKey("bench", "floor")
            live = await server.registry.open(key, create=True, subject="bench")
            origin = object()  # a client connection: its updates are checked
            last = None
            for update in updates:
                last = await live.call(live.apply, update, origin, WHO) or last
                await asyncio.sleep(PACE_S)
            if last is not None:
                await server.registry.pipeline.acknowledged(live, last)
        finally:
            await server.close()
            await store.close()


STAGES: dict[str, Callable[[list[bytes]], None]] = {
    "pace": pace,
    "apace": apace,  # the same paused by the event loop (the room stage's pauses)
    "crdt": crdt,
    "crdt_events": crdt_events,
    "guard": guard,
    "room": room,
}


def main() -> None:
    updates = client_updates(UPDATES)
    stages = {}
    for name, run in STAGES.items():
        stages[name] = round(per_update_us(run, updates), 1)
        print(f"[floor] {name}: {stages[name]} µs per update", file=sys.stderr, flush=True)
    result: dict[str, Any] = {
        "command": "python -m bench.floor",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "updates": UPDATES,
        "repeats": REPEATS,
        "writers": WRITERS,
        "pace_updates_per_s": round(1 / PACE_S),
        "us_per_update": stages,
        "machine": machine(),
        "versions": our_versions(),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
