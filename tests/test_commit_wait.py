"""A write whose commit takes longer than the server waits (crdt_state/faces/http.py `once`):
answered 503 `commit_pending` with Retry-After, never lost: it commits once the log takes it,
and a retry with the same Idempotency-Key gets its version instead of writing again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from crdt_state.faces import http as http_face

from .conftest import token
from .inprocess import client_of, running_app

PANEL = "/api/state/ws/p"
PATCH = [{"op": "replace", "path": "/$state/n", "value": 1}]


@contextlib.asynccontextmanager
async def held_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wait: float
) -> AsyncIterator[tuple[httpx.AsyncClient, int, asyncio.Event, asyncio.Event]]:
    """A server whose writes wait `wait` seconds for their commit, a panel at version `v`
    ({"n": 0}), and the log's commits held from here until `release` is set (`held`: one
    reached the log): (client, v, held, release)."""
    monkeypatch.setattr(http_face, "COMMIT_WAIT_SECONDS", wait)
    async with running_app(tmp_path) as app, client_of(app, token()) as api:
        created = await api.put(PANEL, json={"state": {"$state": {"n": 0}}})
        assert created.status_code == 200, created.text
        log = app.state.context.log
        append = log.append
        held, release = asyncio.Event(), asyncio.Event()

        async def slow_append(*args: Any, **kwargs: Any) -> Any:
            held.set()
            await release.wait()
            return await append(*args, **kwargs)

        monkeypatch.setattr(log, "append", slow_append)
        yield api, created.json()["version"], held, release


async def test_a_write_still_committing_is_503_then_kept_and_a_retry_gets_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with held_commits(tmp_path, monkeypatch, wait=0.3) as (api, created, held, release):
        changes = (await api.get(f"{PANEL}/history")).json()["totalChanges"]
        headers = {"Idempotency-Key": "write-1"}
        pending = await api.patch(PANEL, json=PATCH, headers=headers)
        assert held.is_set()
        assert pending.status_code == 503, pending.text
        assert pending.json()["error"] == "commit_pending"
        assert pending.headers["retry-after"] == "5"

        release.set()
        retried = await api.patch(PANEL, json=PATCH, headers=headers)
        assert retried.status_code == 200, retried.text
        version = retried.json()["version"]
        assert version == created + 1  # the first write, not a second
        state = (await api.get(PANEL)).json()
        assert state["state"]["$state"] == {"n": 1} and state["version"] == version
        history = (await api.get(f"{PANEL}/history")).json()
        assert history["totalChanges"] == changes + 1


async def test_a_write_is_answered_when_its_commit_lands_not_when_the_wait_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait ends with the commit: a commit held 0.2 s is answered 200 with its version
    right after, long before the 30 s bound."""
    async with held_commits(tmp_path, monkeypatch, wait=30.0) as (api, created, held, release):
        loop = asyncio.get_running_loop()
        began = loop.time()
        answering = asyncio.ensure_future(api.patch(PANEL, json=PATCH))
        await held.wait()
        loop.call_later(0.2, release.set)
        answer = await answering
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == created + 1
        assert answer.headers["etag"] == f'"{created + 1}"'
        assert loop.time() - began < 10.0
