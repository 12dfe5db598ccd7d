"""A write whose commit takes longer than the server waits (crdt_state/faces/http.py `once`):
answered 503 `commit_pending` with Retry-After, never lost: it commits once the log takes it,
and a retry with the same Idempotency-Key gets its version instead of writing again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from crdt_state.faces import http as http_face

from .conftest import token
from .inprocess import client_of, running_app


async def test_a_write_still_committing_is_503_then_kept_and_a_retry_gets_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_face, "COMMIT_WAIT_SECONDS", 0.3)
    async with running_app(tmp_path) as app, client_of(app, token()) as api:
        created = await api.put("/api/state/ws/p", json={"state": {"$state": {"n": 0}}})
        assert created.status_code == 200, created.text
        changes = (await api.get("/api/state/ws/p/history")).json()["totalChanges"]
        log = app.state.context.log
        append = log.append
        release = asyncio.Event()
        held = asyncio.Event()

        async def slow_append(*args: Any, **kwargs: Any) -> Any:
            held.set()
            await release.wait()
            return await append(*args, **kwargs)

        monkeypatch.setattr(log, "append", slow_append)
        patch = [{"op": "replace", "path": "/$state/n", "value": 1}]
        headers = {"Idempotency-Key": "write-1"}
        pending = await api.patch("/api/state/ws/p", json=patch, headers=headers)
        assert held.is_set()
        assert pending.status_code == 503, pending.text
        assert pending.json()["error"] == "commit_pending"
        assert pending.headers["retry-after"] == "5"

        release.set()
        retried = await api.patch("/api/state/ws/p", json=patch, headers=headers)
        assert retried.status_code == 200, retried.text
        version = retried.json()["version"]
        assert version == created.json()["version"] + 1  # the first write, not a second
        state = (await api.get("/api/state/ws/p")).json()
        assert state["state"]["$state"] == {"n": 1} and state["version"] == version
        history = (await api.get("/api/state/ws/p/history")).json()
        assert history["totalChanges"] == changes + 1


async def test_a_write_that_commits_in_time_is_answered_with_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_face, "COMMIT_WAIT_SECONDS", 5.0)
    async with running_app(tmp_path) as app, client_of(app, token()) as api:
        created = await api.put("/api/state/ws/p", json={"state": {"$state": {"n": 0}}})
        patch = [{"op": "replace", "path": "/$state/n", "value": 2}]
        answer = await api.patch("/api/state/ws/p", json=patch)
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == created.json()["version"] + 1
        assert answer.headers["etag"] == f'"{answer.json()["version"]}"'
