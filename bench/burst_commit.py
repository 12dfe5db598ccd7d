"""One client writing 20,000 updates as fast as it can: how long after its last update is every
update in the log? (issue 15's goal: within 1 s, on both stores.)

    python -m bench.burst_commit [--updates 20000] [--repeats 3] [--stores sqlite,postgres]

A real y-websocket client (tests/js, driven by tests/yjs_client.py) on a fresh `crdt-state serve`
(SQLite in a fresh folder; PostgreSQL in a fresh database of the machine's server) sends
`updates` one-key transactions as fast as its socket takes them. The clock starts when the
client has made its last update and stops when the log itself (the SQLite file or the
PostgreSQL table, not the server) holds the last version. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.pg import logged_version
from tests.server import ServerProcess
from tests.yjs_client import YjsClients

from .launchers import _create_database, _drop_database


async def logged_sqlite(path: Path, ws: str, panel: str) -> int:
    def read() -> int:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            row = conn.execute(
                "SELECT max(version) FROM state_history WHERE workspace_id = ? AND panel_id = ?",
                (ws, panel),
            ).fetchone()
        return int(row[0] or 0)

    return await asyncio.to_thread(read)


async def one_run(store: str, updates: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="crdt-burst-"))
    env = {"CRDT_STATE_RATE_YJS_UPDATES": "0", "DATABASE_URL": "", "REDIS_URL": ""}
    database = None
    if store == "postgres":
        database = f"crdt_burst_{os.getpid()}_{int(time.time() * 1000)}"
        env["DATABASE_URL"] = await asyncio.to_thread(_create_database, database)
    server = ServerProcess(folder, dev=True, env=env, args=["--log-level", "warning"]).start()
    try:
        ws, panel = "bench", "burst"
        async with YjsClients() as node:
            await node.connect("writer", server.yjs_url(ws), panel)
            first = time.monotonic()
            await node.burst("writer", updates, prefix="k")
            last = time.monotonic()
            target = 1 + updates  # the panel's creation is version 1
            while True:
                if store == "postgres":
                    assert database is not None
                    have = await logged_version(env["DATABASE_URL"], ws, panel)
                else:
                    have = await logged_sqlite(folder / "crdt-state.sqlite3", ws, panel)
                if have >= target:
                    break
                if time.monotonic() - last > 120:
                    raise RuntimeError(f"{store}: only {have} of {target} versions logged")
                await asyncio.sleep(0.01)  # polling the log: the only way to see it
            done = time.monotonic()
        return {
            "store": store,
            "updates": updates,
            "send_s": round(last - first, 3),
            "logged_after_last_s": round(done - last, 3),
        }
    finally:
        server.stop()
        if database is not None:
            await asyncio.to_thread(_drop_database, database)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stores", default="sqlite,postgres")
    options = parser.parse_args()
    runs = []
    for _ in range(options.repeats):
        for store in options.stores.split(","):
            runs.append(await one_run(store, options.updates))
    summary = {
        store: {
            "logged_after_last_s_median": statistics.median(
                r["logged_after_last_s"] for r in runs if r["store"] == store
            ),
            "logged_after_last_s_max": max(
                r["logged_after_last_s"] for r in runs if r["store"] == store
            ),
        }
        for store in options.stores.split(",")
    }
    print(json.dumps({"runs": runs, "summary": summary}, indent=2))


GOAL_S = 1.0  # issue 15: every update committed within 1 s of the last


def burst_section(result: dict[str, Any] | None) -> list[str]:
    """docs/BENCHMARKS.md's section on bench/results/burst.json (`make bench` writes it)."""
    if not result:
        return []
    runs = result["runs"]
    lines = [
        "## One client writing as fast as it can",
        "",
        f"`python -m bench.burst_commit` (part of `make bench`): one real y-websocket client "
        f"sends {runs[0]['updates']:,} one-key updates as fast as its socket takes them to a "
        "fresh server; the clock runs from its last update until the log itself (the SQLite "
        "file, the PostgreSQL table) holds the last version. Goal (issue 15): within "
        f"{GOAL_S:g} s on both stores.",
        "",
        "| store | client sent all in (s) | logged after the last, median (s) | max (s) | goal |",
        "|---|---|---|---|---|",
    ]
    for store, summary in result["summary"].items():
        mine = [r for r in runs if r["store"] == store]
        sent = statistics.median(r["send_s"] for r in mine)
        median = summary["logged_after_last_s_median"]
        verdict = (
            "met"
            if summary["logged_after_last_s_max"] <= GOAL_S
            else (f"**missed** by {median - GOAL_S:.2f} s ({median / GOAL_S:.1f}×)")
        )
        lines.append(
            f"| {store} | {sent:.2f} | {median:.2f} | {summary['logged_after_last_s_max']:.2f} "
            f"| {verdict} |"
        )
    lines += [
        "",
        "The server is CPU-bound on one interpreter lock while it catches up: a py-spy profile "
        "of the SQLite run (2026-12-04) put ~65 % of the busy samples on the event loop "
        "(applying each update to the doc with its change events ~25 %, reading frames, "
        "the room actor, change records) and ~30 % on the log's thread (building and "
        "inserting the rows ~18 %, and a checkpoint replay of the log tail ~14 %, since a "
        "room that is never quiet checkpoints by replaying its log); ~95 µs of Python per "
        "update in all. Meeting the goal needs ~30 % less per update: computing the JSON "
        "Patch of a client's update from the update guard's own decoding instead of pycrdt's "
        "change events, and checkpoints that wait for a quiet moment, are the levers "
        "measured as largest.",
        "",
    ]
    return lines


if __name__ == "__main__":
    asyncio.run(main())
