"""Observability: `/metrics` read back after real traffic (REST, Yjs and JSON sockets, two
replicas over PostgreSQL + Redis), and JSON log lines (docs/OPERATIONS.md, "Metrics" and
"Logs")."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from crdt_state import log_format, protocol
from crdt_state.log_redaction import REDACTED
from crdt_state.metrics import OTHER, Metrics

from . import redis_server
from .conftest import token
from .server import ServerProcess
from .wire import RawPeer
from .yjs_client import YjsClients

PANEL_ROUTE = "/api/state/{workspace}/{panel}"
WAIT_SECONDS = 15.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def node() -> AsyncIterator[YjsClients]:
    async with YjsClients() as clients:
        yield clients


def scrape(server: ServerProcess) -> Samples:
    answer = httpx.get(f"{server.http}/metrics", timeout=5)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample `name` with exactly these labels; 0 when absent (a labelled series appears
    with its first observation)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of every sample `name` whose labels include these."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


def until(server: ServerProcess, holds: Callable[[Samples], bool]) -> Samples:
    """Scrape until `holds` (another process: polled, bounded); the last scrape."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        samples = scrape(server)
        if holds(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def requests(samples: Samples, method: str, status: int, route: str = PANEL_ROUTE) -> float:
    labels = {"method": method, "route": route, "status": str(status)}
    return value(samples, "crdt_state_http_request_duration_seconds_count", **labels)


def refused(samples: Samples, face: str, reason: str) -> float:
    return value(samples, "crdt_state_refused_total", face=face, reason=reason)


def commits_add_up(samples: Samples) -> bool:
    return (
        value(samples, "crdt_state_pending_changes") == 0
        and value(samples, "crdt_state_commit_batch_size_sum")
        == value(samples, "crdt_state_committed_changes_total")
        and value(samples, "crdt_state_commit_duration_seconds_count")
        == value(samples, "crdt_state_commit_batches_total")
    )


# -- one server -------------------------------------------------------------------------------


def test_rest_latency_by_route_template_method_and_status(server: ServerProcess) -> None:
    rest = httpx.Client(
        base_url=server.http, headers={"Authorization": f"Bearer {token()}"}, timeout=10
    )
    put = rest.put("/api/state/ws/p1", json={"state": {"$state": {"n": 0}}})
    assert put.status_code in (200, 201), put.text
    for n in (1, 2):
        patch = [{"op": "replace", "path": "/$state/n", "value": n}]
        assert rest.patch("/api/state/ws/p1", json={"patches": patch}).status_code == 200
    failing = [{"op": "test", "path": "/$state/n", "value": 99}]
    assert rest.patch("/api/state/ws/p1", json={"patches": failing}).status_code == 409
    for _ in range(3):
        assert rest.get("/api/state/ws/p1").status_code == 200
    assert rest.get("/api/state/ws/p2").status_code == 404  # another panel: the same route
    assert rest.get("/no/such/path").status_code == 404

    samples = until(server, commits_add_up)
    assert requests(samples, "PUT", put.status_code) == 1
    assert requests(samples, "PATCH", 200) == 2
    assert requests(samples, "PATCH", 409) == 1
    assert requests(samples, "GET", 200) == 3
    assert requests(samples, "GET", 404) == 1
    assert requests(samples, "GET", 404, route="unmatched") == 1
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in samples.items()
        if name == "crdt_state_http_request_duration_seconds_bucket"
        and {("method", "PATCH"), ("status", "200"), ("route", PANEL_ROUTE)} <= labels
    )
    counts = [count for _, count in buckets]
    assert counts == sorted(counts) and buckets[-1] == (float("inf"), 2)  # cumulative
    routes = {
        dict(labels)["route"]
        for name, labels in samples
        if name == "crdt_state_http_request_duration_seconds_count"
    }
    assert not any("p1" in route or "p2" in route for route in routes), routes  # templates
    assert refused(samples, "rest", "panel_not_found") == 1
    assert refused(samples, "rest", "test_failed") == 1
    # The PUT and two PATCHes, each urgent (a transaction of its own, or shared).
    assert value(samples, "crdt_state_committed_changes_total") >= 3
    assert value(samples, "crdt_state_commit_duration_seconds_count") > 0
    assert commits_add_up(samples)
    rest.close()


def test_request_ids_are_echoed_or_made(server: ServerProcess) -> None:
    sane = httpx.get(f"{server.http}/health", headers={"X-Request-ID": "req-42.a:b"})
    assert sane.headers["x-request-id"] == "req-42.a:b"
    for insane in ("has space", "x" * 200, 'quote"d'):
        made = httpx.get(f"{server.http}/health", headers={"X-Request-ID": insane})
        assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    assert (
        httpx.get(f"{server.http}/health").headers["x-request-id"] != made.headers["x-request-id"]
    )


