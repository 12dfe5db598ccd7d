"""The server on PostgreSQL: several processes, kill -9, and the database restarting."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.postgres import PostgresUpdateLog
from crdt_state.document import PanelDoc
from crdt_state.model import PanelKey
from crdt_state.replay import rebuild

from .conftest import token
from .pg import restartable
from .server import ServerProcess
from .yjs_client import YjsClients

AUTH = {"Authorization": f"Bearer {token('agent', {'ws': 'admin'})}"}


@pytest.fixture
async def node():
    async with YjsClients() as clients:
        yield clients


def on_postgres(folder: Path, dsn: str) -> ServerProcess:
    return ServerProcess(folder, env={"DATABASE_URL": dsn, "CRDT_STATE_CHECKPOINT_EVERY": "100"})


async def logged_state(dsn: str, panel: str) -> tuple[dict[str, Any], list[int]]:
    """The panel as the log alone has it (no server involved), and its versions."""
    log = await PostgresUpdateLog.open(dsn)
    try:
        key = PanelKey("ws", panel)
        loaded = await log.load(key)
        assert loaded is not None
        versions = [entry.version for entry in await log.read(key, limit=100_000)]
        return PanelDoc(rebuild(loaded)).render()["$state"], versions
    finally:
        await log.close()


async def test_two_servers_writing_one_panel_leave_a_gapless_log(clean_pg, tmp_path, node):
    one, two = on_postgres(tmp_path / "1", clean_pg), on_postgres(tmp_path / "2", clean_pg)
    one.start(), two.start()
    try:
        params = {"token": token("ann")}
        a = await node.connect("a", one.yjs_url("ws"), "p", params=params)
        b = await node.connect("b", two.yjs_url("ws"), "p", params=params)

        async def write(client: Any, prefix: str) -> None:
            for i in range(60):
                await client.set(["$state", f"{prefix}{i}"], i)

        async def patch(server: ServerProcess, prefix: str) -> None:
            async with httpx.AsyncClient(base_url=server.http, headers=AUTH) as rest:
                for i in range(20):
                    answer = await rest.patch(
                        "/api/state/ws/p",
                        json={
                            "patches": [{"op": "add", "path": f"/$state/{prefix}{i}", "value": i}]
                        },
                    )
                    assert answer.status_code == 200, answer.text

        await asyncio.gather(write(a, "a"), write(b, "b"), patch(one, "r"), patch(two, "s"))
        for client in (a, b):
            await client.destroy()
    finally:
        one.stop(), two.stop()  # graceful: every pending write is flushed
    state, versions = await logged_state(clean_pg, "p")
    assert versions == list(range(1, len(versions) + 1))  # no gap, no duplicate
    expected = {
        f"{p}{i}": i for p, n in (("a", 60), ("b", 60), ("r", 20), ("s", 20)) for i in range(n)
    }
    assert state == expected
    three = on_postgres(tmp_path / "3", clean_pg).start()
    try:
        viewer = await node.connect(
            "viewer", three.yjs_url("ws"), "p", params={"token": token("vic")}
        )
        await viewer.wait_json_equals(expected)
        rest = httpx.get(f"{three.http}/api/state/ws/p", headers=AUTH).json()
        assert rest["state"]["$state"] == expected and rest["version"] == versions[-1]
    finally:
        three.stop()


async def test_kill_9_loses_no_acknowledged_update(clean_pg, tmp_path, node):
    server = on_postgres(tmp_path, clean_pg).start()
    writer = await node.connect("w", server.yjs_url("ws"), "k", params={"token": token("w")})
    sent: list[tuple[int, float]] = []
    acked: list[int] = []
    killed = asyncio.Event()

    async def live_edits() -> None:
        i = 0
        while not killed.is_set():
            await writer.set(["$state", f"k{i}"], i)
            sent.append((i, time.monotonic()))
            i += 1
            await asyncio.sleep(0.005)

    async def rest_edits() -> None:
        async with httpx.AsyncClient(base_url=server.http, headers=AUTH, timeout=5) as rest:
            j = 0
            while not killed.is_set():
                try:
                    answer = await rest.patch(
                        "/api/state/ws/k",
                        json={"patches": [{"op": "add", "path": f"/$state/r{j}", "value": j}]},
                    )
                except httpx.TransportError:
                    return
                if answer.status_code == 200:
                    acked.append(j)
                j += 1

    streams = asyncio.gather(live_edits(), rest_edits())
    await asyncio.sleep(1.5)  # let the streams run: this is the load, not a synchronization
    server.kill()
    killed_at = time.monotonic()
    killed.set()
    await streams
    state, versions = await logged_state(clean_pg, "k")
    assert versions == list(range(1, len(versions) + 1))
    assert acked and all(state.get(f"r{j}") == j for j in acked)
    # A live update is committed within the group-commit window (2 ms); allow 250 ms.
    settled = [i for i, at in sent if at < killed_at - 0.25]
    assert settled and all(state.get(f"k{i}") == i for i in settled)
    server.start()  # same port: the client reconnects by itself and sends what it has
    mine = await writer.state()
    watcher = await node.connect("v", server.yjs_url("ws"), "k", params={"token": token("v")})
    await watcher.wait_json_equals(mine, within=15)
    server.stop()


async def test_the_server_rides_out_a_database_restart(clean_pg, tmp_path, node, cluster):
    server = on_postgres(tmp_path, clean_pg).start()
    writer = await node.connect("w", server.yjs_url("ws"), "d", params={"token": token("w")})
    acked: dict[int, int] = {}
    refused_with_retry_after = 0
    stop = asyncio.Event()

    async def rest_edits() -> None:
        nonlocal refused_with_retry_after
        async with httpx.AsyncClient(base_url=server.http, headers=AUTH, timeout=30) as rest:
            j = 0
            while not stop.is_set():
                body = {"patches": [{"op": "add", "path": f"/$state/r{j}", "value": j}]}
                answer = await rest.patch(
                    "/api/state/ws/d", json=body, headers={"Idempotency-Key": f"r{j}"}
                )
                if answer.status_code == 503:
                    assert answer.headers.get("retry-after")
                    refused_with_retry_after += 1
                    await asyncio.sleep(0.2)  # a client honouring Retry-After, shortened
                    continue  # the same j again, with the same key
                assert answer.status_code == 200, answer.text
                acked[j] = answer.json()["version"]
                j += 1

    async def live_edits() -> None:
        i = 0
        while not stop.is_set():
            await writer.set(["$state", f"k{i}"], i)
            i += 1
            await asyncio.sleep(0.01)

    async with restartable(cluster):
        streams = asyncio.gather(rest_edits(), live_edits())
        await asyncio.sleep(0.5)
        await asyncio.to_thread(cluster.stop, "fast")
        async with httpx.AsyncClient(base_url=server.http) as probe:
            for _ in range(100):  # the probe notices within its 1 s period
                if (await probe.get("/ready")).status_code == 503:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("/ready did not report the database down")
            # A write while the database is known to be down is refused, and changes nothing.
            refused = await probe.patch(
                "/api/state/ws/d",
                headers=AUTH,
                json={"patches": [{"op": "add", "path": "/$state/refused", "value": 1}]},
            )
            assert refused.status_code == 503 and refused.headers["retry-after"]
            assert refused.json()["error"] == "unavailable"
            await asyncio.sleep(1.0)  # the streams meet the outage too
            await asyncio.to_thread(cluster.start)
            for _ in range(150):
                if (await probe.get("/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the server did not recover without a restart")
        await asyncio.sleep(0.5)
        stop.set()
        await streams
    mine = await writer.state()
    async with httpx.AsyncClient(base_url=server.http, headers=AUTH) as rest:
        history = (await rest.get("/api/state/ws/d/history", params={"limit": 1000})).json()
        final = (await rest.get("/api/state/ws/d")).json()
    server.stop()
    state, versions = await logged_state(clean_pg, "d")
    assert versions == list(range(1, len(versions) + 1))
    for j, version in acked.items():
        assert state[f"r{j}"] == j
        writes = [
            e
            for e in history["history"]
            if any(op["path"] == f"/$state/r{j}" for op in e["patch"] or [])
        ]
        assert [e["version"] for e in writes] == [version]  # exactly once, where acknowledged
    assert {k: v for k, v in mine.items() if k.startswith("k")}.items() <= state.items()
    assert final["state"]["$state"] == state
    assert "refused" not in state
