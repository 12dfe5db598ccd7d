"""PostgreSQL test databases: a fresh, migrated one per test session, dropped at its end.

They live on the server named by CRDT_STATE_TEST_PG (default: the local one, as `postgres`).
Import the fixtures in conftest.py: `from .pg import clean_pg, pg_dsn  # noqa: F401`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from adapters.postgres import migrate

ADMIN_DSN_VARIABLE = "CRDT_STATE_TEST_PG"
DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE_PREFIX = "crdt_state_test_"
# Every table a test writes, emptied between tests; schema_migrations stays.
DATA_TABLES = (
    "state_history",
    "state_checkpoints",
    "state_snapshots",
    "panel_states",
    "revocations",
)

T = TypeVar("T")


def admin_dsn() -> str:
    """A DSN of a database from which test databases can be created and dropped."""
    return os.environ.get(ADMIN_DSN_VARIABLE, DEFAULT_ADMIN_DSN)


def dsn_of(database: str) -> str:
    """The admin DSN pointed at another database of the same server."""
    parts = urlsplit(admin_dsn())
    return urlunsplit(parts._replace(path=f"/{database}"))


def database_of(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


async def _admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(admin_dsn())
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"The PostgreSQL tests need a server at {admin_dsn()} (set {ADMIN_DSN_VARIABLE} "
            f"to use another): {exc!r}"
        ) from exc


async def create_database() -> str:
    """Create an empty database with a random name; its DSN."""
    name = f"{DATABASE_PREFIX}{uuid.uuid4().hex[:12]}"
    admin = await _admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return dsn_of(name)


async def drop_database(dsn: str) -> None:
    """Drop the database even if connections are left (a test that failed half-way)."""
    admin = await _admin()
    try:
        # WITH (FORCE) terminates the database's connections first (PostgreSQL 13+).
        await admin.execute(f'DROP DATABASE IF EXISTS "{database_of(dsn)}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def temporary_database(*, migrated: bool = False) -> AsyncIterator[str]:
    """A fresh database for the duration of the block; its DSN."""
    dsn = await create_database()
    try:
        if migrated:
            await migrate(dsn)
        yield dsn
    finally:
        await drop_database(dsn)


async def empty_tables(dsn: str) -> None:
    """Remove every row a test wrote; far faster than a new database per test."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"TRUNCATE {', '.join(DATA_TABLES)}")
    finally:
        await conn.close()


async def wait_until_accepting(dsn: str, timeout: float = 60.0) -> None:
    """Return once the server answers a query; raise TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                conn = await asyncpg.connect(dsn, timeout=2)
            except (OSError, asyncpg.PostgresError):
                await asyncio.sleep(0.2)
                continue
            try:
                await conn.fetchval("SELECT 1")
                return
            finally:
                await conn.close()


def run_apart(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end on a loop of its own thread, from sync or async code."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, work).result()


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A migrated database of this test session, dropped at its end.

    Its set-up runs on a thread of its own, so that any test or fixture can ask for it,
    even from inside a running event loop (an async fixture's getfixturevalue).
    """
    dsn = run_apart(create_database())
    try:
        run_apart(migrate(dsn))
        yield dsn
    finally:
        run_apart(drop_database(dsn))


@pytest.fixture
async def clean_pg(pg_dsn: str) -> str:
    """The session's PostgreSQL database, emptied for this test."""
    await empty_tables(pg_dsn)
    return pg_dsn


# The local cluster, stopped and started by fault tests

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True, slots=True)
class Cluster:
    """The local PostgreSQL cluster the tests use, as pg_ctlcluster names it."""

    version: str
    name: str

    def stop(self, mode: str) -> None:
        self._control("stop", "--mode", mode)

    def start(self) -> None:
        self._control("start")  # returns once the server accepts connections

    def running(self) -> bool:
        return self._run("status").returncode == 0

    def _control(self, action: str, *options: str) -> None:
        done = self._run(action, *options)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctlcluster {action} failed: {done.stdout}{done.stderr}")

    def _run(self, action: str, *options: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "pg_ctlcluster",
                "--skip-systemctl-redirect",
                *options,
                self.version,
                self.name,
                action,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def local_cluster(dsn: str) -> Cluster | str:
    """The cluster serving `dsn`, or why the tests cannot stop and start it."""
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
        return "pg_ctlcluster is not installed (Debian's postgresql-common)"
    if os.geteuid() != 0:
        return "stopping and starting the PostgreSQL cluster needs root"
    address = urlsplit(dsn)
    if address.hostname not in LOCAL_HOSTS:
        return f"the test server {address.hostname} is not on this machine"
    listed = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False
    )
    for line in listed.stdout.splitlines():
        version, name, port, *_ = line.split()
        if int(port) == (address.port or 5432):
            return Cluster(version, name)
    return f"no local cluster listens on port {address.port}"


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    found = local_cluster(admin_dsn())
    if isinstance(found, str):
        pytest.skip(f"cannot restart PostgreSQL: {found}")
    return found


@asynccontextmanager
async def restartable(cluster: Cluster) -> AsyncIterator[Cluster]:
    try:
        yield cluster
    finally:
        # Whatever happened, the server is left running and answering for the next tests.
        if not await asyncio.to_thread(cluster.running):
            await asyncio.to_thread(cluster.start)
        await wait_until_accepting(admin_dsn())


async def logged_version(dsn: str, workspace: str, panel: str) -> int:
    """The newest version of a panel in the PostgreSQL log itself (no replica asked)."""
    conn = await asyncpg.connect(dsn)
    try:
        version = await conn.fetchval(
            "SELECT max(version) FROM state_history WHERE workspace_id = $1 AND panel_id = $2",
            workspace,
            panel,
        )
        return int(version or 0)
    finally:
        await conn.close()