async def test_sockets_commits_and_refusals(server: ServerProcess, node: YjsClients) -> None:
    params = {"token": token()}
    a = await node.connect("a", server.yjs_url("ws"), "live", params=params)
    b = await node.connect("b", server.yjs_url("ws"), "live", params=params)
    for n in range(5):
        await a.set(["$state", f"a{n}"], n)
        await b.set(["$state", f"b{n}"], n)
    await a.wait_for(["$state", "b4"], 4)
    await b.wait_for(["$state", "a4"], 4)
    subscriber = await connect(f"{server.ws}/ws/state/ws?token={token('sub', {'ws': 'read'})}")
    await subscriber.send(json.dumps({"type": "subscribe", "panelId": "live"}))
    assert json.loads(await subscriber.recv())["type"] == "state_sync"

    def connected(yjs: int, json_sockets: int) -> Callable[[Samples], bool]:
        return lambda s: (
            value(s, "crdt_state_websocket_connections", face="yjs") == yjs
            and value(s, "crdt_state_connections") == yjs
            and value(s, "crdt_state_websocket_connections", face="json") == json_sockets
        )

    samples = until(server, lambda s: connected(2, 1)(s) and commits_add_up(s))
    assert connected(2, 1)(samples)
    assert value(samples, "crdt_state_rooms") == 1
    assert value(samples, "crdt_state_committed_changes_total") >= 10  # the 10 sets, at least
    assert commits_add_up(samples)
    for face in ("yjs", "json"):  # every client reads: nothing waits in a send queue
        assert value(samples, "crdt_state_queued_send_bytes", face=face) == 0
    assert value(samples, "crdt_state_catch_up_seconds_count", trigger="join") == 2

    # A Yjs client closed for a bad message; a JSON client told off for an unknown type.
    mallory = await RawPeer.open(f"{server.yjs_url('ws')}/live?token={token('mallory')}")
    await mallory.sync()
    await mallory.ws.send(b"\x00\x09\x00")  # sync message type 9: there is none
    assert await mallory.closed_with() == 4400
    await subscriber.send(json.dumps({"type": "shout"}))
    while (message := json.loads(await subscriber.recv()))["type"] != "error":
        pass
    assert message["code"] == "bad_request"
    samples = until(
        server,
        lambda s: (
            refused(s, "yjs", "bad_message") == 1
            and refused(s, "json", "bad_request") == 1
            and connected(2, 1)(s)
        ),
    )
    assert refused(samples, "yjs", "bad_message") == 1
    assert refused(samples, "json", "bad_request") == 1
    assert connected(2, 1)(samples)  # mallory is gone; the others stay

    await subscriber.close()
    await a.destroy()
    await b.destroy()
    samples = until(server, connected(0, 0))
    assert connected(0, 0)(samples)


def test_label_values_stay_in_fixed_sets() -> None:
    metrics = Metrics()
    metrics.request("BREW", "/health", 418, 0.01)
    metrics.refuse("rest", "no such code")
    metrics.refuse_close("yjs", 4999)
    metrics.caught_up("whim", 0.1)
    metrics.refuse("rest", "panel_not_found")
    text, _ = metrics.exposition(None)
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }
    assert requests(samples, OTHER, 418, route="/health") == 1
    assert refused(samples, "rest", OTHER) == 1 and refused(samples, "yjs", OTHER) == 1
    assert refused(samples, "rest", "panel_not_found") == 1
    assert value(samples, "crdt_state_catch_up_seconds_count", trigger=OTHER) == 1
    assert Metrics().registry is not metrics.registry  # one registry per app


# -- two replicas -----------------------------------------------------------------------------


def replica(folder: Path, dsn: str) -> ServerProcess:
    return ServerProcess(folder, env={"DATABASE_URL": dsn, "REDIS_URL": redis_server.url()})


