"""The real app in this process, over real adapters in a temp folder, driven through httpx.

No child process, no port: `httpx.ASGITransport` calls the ASGI app directly. It does not run
the app's lifespan, so `running_app` runs it here, around the adapters the test hands in (the
app leaves adapters it was given open; they are closed here, after the lifespan).

    async with inprocess_client(tmp_path, token=token("alice", {"ws": "admin"})) as api:
        await api.get("/health")
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from adapters.git import GitSnapshotRepository
from adapters.local import LocalFanout
from adapters.sqlite import SqliteUpdateLog
from crdt_state.app import Adapters, App, create_app
from crdt_state.config import Settings

from .server import SECRET

BASE_URL = "http://test"


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    """Authentication on (the suite's secret); no background tasks (0 turns off automatic
    snapshots and the idle-room sweeper: rooms stay loaded until the app stops)."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "jwt_secret_key": SECRET,
        "snapshot_interval_seconds": 0,
        "room_idle_seconds": 0,
        **overrides,
    }
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_app(data_dir: Path, **overrides: Any) -> AsyncIterator[App]:
    """The app, its lifespan started, over SQLite + in-process fan-out + Git in `data_dir`."""
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    log = await SqliteUpdateLog.open(data_dir / "crdt-state.sqlite3")
    fanout = LocalFanout()
    repository = GitSnapshotRepository(data_dir / "git")
    try:
        app = create_app(
            settings_for(data_dir, **overrides),
            adapters=Adapters(log, fanout, None, repository),
        )
        async with app.starlette.router.lifespan_context(app.starlette):
            yield app
    finally:
        await repository.close()
        await fanout.close()
        await log.close()


def client_of(app: App, token: str | None = None) -> httpx.AsyncClient:
    """A client of `app`, sending `token` as its bearer token (None: no Authorization)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE_URL, headers=headers
    )


@contextlib.asynccontextmanager
async def inprocess_client(
    data_dir: Path, *, token: str | None = None, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """`running_app` and one client of it; everything closed on the way out."""
    async with running_app(data_dir, **overrides) as app, client_of(app, token) as client:
        yield client
