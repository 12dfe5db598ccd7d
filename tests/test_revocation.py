"""Revoking a subject or a token id: the admin API, the store (SQLite and PostgreSQL), and the
sockets it closes with 4401 within a second, on one replica and on two sharing PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from adapters.postgres import PostgresUpdateLog
from adapters.sqlite import SqliteUpdateLog
from crdt_state.auth import Principal, mint_token
from crdt_state.revocations import Revocation, RevocationKind, RevocationList
from crdt_state.sockets import LiveSockets

from . import redis_server
from .server import SECRET, ServerProcess
from .test_token_expiry import close_of
from .wire import RawPeer

ADMIN = {"Authorization": f"Bearer {mint_token(SECRET, 'root', {}, admin=True)}"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"  # PostgreSQL and Redis are shared by tests


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def yjs_socket(server: ServerProcess, ws: str, token: str) -> RawPeer:
    peer = await RawPeer.open(f"{server.yjs_url(ws)}/panel?token={token}")
    await peer.sync()
    return peer


async def json_socket(server: ServerProcess, ws: str, token: str) -> ClientConnection:
    sock = await connect(f"{server.ws}/ws/state/{ws}?token={token}")
    await sock.send(json.dumps({"type": "ping"}))
    assert json.loads(await asyncio.wait_for(sock.recv(), 5)) == {"type": "pong"}
    return sock


async def wait_for_next_second() -> None:
    """A token minted after this has an `iat` later than a revocation made before it."""
    await asyncio.sleep(1.0 - time.time() % 1.0 + 0.01)


# --- the store ------------------------------------------------------------------------------


def record(kind: RevocationKind, value: str, expires_in: float | None = 3600) -> Revocation:
    now = datetime.now(UTC)
    expires = None if expires_in is None else now + timedelta(seconds=expires_in)
    return Revocation(kind, value, now, expires, "root", "lost laptop")


async def check_store(store: Any) -> None:
    start = max((r.id for r in await store.revocations_since(0, 10_000)), default=0)
    first = await store.revoke(record(RevocationKind.SUBJECT, "alice"))
    second = await store.revoke(record(RevocationKind.TOKEN, "jti-1", expires_in=None))
    gone = await store.revoke(record(RevocationKind.TOKEN, "jti-2", expires_in=-1))
    assert start < first.id < second.id < gone.id
    found = await store.revocations_since(start)
    assert [r.id for r in found] == [first.id, second.id]  # the expired one is not in force
    assert found[0] == first and found[1].expires_at is None
    assert found[0].revoked_at == first.revoked_at and found[0].reason == "lost laptop"
    assert await store.revocations_since(first.id) == [found[1]]
    assert len(await store.revocations_since(start, limit=1)) == 1
    assert await store.purge_revocations(datetime.now(UTC)) >= 1
    later = await store.revoke(record(RevocationKind.SUBJECT, "bob"))
    assert later.id > gone.id  # an id is never given again, even after a purge


async def test_the_sqlite_store_keeps_revocations(tmp_path: Path) -> None:
    store = await SqliteUpdateLog.open(tmp_path / "log.sqlite3")
    try:
        await check_store(store)
    finally:
        await store.close()


async def test_the_postgres_store_keeps_revocations(pg_dsn: str) -> None:
    store = await PostgresUpdateLog.open(pg_dsn)
    try:
        await check_store(store)
    finally:
        await store.close()


# --- the live sockets index ----------------------------------------------------------------


async def test_live_sockets_close_on_expiry_and_on_revocation_only_what_is_covered() -> None:
    revoked = RevocationList()
    sockets = LiveSockets(covering=revoked.covering)
    closed: dict[str, tuple[int, str]] = {}

    def closer(name: str) -> Any:
        def close(code: int, reason: str) -> None:
            closed[name] = (code, reason)

        return close

    now = time.time()
    soon = Principal("a", {}, token_id="t1", issued_at=now - 5, expires=now + 0.2)
    later = Principal("a", {}, token_id="t2", issued_at=now - 5, expires=now + 60)
    fresh = Principal("a", {}, token_id="t3", issued_at=now + 30, expires=now + 60)
    other = Principal("b", {}, token_id="t4", issued_at=now - 5, expires=now + 60)
    entries = [sockets.register(p, closer(p.token_id or "")) for p in (soon, later, fresh, other)]
    assert len(sockets) == 4
    await asyncio.sleep(0.4)
    assert closed == {"t1": (4401, "token expired")}
    subject = Revocation(
        RevocationKind.SUBJECT, "a", datetime.fromtimestamp(now, UTC), None, "root", id=1
    )
    revoked.add(subject)
    assert sockets.close_covered(subject) == 1  # t2; t1 is closed, t3 was issued after
    assert closed["t2"] == (4401, "token revoked") and "t3" not in closed
    # A socket registered after a revocation that covers it is closed at once.
    sockets.register(Principal("a", {}, token_id="t5", issued_at=now - 1), closer("t5"))
    assert closed["t5"] == (4401, "token revoked")
    for entry in entries:
        sockets.unregister(entry)
    assert entries[2].timer is None  # unregistering cancels the expiry timer


# --- one replica ----------------------------------------------------------------------------


async def test_the_admin_api_needs_a_server_admin(server: ServerProcess) -> None:
    url = f"{server.http}/api/admin/revocations"
    assert httpx.post(url, json={"subject": "x"}).status_code == 401
    workspace_admin = bearer(mint_token(SECRET, "boss", {"*": "admin"}))
    refused = httpx.post(url, headers=workspace_admin, json={"subject": "x"})
    assert refused.status_code == 403 and '"admin": true' in refused.json()["message"]
    assert httpx.get(url, headers=workspace_admin).status_code == 403
    for body in ({}, {"subject": "a", "tokenId": "b"}, {"subject": ""}, {"tokenId": 3}, []):
        answer = httpx.post(url, headers=ADMIN, json=body)
        assert answer.status_code == 400 and answer.json()["error"] == "bad_request", body


async def test_revoking_a_subject_cuts_it_off_at_once(server: ServerProcess) -> None:
    alice = mint_token(SECRET, "alice", {"ws": "write"})
    bob = mint_token(SECRET, "bob", {"ws": "write"})
    yjs, feed = await yjs_socket(server, "ws", alice), await json_socket(server, "ws", alice)
    bobs = await yjs_socket(server, "ws", bob)
    assert httpx.get(f"{server.http}/api/state/ws/panel", headers=bearer(alice)).status_code == 200
    started = time.time()
    answer = httpx.post(
        f"{server.http}/api/admin/revocations",
        headers=ADMIN,
        json={"subject": "alice", "reason": "left the company"},
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["subject"] == "alice" and body["revokedBy"] == "root"
    assert body["closedSockets"] == 2 and body["expiresAt"] is not None
    for sock in (yjs.ws, feed):
        code, reason, when = await close_of(sock)
        assert (code, reason) == (4401, "token revoked")
        assert when - started < 1.0
    refused = httpx.get(f"{server.http}/api/state/ws/panel", headers=bearer(alice))
    assert refused.status_code == 401 and "revoked" in refused.json()["message"]
    again = await RawPeer.open(f"{server.yjs_url('ws')}/panel?token={alice}")
    assert await again.closed_with() == 4401
    await bobs.set("bob", "still here")  # others are untouched
    await bobs.ws.send(b"\x03")
    await bobs.recv()
    await wait_for_next_second()
    renewed = mint_token(SECRET, "alice", {"ws": "write"})
    assert (
        httpx.get(f"{server.http}/api/state/ws/panel", headers=bearer(renewed)).status_code == 200
    )
    listed = httpx.get(f"{server.http}/api/admin/revocations", headers=ADMIN).json()
    assert [r["subject"] for r in listed["revocations"]] == ["alice"]
    await bobs.close()


async def test_revoking_a_token_id_closes_that_token_only(server: ServerProcess) -> None:
    stolen = mint_token(SECRET, "carol", {"ws": "write"}, token_id="stolen-1")
    kept = mint_token(SECRET, "carol", {"ws": "write"}, token_id="kept-1")
    lost, fine = await yjs_socket(server, "ws", stolen), await json_socket(server, "ws", kept)
    answer = httpx.post(
        f"{server.http}/api/admin/revocations", headers=ADMIN, json={"tokenId": "stolen-1"}
    )
    assert answer.status_code == 201 and answer.json()["tokenId"] == "stolen-1"
    assert (await close_of(lost.ws))[:2] == (4401, "token revoked")
    await fine.send(json.dumps({"type": "ping"}))
    assert json.loads(await fine.recv()) == {"type": "pong"}
    headers = bearer(stolen)
    assert httpx.get(f"{server.http}/api/state/ws/panel", headers=headers).status_code == 401
    await fine.close()


async def test_a_revocation_survives_a_restart(tmp_path: Path) -> None:
    process = ServerProcess(tmp_path / "data").start()
    token = mint_token(SECRET, "dave", {"ws": "read"})
    try:
        answer = httpx.post(
            f"{process.http}/api/admin/revocations", headers=ADMIN, json={"subject": "dave"}
        )
        assert answer.status_code == 201
    finally:
        process.stop()
    process.start()
    try:
        refused = httpx.get(f"{process.http}/api/state/ws/p", headers=bearer(token))
        assert refused.status_code == 401 and "revoked" in refused.json()["message"]
    finally:
        process.stop()


# --- two replicas sharing PostgreSQL ---------------------------------------------------------


@pytest.fixture
async def two_replicas(pg_dsn: str, tmp_path: Path) -> AsyncIterator[list[ServerProcess]]:
    env = {"DATABASE_URL": pg_dsn, "REDIS_URL": redis_server.url()}
    started = [ServerProcess(tmp_path / name, env=env).start() for name in "ab"]
    yield started
    for process in started:
        process.stop()


async def test_a_revoked_subject_is_cut_off_on_every_replica(
    two_replicas: list[ServerProcess],
) -> None:
    a, b = two_replicas
    ws, subject = unique("w"), unique("erin")
    token = mint_token(SECRET, subject, {ws: "write"})
    sockets = [
        (await yjs_socket(a, ws, token)).ws,
        await json_socket(a, ws, token),
        (await yjs_socket(b, ws, token)).ws,
        await json_socket(b, ws, token),
    ]
    started = time.time()
    answer = httpx.post(f"{a.http}/api/admin/revocations", headers=ADMIN, json={"subject": subject})
    assert answer.status_code == 201 and answer.json()["closedSockets"] == 2
    closes = await asyncio.gather(*(close_of(sock) for sock in sockets))
    for code, reason, when in closes:
        assert (code, reason) == (4401, "token revoked")
        assert when - started < 1.0, when - started
    for replica in (a, b):
        refused = httpx.get(f"{replica.http}/api/state/{ws}/panel", headers=bearer(token))
        assert refused.status_code == 401
    listed = httpx.get(f"{b.http}/api/admin/revocations", headers=ADMIN).json()["revocations"]
    assert subject in [r.get("subject") for r in listed]


async def test_replicas_sharing_the_sqlite_file_share_revocations(tmp_path: Path) -> None:
    env = {"CRDT_STATE_DATA_DIR": str(tmp_path / "shared")}
    a = ServerProcess(tmp_path / "a", env=env).start()
    b = ServerProcess(tmp_path / "b", env=env).start()
    try:
        token = mint_token(SECRET, "frank", {"ws": "write"}, token_id="frank-1")
        on_b = await json_socket(b, "ws", token)
        started = time.time()
        answer = httpx.post(
            f"{a.http}/api/admin/revocations", headers=ADMIN, json={"tokenId": "frank-1"}
        )
        assert answer.status_code == 201 and answer.json()["closedSockets"] == 0
        code, reason, when = await close_of(on_b)
        assert (code, reason) == (4401, "token revoked") and when - started < 1.0
    finally:
        a.stop()
        b.stop()
