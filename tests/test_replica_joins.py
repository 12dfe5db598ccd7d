"""A join on any replica gets every update any replica committed before it began.

Two replicas on PostgreSQL + Redis; a client on the second holds the panel while a client on
the first writes 20,000 updates as fast as it can (the second replica applies them live and
falls behind in the burst). Once they are all committed, 20 clients join through both
replicas at once: every one syncs within seconds and has the full state at the moment its
provider reports synced. `make replica-joins` repeats it 20 times
(CRDT_STATE_JOIN_RUNS=20); the suite runs it twice.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from . import redis_server
from .conftest import token
from .server import ServerProcess
from .yjs_client import YjsClients

RUNS = int(os.environ.get("CRDT_STATE_JOIN_RUNS", "2"))
UPDATES = int(os.environ.get("CRDT_STATE_JOIN_UPDATES", "20000"))
JOINERS = 20
SYNC_WITHIN = 10.0  # seconds for every joiner to sync


@pytest.fixture
async def replicas(clean_pg: str, tmp_path: Path) -> AsyncIterator[list[ServerProcess]]:
    env = {
        "DATABASE_URL": clean_pg,
        "REDIS_URL": redis_server.url(),
        "CRDT_STATE_RATE_YJS_UPDATES": "0",  # the writer bursts on purpose
    }
    started = [ServerProcess(tmp_path / name, env=env).start() for name in "ab"]
    yield started
    for process in started:
        process.stop()


async def committed_version(server: ServerProcess, ws: str, panel: str) -> int:
    headers = {"Authorization": f"Bearer {token('reader', {ws: 'read'})}"}
    async with httpx.AsyncClient(headers=headers, timeout=10) as http:
        answer = await http.get(f"{server.http}/api/state/{ws}/{panel}")
        return int(answer.json()["version"]) if answer.status_code == 200 else 0


@pytest.mark.parametrize("run", range(RUNS))
async def test_joins_on_both_replicas_get_every_committed_update_at_sync(
    replicas: list[ServerProcess], run: int
) -> None:
    first, second = replicas
    ws, panel = f"join{uuid.uuid4().hex[:8]}", "cold"
    params = {"token": token("writer", {ws: "write"})}
    async with YjsClients() as node:
        await node.connect("holder", second.yjs_url(ws), panel, params=params)
        await node.connect("writer", first.yjs_url(ws), panel, params=params)
        await node.burst("writer", UPDATES)
        deadline = time.monotonic() + 120
        while await committed_version(first, ws, panel) < 1 + UPDATES:
            assert time.monotonic() < deadline, "the burst was not committed in time"
            await asyncio.sleep(0.1)  # polling another process's log: no event to await

        async def join(n: int) -> tuple[int | None, float]:
            server = replicas[n % 2]
            started = time.monotonic()
            client = await node.connect(
                f"joiner{n}", server.yjs_url(ws), panel, params=params, within=SYNC_WITHIN
            )
            return client.keys_at_sync, time.monotonic() - started

        joined = await asyncio.gather(*(join(n) for n in range(JOINERS)))
    keys = [count for count, _ in joined]
    assert keys == [UPDATES] * JOINERS, f"keys at sync: {keys}"
    assert max(took for _, took in joined) < SYNC_WITHIN