@pytest.fixture
def pair(clean_pg: str, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    started = [replica(tmp_path / name, clean_pg).start() for name in "ab"]
    yield started
    for process in started:
        process.stop()


def _local_ports_to(pid: int, port: int) -> set[int]:
    """The local ports of `pid`'s TCP connections to `port` (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def kill_pubsub_connection(server: ServerProcess) -> int:
    """Cut this replica's Redis pub/sub connection (only its own: Redis is shared)."""
    assert server.process is not None
    admin = redis.Redis.from_url(redis_server.url())
    try:
        port = admin.connection_pool.connection_kwargs.get("port", 6379)
        ours = _local_ports_to(server.process.pid, port)
        killed = 0
        for client in admin.client_list(_type="pubsub"):
            if int(client["addr"].rsplit(":", 1)[1]) in ours:
                killed += admin.client_kill_filter(_id=client["id"])
        return killed
    finally:
        admin.close()


@pytest.mark.skipif(sys.platform != "linux", reason="finds the replica's connection in /proc")
async def test_fanout_lag_and_catch_up_between_replicas(
    pair: list[ServerProcess], node: YjsClients
) -> None:
    a, b = pair
    ws = f"m{uuid.uuid4().hex[:8]}"  # Redis channels are shared: a workspace of its own
    params = {"token": token("ann", {ws: "write"})}
    on_b = await node.connect("on_b", b.yjs_url(ws), "p", params=params)  # B loads and joins
    on_a = await node.connect("on_a", a.yjs_url(ws), "p", params=params)
    changes = 5
    for n in range(changes):
        await on_a.set(["$state", f"k{n}"], n)
    await on_b.wait_for(["$state", f"k{changes - 1}"], changes - 1)

    lag = "crdt_state_fanout_lag_seconds_count"
    samples = until(b, lambda s: value(s, lag) >= changes)
    assert value(samples, lag) >= changes  # a notice of each of A's changes reached B
    assert value(samples, "crdt_state_fanout_lag_seconds_sum") < changes * 30
    assert value(samples, "crdt_state_catch_up_seconds_count", trigger="join") == 1
    assert value(samples, "crdt_state_catch_up_seconds_count", trigger="load") >= 1
    assert value(samples, "crdt_state_catch_up_seconds_count", trigger="reconnect") == 0

    assert kill_pubsub_connection(b) == 1
    reconnect = "crdt_state_catch_up_seconds_count"
    samples = until(b, lambda s: value(s, reconnect, trigger="reconnect") >= 1)
    assert value(samples, reconnect, trigger="reconnect") == 1  # its one room, from the log
    await on_a.set(["$state", "after"], "reconnect")
    await on_b.wait_for(["$state", "after"], "reconnect")
    assert value(scrape(a), reconnect, trigger="reconnect") == 0  # A kept its connection


# -- logs -------------------------------------------------------------------------------------


async def test_json_logs(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"CRDT_STATE_LOG_FORMAT": "json"}).start()
    secret = token()
    try:
        headers = {"Authorization": f"Bearer {secret}", "X-Request-ID": "put-p-1"}
        body = {"state": {"$state": {"n": 1}}}
        put = httpx.put(f"{server.http}/api/state/ws/p", headers=headers, json=body)
        assert put.is_success, put.text
        httpx.get(f"{server.http}/api/state/ws/p?token={secret}")
        peer = await RawPeer.open(f"{server.yjs_url('ws')}/q?token={secret}")  # creates q
        await peer.sync()
        await peer.ws.send(protocol.sync_update(b"\x05not an update"))  # refused in the room
        assert await peer.closed_with() == 4400
    finally:
        server.stop()
    text = server.log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line]  # only JSON lines
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert all(line["time"].endswith("Z") for line in lines)

    def one(holds: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        found = [line for line in lines if holds(line)]
        assert found, text
        return found[0]

    access = one(lambda line: line["logger"] == "uvicorn.access" and line.get("method") == "PUT")
    assert access["requestId"] == "put-p-1" and access["panelId"] == "p"
    assert access["status"] == put.status_code and access["path"] == "/api/state/ws/p"
    created = one(lambda line: line["message"].startswith("created panel ws/q"))
    assert created["panelId"] == "q" and created["workspaceId"] == "ws"
    assert "connectionId" in created and "requestId" not in created
    room = one(lambda line: line["message"].startswith("room ws/q:"))
    assert room["panelId"] == "q" and room["connectionId"] == created["connectionId"]
    handshake = one(lambda line: "WebSocket /ws/yjs/ws/q" in line["message"])
    assert handshake["connectionId"] == created["connectionId"]
    assert f"token={REDACTED}" in handshake["message"]
    assert secret not in text and secret.rsplit(".", 1)[1] not in text


def test_the_json_formatter_redacts_and_names_the_context() -> None:
    secret = token()
    try:
        raise ValueError(f"refused {secret}")
    except ValueError:
        record = logging.LogRecord(
            "crdt_state.test", logging.ERROR, __file__, 1, "GET /p?token=%s", (secret,), None
        )
        record.exc_info = sys.exc_info()
    with log_format.bound(request_id="r-1", workspace_id="ws", panel_id="p"):
        line = json.loads(log_format.JsonFormatter().format(record))
    assert line["message"] == f"GET /p?token={REDACTED}"
    assert line["requestId"] == "r-1" and line["panelId"] == "p" and "connectionId" not in line
    assert "ValueError: refused" in line["exception"] and secret not in json.dumps(line)
    assert line["level"] == "ERROR" and line["logger"] == "crdt_state.test"


async def test_a_rooms_task_names_its_panel_not_who_loaded_it() -> None:
    async def ids() -> tuple[str | None, ...]:
        return tuple(variable.get() for _, variable in log_format.FIELDS)

    with log_format.bound(request_id="r-1", connection_id="c-1", workspace_id="ws"):
        task = log_format.in_panel_context("ws", "p", asyncio.create_task, ids())
        assert log_format.request_id.get() == "r-1"  # the caller's context is untouched
        assert log_format.panel_id.get() is None
    assert await task == (None, None, "ws", "p")
