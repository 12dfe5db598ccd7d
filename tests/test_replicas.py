"""Several replica processes sharing PostgreSQL and Redis: one state, seen from any of them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from . import redis_server
from .conftest import token
from .server import ServerProcess, free_port
from .yjs_client import YjsClients

AUTH = {"Authorization": f"Bearer {token('agent', {'*': 'admin'})}"}


def replica(folder: Path, dsn: str) -> ServerProcess:
    return ServerProcess(folder, env={"DATABASE_URL": dsn, "REDIS_URL": redis_server.url()})


@pytest.fixture
async def replicas(clean_pg: str, tmp_path: Path) -> AsyncIterator[list[ServerProcess]]:
    started = [replica(tmp_path / name, clean_pg).start() for name in "abc"]
    yield started
    for process in started:
        process.stop()


@pytest.fixture
async def node() -> AsyncIterator[YjsClients]:
    async with YjsClients() as clients:
        yield clients


@pytest.fixture
def ws() -> str:
    return f"w{uuid.uuid4().hex[:8]}"  # Redis channels are shared: one workspace per test


def user(name: str, ws: str) -> dict[str, str]:
    return {"token": token(name, {ws: "write"})}


class Proxy:
    """A TCP forwarder standing in for a load balancer: new connections go to the first
    replica that is still up."""

    def __init__(self, targets: list[int]) -> None:
        self.targets = targets
        self.port = free_port()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Proxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for port in self.targets:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                continue
        else:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def json_subscriber(server: ServerProcess, ws: str, panel: str) -> Any:
    sock = await connect(f"{server.ws}/ws/state/{ws}?token={token('sub', {ws: 'read'})}")
    await sock.send(json.dumps({"type": "subscribe", "panelId": panel}))
    return sock


async def next_of(sock: Any, kind: str) -> dict[str, Any]:
    while True:
        message = json.loads(await asyncio.wait_for(sock.recv(), 10))
        if message["type"] == kind:
            return message


async def test_clients_on_different_replicas_share_state_presence_and_rest(replicas, node, ws):
    a, b, c = replicas
    on_a = await node.connect(
        "on_a", a.yjs_url(ws), "p", params=user("ann", ws), awareness={"user": "ann"}
    )
    on_c = await node.connect(
        "on_c", c.yjs_url(ws), "p", params=user("cat", ws), awareness={"user": "cat"}
    )
    await on_a.set(["$state", "from_a"], 1)
    await on_c.set(["$state", "from_c"], 2)
    await on_a.wait_json_equals({"from_a": 1, "from_c": 2})
    await on_c.wait_json_equals({"from_a": 1, "from_c": 2})
    await on_c.wait_peers(1, match={"user": "ann"})  # presence set on A is seen on C
    subscriber = await json_subscriber(c, ws, "p")
    synced = await next_of(subscriber, "state_sync")
    answer = httpx.patch(
        f"{b.http}/api/state/{ws}/p",
        headers=AUTH,
        json={"patches": [{"op": "add", "path": "/$state/from_b", "value": 3}]},
    )
    assert answer.status_code == 200, answer.text
    await on_a.wait_for(["$state", "from_b"], 3)  # a PATCH on B reaches a Yjs client on A
    update = await next_of(subscriber, "state_update")  # ... and a JSON subscriber on C
    while update["version"] < answer.json()["version"]:
        update = await next_of(subscriber, "state_update")
    assert update["version"] == answer.json()["version"]
    assert update["patch"] == [{"op": "add", "path": "/$state/from_b", "value": 3}]
    assert synced["version"] < update["version"]
    await subscriber.close()


async def test_a_killed_replica_loses_nothing_and_its_presence_goes(replicas, node, ws):
    a, b, c = replicas
    async with Proxy([a.port, b.port]) as proxy:
        base = f"ws://127.0.0.1:{proxy.port}/ws/yjs/{ws}"
        writer = await node.connect(
            "writer", base, "k", params=user("wes", ws), awareness={"user": "wes"}
        )
        ghost = await node.connect(
            "ghost", a.yjs_url(ws), "k", params=user("gil", ws), awareness={"user": "ghost"}
        )
        watcher = await node.connect(
            "watcher", c.yjs_url(ws), "k", params=user("vic", ws), awareness={"user": "vic"}
        )
        await watcher.wait_peers(2, match={"user": "ghost"})
        acked: list[int] = []

        async def stream() -> None:
            async with httpx.AsyncClient(base_url=c.http, headers=AUTH) as rest:
                for j in range(40):
                    answer = await rest.patch(
                        f"/api/state/{ws}/k",
                        json={"patches": [{"op": "add", "path": f"/$state/r{j}", "value": j}]},
                    )
                    if answer.status_code == 200:
                        acked.append(j)
                    await writer.set(["$state", f"k{j}"], j)
                    await asyncio.sleep(0.02)

        streaming = asyncio.create_task(stream())
        await asyncio.sleep(0.3)
        a.kill()  # the writer's connection (through the proxy) was on A
        await streaming
        await ghost.destroy()
        # The ghost's presence goes once A stops heart-beating; the writer comes back via B.
        await watcher.wait_peers(1, match={"user": "wes"}, within=10)
        mine = await writer.state()
        await watcher.wait_json_equals(mine, within=15)
        state = httpx.get(f"{c.http}/api/state/{ws}/k", headers=AUTH).json()["state"]["$state"]
        assert all(state[f"r{j}"] == j for j in acked)
        assert state == mine


async def test_replicas_converge_after_redis_restarts(replicas, node, ws):
    b = replicas[1]
    clients = [
        await node.connect(f"u{i}", server.yjs_url(ws), "r", params=user(f"u{i}", ws))
        for i, server in enumerate(replicas)
    ]
    with redis_server.stopped():
        for i, client in enumerate(clients):
            await client.set(["$state", f"during{i}"], i)  # live fan-out is down
        answer = httpx.patch(
            f"{b.http}/api/state/{ws}/r",
            headers=AUTH,
            json={"patches": [{"op": "add", "path": "/$state/rest", "value": True}]},
        )
        assert answer.status_code == 200, answer.text  # the log does not need Redis
    for i, client in enumerate(clients):
        await client.set(["$state", f"after{i}"], i)
    expected = {
        **{f"during{i}": i for i in range(3)},
        **{f"after{i}": i for i in range(3)},
        "rest": True,
    }
    for client in clients:
        await client.wait_json_equals(expected, within=20)
    for server in replicas:
        body = httpx.get(f"{server.http}/api/state/{ws}/r", headers=AUTH).json()
        assert body["state"]["$state"] == expected


async def test_reads_on_a_replica_without_the_doc_come_from_the_cache(replicas, node, ws):
    a, _, c = replicas
    panels = [f"p{i}" for i in range(10)]
    for panel in panels:
        httpx.put(
            f"{a.http}/api/state/{ws}/{panel}", headers=AUTH, json={"state": {"$state": {"n": 0}}}
        )
    before = metrics(c)
    with httpx.Client(base_url=c.http, headers=AUTH) as rest:
        for round_ in range(10):
            for panel in panels:
                assert rest.get(f"/api/state/{ws}/{panel}").status_code == 200
            if round_ % 3 == 0:  # some writes in the mix, on another replica
                answer = httpx.patch(
                    f"{a.http}/api/state/{ws}/p0",
                    headers=AUTH,
                    json={"patches": [{"op": "replace", "path": "/$state/n", "value": round_}]},
                )
                seen = rest.get(f"/api/state/{ws}/p0").json()
                # A read after an acknowledged change never returns an older state.
                assert seen["version"] >= answer.json()["version"]
                assert seen["state"]["$state"]["n"] == round_
    after = metrics(c)
    hits = after["crdt_state_cache_hits_total"] - before["crdt_state_cache_hits_total"]
    misses = after["crdt_state_cache_misses_total"] - before["crdt_state_cache_misses_total"]
    assert hits / (hits + misses) > 0.8, (hits, misses)


def metrics(server: ServerProcess) -> dict[str, float]:
    text = httpx.get(f"{server.http}/metrics").text
    return {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


async def test_history_patches_follow_log_order_when_replicas_write_one_panel(replicas, node, ws):
    from crdt_state.jsonpatch import parse_patch
    from crdt_state.patch_plan import apply_to_json

    a, b, _ = replicas
    on_a = await node.connect("on_a", a.yjs_url(ws), "h", params=user("ann", ws))
    on_b = await node.connect("on_b", b.yjs_url(ws), "h", params=user("bob", ws))
    await on_a.set(["$state", "list"], [])
    await on_b.wait_for(["$state", "list"], [])

    async def edits(client: Any, name: str) -> None:
        for i in range(15):
            await client.push(["$state", "list"], f"{name}{i}")
            await client.set(["$state", "last"], f"{name}{i}")  # the same key, concurrently

    await asyncio.gather(edits(on_a, "a"), edits(on_b, "b"))
    # Markers each way: once seen, everything sent before them has arrived (ordered sockets).
    await on_a.set(["$state", "done_a"], True)
    await on_b.wait_for(["$state", "done_a"], True)
    await on_b.set(["$state", "done_b"], True)
    await on_a.wait_for(["$state", "done_b"], True)
    final_a = await on_a.state()
    await on_b.wait_json_equals(final_a)
    with httpx.Client(base_url=a.http, headers=AUTH) as rest:
        current = rest.get(f"/api/state/{ws}/h").json()
        while current["state"]["$state"] != final_a:  # commits land within milliseconds
            await asyncio.sleep(0.05)
            current = rest.get(f"/api/state/{ws}/h").json()
        history = rest.get(f"/api/state/{ws}/h/history", params={"limit": 1000}).json()
        entries = list(reversed(history["history"]))
        assert [e["version"] for e in entries] == list(range(1, current["version"] + 1))
        view: Any = {"$state": {}, "$computed": {}}
        for entry in entries:
            view = apply_to_json(view, parse_patch(entry["patch"]))
            if entry["version"] % 7 == 0:  # the patches agree with the replayed updates
                at = rest.get(f"/api/state/{ws}/h", params={"version": entry["version"]})
                assert view == at.json()["state"], entry["version"]
        assert view == current["state"]


async def test_workers_are_replicas_behind_one_port(clean_pg, tmp_path, node, ws):
    server = ServerProcess(
        tmp_path,
        env={"DATABASE_URL": clean_pg, "REDIS_URL": redis_server.url()},
        args=["--workers", "2"],
    ).start()
    try:
        # Connections land on either worker; clients still share one state and see each other.
        clients = [
            await node.connect(f"u{i}", server.yjs_url(ws), "w", params=user(f"u{i}", ws))
            for i in range(6)
        ]
        for i, client in enumerate(clients):
            await client.set(["$state", f"k{i}"], i)
        expected = {f"k{i}": i for i in range(6)}
        for client in clients:
            await client.wait_json_equals(expected, within=10)
        body = httpx.get(f"{server.http}/api/state/{ws}/w", headers=AUTH).json()
        assert body["state"]["$state"] == expected
    finally:
        server.stop()


def test_several_workers_need_redis(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "crdt_state", "serve", "--workers", "2", "--dev"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CRDT_STATE_DATA_DIR": str(tmp_path), "REDIS_URL": ""},
    )
    assert done.returncode == 2 and "REDIS_URL" in done.stderr
