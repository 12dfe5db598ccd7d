"""PostgreSQL test databases: a fresh, migrated one per test session, dropped at its end.

They live on the server named by CRDT_STATE_TEST_PG (default: the local one, as `postgres`).
Import the fixtures in conftest.py: `from .pg import clean_pg, pg_dsn  # noqa: F401`.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from adapters.postgres import migrate

ADMIN_DSN_VARIABLE = "CRDT_STATE_TEST_PG"
DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE_PREFIX = "crdt_state_test_"
# Every table a test writes, emptied between tests; schema_migrations stays.
DATA_TABLES = ("state_history", "state_checkpoints", "state_snapshots", "panel_states")

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
