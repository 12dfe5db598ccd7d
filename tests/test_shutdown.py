"""SIGTERM: stop accepting, take in what the clients sent, close every socket with 1012,
commit, and exit within the grace period (docs/OPERATIONS.md, "Shutdown"). On the embedded
default and on PostgreSQL; real y-websocket clients, the log read afterwards without any
server."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from adapters.postgres import PostgresUpdateLog
from adapters.sqlite import SqliteUpdateLog
from crdt_state.document import PanelDoc
from crdt_state.model import PanelKey
from crdt_state.ports import UpdateLog
from crdt_state.replay import rebuild

from .conftest import token
from .server import ServerProcess
from .yjs_client import YjsClients

WS = "ws"
WRITERS = {"a1": "p", "a2": "p", "b1": "q", "b2": "q"}
UPDATES = 600  # per writer: more than the server applies before the signal lands
DRAIN_SECONDS = 5
SHUTDOWN_SECONDS = 5
CLEAN_EXIT = (0, -signal.SIGTERM)


@pytest.fixture
async def node() -> AsyncIterator[YjsClients]:
    async with YjsClients() as clients:
        yield clients


Opener = Callable[[], Awaitable[UpdateLog]]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[ServerProcess, Opener]:
    env = {
        "CRDT_STATE_DRAIN_SECONDS": str(DRAIN_SECONDS),
        "CRDT_STATE_SHUTDOWN_SECONDS": str(SHUTDOWN_SECONDS),
    }
    if request.param == "sqlite":
        server = ServerProcess(tmp_path, env=env)

        async def open_sqlite() -> UpdateLog:
            return await SqliteUpdateLog.open(tmp_path / "crdt-state.sqlite3")

        return server, open_sqlite
    dsn: str = request.getfixturevalue("clean_pg")
    server = ServerProcess(tmp_path, env={**env, "DATABASE_URL": dsn})

    async def open_postgres() -> UpdateLog:
        return await PostgresUpdateLog.open(dsn)

    return server, open_postgres


async def logged(open_log: Opener, panel: str) -> dict[str, Any]:
    """The panel's `$state` as the log alone has it."""
    log = await open_log()
    try:
        loaded = await log.load(PanelKey(WS, panel))
        assert loaded is not None
        return dict(PanelDoc(rebuild(loaded)).render()["$state"])
    finally:
        await log.close()


async def test_sigterm_closes_with_1012_and_loses_nothing_sent(
    store: tuple[ServerProcess, Opener], node: YjsClients
) -> None:
    server, open_log = store
    server.start()
    params = {"token": token("writer", {WS: "write"})}
    for name, panel in WRITERS.items():
        await node.connect(name, server.yjs_url(WS), panel, params=params)
    reader = f"{server.ws}/ws/state/{WS}?token={token('reader', {WS: 'read'})}"
    async with connect(reader) as json_socket:
        await json_socket.send('{"type": "ping"}')
        assert "pong" in str(await json_socket.recv())

        # Every writer sends as fast as it can; the signal goes out the moment the last of
        # them has handed its updates to its socket, while the server is still reading them.
        await asyncio.gather(*(node.burst(name, UPDATES, prefix=name) for name in WRITERS))
        assert server.process is not None
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)

        for name in WRITERS:
            code, reason = await node.wait_close(name, within=DRAIN_SECONDS + 5)
            assert code == 1012, (name, code, reason)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(json_socket.recv(), DRAIN_SECONDS + 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012

    returncode = await asyncio.to_thread(server.process.wait, DRAIN_SECONDS + SHUTDOWN_SECONDS + 5)
    elapsed = time.monotonic() - signalled
    # uvicorn ends by raising the signal again once it has stopped cleanly (its log's last
    # line says so): the process's status is "killed by SIGTERM", as a supervisor expects.
    assert returncode in CLEAN_EXIT, server.log_tail()
    assert "Finished server process" in server.log_tail(3)
    assert elapsed < DRAIN_SECONDS + SHUTDOWN_SECONDS, elapsed
    server.process = None

    for panel in ("p", "q"):
        state = await logged(open_log, panel)
        for name in (n for n, p in WRITERS.items() if p == panel):
            missing = [i for i in range(UPDATES) if state.get(f"{name}{i}") != i]
            assert not missing, f"{name}: {len(missing)} updates sent before the close are lost"


async def test_new_connections_are_refused_while_stopping(
    store: tuple[ServerProcess, Opener], node: YjsClients
) -> None:
    """Once the signal is handled, the port takes no new client (they go to another
    replica); a client that does not answer the drain's question holds the stop up only for
    the drain's bound."""
    server, _ = store
    server.start()
    silent = await node.raw_connect(
        "silent", f"{server.yjs_url(WS)}/p?token={token('w', {WS: 'write'})}"
    )
    assert silent["opened"], silent
    assert server.process is not None
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)

    async def refused() -> bool:
        try:
            async with httpx.AsyncClient(timeout=1) as http:
                await http.get(f"{server.http}/health")
        except httpx.TransportError:
            return True
        return False

    deadline = time.monotonic() + DRAIN_SECONDS
    while not await refused():
        assert time.monotonic() < deadline, "the server still accepts connections"
        await asyncio.sleep(0.05)  # polling another process's port: no event to await
    code, _ = await node.raw_wait_close("silent", within=DRAIN_SECONDS + 5)
    assert code == 1012
    returncode = await asyncio.to_thread(server.process.wait, DRAIN_SECONDS + SHUTDOWN_SECONDS + 5)
    assert (
        returncode in CLEAN_EXIT and time.monotonic() - signalled < DRAIN_SECONDS + SHUTDOWN_SECONDS
    )
    server.process = None
