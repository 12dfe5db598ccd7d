"""PostgreSQL failing under a committer: every acknowledged change is logged exactly once.

Two real faults: the server is stopped and started again (pg_ctlcluster) while changes stream
in, and a connection is cut right after the server committed a batch, before the client hears
of it (a proxy sits between them): the case change ids exist for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from adapters.postgres import PostgresUpdateLog
from crdt_state.committer import Committer
from crdt_state.errors import Unavailable
from crdt_state.model import Change, ChangeType, PanelKey
from crdt_state.ports import UpdateLog

# Fixtures (clean_pg, pg_dsn) until conftest.py imports them for every module.
from .pg import Cluster, restartable

KEY = PanelKey("ws", "stream")
PACE_SECONDS = 0.002  # between two submitted changes: ~500 changes a second
SETTLE_SECONDS = 60  # the longest a future may take to resolve once the server is back


def new_change(number: int) -> Change:
    # The update bytes name the change, so the log can be checked change by change.
    return Change(KEY, "e1", f"change-{number}".encode())


async def create_panel(log: UpdateLog) -> None:
    created = await log.create(Change(KEY, "e1", b"created", change_type=ChangeType.CREATED))
    assert created is not None and created.version == 1


async def assert_logged_once(log: UpdateLog, acknowledged: dict[bytes, int]) -> None:
    """Versions 1..N without a gap; each acknowledged change once, at its version."""
    entries = await log.read(KEY, limit=1_000_000)
    assert [entry.version for entry in entries] == list(range(1, len(entries) + 1))
    logged = {entry.update: entry.version for entry in entries[1:]}
    assert len(logged) == len(entries) - 1, "a change was logged twice"
    assert logged == acknowledged


def retries(caplog: pytest.LogCaptureFixture) -> list[BaseException]:
    """The errors the committer retried after (it logs each one with its back-off)."""
    return [
        error
        for record in caplog.records
        if record.name == "crdt_state.committer" and isinstance(record.args, tuple)
        for error in record.args[:1]
        if isinstance(error, BaseException)
    ]


@asynccontextmanager
async def committing(log: UpdateLog) -> AsyncIterator[Committer]:
    # A short back-off cap: the test waits for the committer's retries.
    committer = Committer(log, log, max_backoff_seconds=0.2)
    committer.start()
    try:
        yield committer
    finally:
        with suppress(TimeoutError):
            await asyncio.wait_for(committer.close(), SETTLE_SECONDS)


# The server stopped and started


@dataclass(slots=True)
class Stream:
    """Submits numbered changes to a committer at a steady pace until told to stop."""

    committer: Committer
    submitted: list[tuple[Change, asyncio.Future[int]]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while not self.stop.is_set():
            change = new_change(len(self.submitted))
            self.submitted.append((change, self.committer.submit(change)))
            await asyncio.sleep(PACE_SECONDS)

    def since(self, start: int) -> list[asyncio.Future[int]]:
        return [future for _, future in self.submitted[start:]]


@pytest.mark.parametrize("mode", ["fast", "immediate"])  # immediate: as after a crash
async def test_a_server_restart_loses_and_doubles_nothing(
    clean_pg: str,
    cluster: Cluster,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="crdt_state.committer")
    # Every connection of the pool is open, and dead after the restart.
    log = await PostgresUpdateLog.open(clean_pg, min_size=3, max_size=3, command_timeout=10)
    try:
        async with restartable(cluster), committing(log) as committer:
            await create_panel(log)
            stream = Stream(committer)
            streaming = asyncio.create_task(stream.run())
            await asyncio.sleep(0.5)

            await asyncio.to_thread(cluster.stop, mode)
            outage = len(stream.submitted)
            await asyncio.sleep(1.0)
            assert stream.since(outage), "nothing was submitted while the server was down"
            assert not any(future.done() for future in stream.since(outage))
            assert not committer.healthy
            with pytest.raises(Unavailable):
                await log.ping()  # the readiness probe says so too

            await asyncio.to_thread(cluster.start)
            back = asyncio.get_running_loop().time()
            await asyncio.wait_for(asyncio.gather(*stream.since(outage)), SETTLE_SECONDS)
            recovered_in = asyncio.get_running_loop().time() - back
            await asyncio.sleep(0.3)  # a little more streaming on the recovered pool
            stream.stop.set()
            await streaming
            versions = await asyncio.wait_for(asyncio.gather(*stream.since(0)), SETTLE_SECONDS)

        acknowledged = {
            change.update: version
            for (change, _), version in zip(stream.submitted, versions, strict=True)
        }
        await assert_logged_once(log, acknowledged)
        errors = retries(caplog)
        assert errors and all(isinstance(error, Unavailable) for error in errors)
        # Dead pooled connections are dropped at the first failure, not tried one by one.
        assert recovered_in < 10, recovered_in
        await log.ping()
    finally:
        await log.close()


# A commit whose answer never arrives


class CommitCutter:
    """A TCP proxy to PostgreSQL that, once armed, lets the next COMMIT reach the server and
    cuts the connection before the server's answer reaches the client."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.armed = False
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in self._sessions:
            session.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = asyncio.create_task(self._serve(reader, writer))
        self._sessions.add(session)
        session.add_done_callback(self._sessions.discard)

    async def _serve(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        server, to_server = await asyncio.open_connection(self.host, self.port)
        pumps = [
            asyncio.create_task(_forward(client, to_server)),
            asyncio.create_task(self._answers(server, to_client)),
        ]
        try:
            # Either side closing ends the session: the other must hear of it at once.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            to_client.transport.abort()
            to_server.transport.abort()

    async def _answers(self, server: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        # Server messages: a type byte, a length (itself included), the body. With sslmode
        # disabled the stream starts with such a message too.
        while True:
            header = await server.readexactly(5)
            body = await server.readexactly(int.from_bytes(header[1:], "big") - 4)
            if self.armed and header[:1] == b"C" and body == b"COMMIT\x00":
                self.armed = False
                self.cuts += 1
                to_client.transport.abort()  # the transaction is committed; nobody is told
                return
            to_client.write(header + body)
            await to_client.drain()


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def through(dsn: str, port: int) -> str:
    """`dsn` by way of the proxy on `port`, in plain text so the proxy can read it."""
    address = urlsplit(dsn)
    netloc = f"{address.username}@127.0.0.1:{port}" if address.username else f"127.0.0.1:{port}"
    return urlunsplit(address._replace(netloc=netloc, query="sslmode=disable"))


@pytest.fixture
async def cutter(clean_pg: str) -> AsyncIterator[tuple[CommitCutter, str]]:
    address = urlsplit(clean_pg)
    proxy = CommitCutter(address.hostname or "127.0.0.1", address.port or 5432)
    port = await proxy.start()
    yield proxy, through(clean_pg, port)
    await proxy.close()


async def count_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM state_history"))
    finally:
        await conn.close()


@pytest.mark.parametrize("size", [5, 300])  # both ways of writing a batch: unnest and COPY
async def test_a_batch_whose_commit_answer_was_lost_is_logged_once_when_retried(
    cutter: tuple[CommitCutter, str],
    clean_pg: str,
    size: int,
) -> None:
    proxy, dsn = cutter
    log = await PostgresUpdateLog.open(dsn)
    try:
        await create_panel(log)
        batch = [new_change(n) for n in range(size)]
        proxy.armed = True
        with pytest.raises(Unavailable):
            await log.append(batch)
        assert proxy.cuts == 1
        assert await count_rows(clean_pg) == 1 + size  # committed, though nobody was told

        versions = await log.append(batch)  # the committer's retry: same batch, same ids

        assert versions == list(range(2, size + 2))
        await assert_logged_once(
            log, {change.update: v for change, v in zip(batch, versions, strict=True)}
        )
    finally:
        await log.close()


async def test_the_committer_resolves_changes_whose_commit_answer_was_lost(
    cutter: tuple[CommitCutter, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="crdt_state.committer")
    proxy, dsn = cutter
    log = await PostgresUpdateLog.open(dsn)
    try:
        async with committing(log) as committer:
            await create_panel(log)
            proxy.armed = True
            changes = [new_change(n) for n in range(50)]
            futures = [committer.submit(change) for change in changes]
            versions = await asyncio.wait_for(asyncio.gather(*futures), SETTLE_SECONDS)
        assert proxy.cuts == 1
        assert sorted(versions) == list(range(2, 52))
        await assert_logged_once(
            log, {change.update: v for change, v in zip(changes, versions, strict=True)}
        )
        assert [type(error) for error in retries(caplog)] == [Unavailable]
    finally:
        await log.close()
