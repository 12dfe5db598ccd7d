"""A socket lives no longer than its token: closed with 4401 within a second of `exp`, on the
Yjs and the JSON face alike; tokens that never expire are refused unless the server allows
them; dev mode is unaffected. Against a real server process."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import jwt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from crdt_state.auth import mint_token

from .server import SECRET, ServerProcess
from .wire import RawPeer

TTL = 3  # seconds: time to connect and sync, then the expiry itself is what is tested


async def close_of(ws: ClientConnection, timeout: float = 10.0) -> tuple[int | None, str, float]:
    """Read until the server closes: (code, reason, when it closed)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as closed:
        received = closed.rcvd
        return (
            received.code if received else None,
            received.reason if received else "",
            time.time(),
        )
    raise AssertionError("unreachable")


def expiring_token(subject: str, ttl: int = TTL) -> tuple[str, float]:
    token = mint_token(SECRET, subject, {"ws": "write"}, ttl_seconds=ttl)
    return token, float(jwt.decode(token, SECRET, ["HS256"])["exp"])


async def test_a_yjs_socket_is_closed_when_its_token_expires(server: ServerProcess) -> None:
    token, exp = expiring_token("alice")
    peer = await RawPeer.open(f"{server.yjs_url('ws')}/expiring?token={token}")
    await peer.sync()
    await peer.set("k", "written before expiry")
    code, reason, when = await close_of(peer.ws)
    assert (code, reason) == (4401, "token expired")
    assert exp - 0.05 <= when <= exp + 1.0, when - exp


async def test_a_json_socket_is_closed_when_its_token_expires(server: ServerProcess) -> None:
    token, exp = expiring_token("svc")
    async with connect(f"{server.ws}/ws/state/ws?token={token}") as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
        code, reason, when = await close_of(ws)
    assert (code, reason) == (4401, "token expired")
    assert exp - 0.05 <= when <= exp + 1.0, when - exp


async def test_a_write_after_expiry_is_not_applied(server: ServerProcess) -> None:
    token, exp = expiring_token("alice", ttl=2)
    peer = await RawPeer.open(f"{server.yjs_url('ws')}/late?token={token}")
    await peer.sync()
    await peer.set("before", 1)
    await asyncio.sleep(max(0.0, exp - time.time()) + 0.2)
    with pytest.raises(ConnectionClosed):
        await peer.set("after", 2)
        await peer.ws.recv()
    owner = {"Authorization": f"Bearer {mint_token(SECRET, 'o', {'ws': 'read'})}"}
    body = httpx.get(f"{server.http}/api/state/ws/late", headers=owner).json()
    assert body["state"]["$state"] == {"before": 1}


async def test_tokens_without_exp_are_refused_on_every_face(server: ServerProcess) -> None:
    forever = mint_token(SECRET, "svc", {"ws": "write"}, ttl_seconds=None)
    answer = httpx.get(
        f"{server.http}/api/state/ws/p", headers={"Authorization": f"Bearer {forever}"}
    )
    assert answer.status_code == 401
    assert "never expire" in answer.json()["message"]
    peer = await RawPeer.open(f"{server.yjs_url('ws')}/p?token={forever}")
    assert await peer.closed_with() == 4401
    async with connect(f"{server.ws}/ws/state/ws?token={forever}") as ws:
        code, reason, _ = await close_of(ws)
    assert code == 4401 and "never expire" in reason


async def test_a_server_may_allow_tokens_without_exp(tmp_path: Path) -> None:
    process = ServerProcess(
        tmp_path / "data", env={"CRDT_STATE_ALLOW_TOKENS_WITHOUT_EXP": "1"}
    ).start()
    try:
        forever = mint_token(SECRET, "svc", {"ws": "write"}, ttl_seconds=None)
        peer = await RawPeer.open(f"{process.yjs_url('ws')}/p?token={forever}")
        await peer.sync()
        await peer.set("k", 1)
        await peer.close()
        answer = httpx.get(
            f"{process.http}/api/state/ws/p", headers={"Authorization": f"Bearer {forever}"}
        )
        assert answer.status_code == 200 and answer.json()["state"]["$state"] == {"k": 1}
    finally:
        process.stop()


async def test_dev_mode_needs_no_token_and_closes_nothing(tmp_path: Path) -> None:
    process = ServerProcess(tmp_path / "data", dev=True).start()
    try:
        peer = await RawPeer.open(f"{process.yjs_url('ws')}/p")
        await peer.sync()
        await peer.set("k", 1)
        await peer.ws.send(b"\x03")  # query awareness: the socket still answers
        await peer.recv()
        await peer.close()
    finally:
        process.stop()
