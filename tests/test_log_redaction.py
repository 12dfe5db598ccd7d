"""No token reaches a log line: uvicorn's access log and its WebSocket handshake lines carry
the query string, and WebSocket clients send `?token=<jwt>`."""

from __future__ import annotations

import logging

import httpx
import pytest
from websockets.asyncio.client import connect

from crdt_state.auth import mint_token
from crdt_state.log_redaction import REDACTED, RedactTokens, redact

from .server import SECRET, ServerProcess
from .wire import RawPeer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /p?token=abc.def.ghi HTTP/1.1", f"GET /p?token={REDACTED} HTTP/1.1"),
        ("/p?x=1&token=abc&y=2", f"/p?x=1&token={REDACTED}&y=2"),
        ("/p?TOKEN=abc", f"/p?TOKEN={REDACTED}"),
        ("/p?tok%65n=abc", f"/p?tok%65n={REDACTED}"),
        ("/p?access_token=abc", f"/p?access_token={REDACTED}"),
        ("/p?tokens=abc&version=3", "/p?tokens=abc&version=3"),
        ("bearer eyJhbGciOi.eyJzdWIiOiJh.c2lnbmF0dXJl", f"bearer {REDACTED}"),
        ("nothing to see", "nothing to see"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_the_filter_keeps_uvicorns_access_record_shape() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/p?token=secret", "1.1", 200),
        None,
    )
    assert RedactTokens().filter(record)
    assert isinstance(record.args, tuple) and len(record.args) == 5
    assert record.getMessage() == f'127.0.0.1:5 - "GET /p?token={REDACTED} HTTP/1.1" 200'


async def test_no_token_reaches_the_servers_log(server: ServerProcess) -> None:
    token = mint_token(SECRET, "alice", {"ws": "write"})
    signature = token.rsplit(".", 1)[1]
    httpx.get(f"{server.http}/api/state/ws/p?token={token}")
    httpx.get(f"{server.http}/health?tok%65n={token}")
    peer = await RawPeer.open(f"{server.yjs_url('ws')}/p?token={token}")
    await peer.sync()
    await peer.close()
    async with connect(f"{server.ws}/ws/state/ws?token={token}") as ws:
        await ws.send('{"type": "ping"}')
        await ws.recv()
    refused = await RawPeer.open(f"{server.yjs_url('ws')}/p?token={token}x")  # bad signature
    assert await refused.closed_with() == 4401
    with pytest.raises(Exception, match="403"):  # refused at the handshake, and logged
        await RawPeer.open(f"{server.yjs_url('ws')}/p?token={token}", origin="https://evil.test")
    server.stop()
    log = server.log_path.read_text()
    assert "GET /api/state/ws/p?token=" in log and "WebSocket /ws/yjs/ws/p?token=" in log
    assert "/ws/state/ws?token=" in log and "403" in log
    assert token not in log and signature not in log
    assert log.count(REDACTED) >= 6
