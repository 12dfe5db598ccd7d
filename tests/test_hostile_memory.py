"""Memory without bound, tried as an attacker with an ordinary token against a real server:
awareness floods, big writes without an Idempotency-Key, a JSON subscriber that never reads,
and query-awareness loops. Each stays within a stated bound, measured as the server's RSS or
as what the server sends."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from crdt_state import protocol

from .conftest import token
from .server import ServerProcess
from .wire import RawPeer

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # A JSON subscriber that reads nothing is given 2 s (10 by default) before it is closed.
    env = {"CRDT_STATE_SLOW_CLIENT_SECONDS": "2"}
    process = ServerProcess(tmp_path_factory.mktemp("hostile-memory"), env=env).start()
    yield process
    process.stop()


def rss(server: ServerProcess) -> int:
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    kib = next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]
    return int(kib) * 1024


def awareness(client_id: int, clock: int, state: str) -> bytes:
    entry = protocol.AwarenessEntry(client_id, clock, state)
    return protocol.awareness_message(protocol.encode_awareness([entry]))


async def writer(server: ServerProcess, panel: str, subject: str = "mallory") -> RawPeer:
    peer = await RawPeer.open(f"{server.yjs_url('ws')}/{panel}?token={token(subject)}")
    await peer.sync()
    return peer


async def presence_sent_to_a_joiner(server: ServerProcess, panel: str, tok: str) -> int:
    """Bytes of awareness a new client of `panel` is sent as it joins."""
    joiner = await RawPeer.open(f"{server.yjs_url('ws')}/{panel}?token={tok}")
    sent = 0
    try:
        while True:  # the server speaks first: its step 1, then the room's presence
            message = await joiner.recv(timeout=1.0)
            if message.type == protocol.MessageType.AWARENESS:
                sent += len(message.payload)
    except TimeoutError:
        pass
    await joiner.close()
    return sent


async def test_one_connection_cannot_register_thousands_of_presence_clients(
    server: ServerProcess,
) -> None:
    big = json.dumps({"pad": "x" * 30_000})
    peer = await writer(server, "aw-flood")
    before = rss(server)
    for client_id in range(1, 8_001):
        try:
            await peer.ws.send(awareness(client_id, 1, big))
        except Exception:
            break  # the server closed the socket
    assert await peer.closed_with() == 4413
    # The flooder's presence left with it; before that it held at most its 8 client ids.
    assert await presence_sent_to_a_joiner(server, "aw-flood", token("newcomer")) == 0
    assert rss(server) - before < 64 * MIB


async def test_many_connections_cannot_grow_a_rooms_presence_past_its_budget(
    server: ServerProcess,
) -> None:
    big = json.dumps({"pad": "y" * 60_000})  # 34 of these fit the room's 2 MiB budget
    peers = []
    for n in range(34):
        peer = await writer(server, "aw-budget", subject=f"user{n}")
        await peer.ws.send(awareness(10_000 + n, 1, big))
        peers.append(peer)
    one_more = await writer(server, "aw-budget", subject="user34")
    await one_more.ws.send(awareness(10_034, 1, big))
    assert await one_more.closed_with() == 4413  # the room's presence is full
    sent = await presence_sent_to_a_joiner(server, "aw-budget", token("newcomer"))
    assert 34 * 60_000 < sent <= 2 * MIB  # everyone admitted, and within the budget
    for peer in peers:  # they read nothing of the others' presence: no close handshake
        peer.ws.transport.abort()


async def test_big_writes_without_an_idempotency_key_are_not_remembered(
    server: ServerProcess,
) -> None:
    headers = {"Authorization": f"Bearer {token('mallory')}", "Content-Type": "application/json"}
    blob = "z" * (7 * MIB + MIB // 2)
    async with httpx.AsyncClient(base_url=server.http, headers=headers, timeout=60) as api:

        async def put(n: int) -> None:  # each a change: its answer's inverse holds 7.5 MiB
            body = orjson.dumps({"state": {"$state": {"blob": f"{n:04}{blob}"}}})
            answer = await api.put(f"/api/state/ws/big-{n % 2}", content=body)
            assert answer.status_code in (200, 201), answer.text[:200]

        for n in range(10):
            await put(n)
        after_ten = rss(server)
        for n in range(10, 40):
            await put(n)
        grown = rss(server) - after_ten
    # The answers (with their inverse patches) of 30 more 7.5 MiB writes would be 450 MB.
    assert grown < 96 * MIB, f"RSS grew {grown / MIB:.0f} MiB over 30 more writes"


class RawSubscriber:
    """A JSON subscriber on a bare TCP socket with a small receive buffer, that reads nothing
    until told to: no client library buffering on its behalf."""

    def __init__(self, server: ServerProcess, subject: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        self.sock.connect(("127.0.0.1", server.port))
        self.sock.settimeout(30)
        tok = token(subject, {"ws": "read"})
        self.sock.sendall(
            f"GET /ws/state/ws?token={tok} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        assert self.buffer.startswith(b"HTTP/1.1 101"), self.buffer[:100]
        self.buffer = self.buffer.split(b"\r\n\r\n", 1)[1]

    def send(self, message: dict[str, Any]) -> None:
        payload = json.dumps(message).encode()
        assert len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_until_closed(self) -> tuple[int, int | None]:
        """Read every frame; (text frames read, the close code) once the server closes."""
        texts = 0
        try:
            while True:
                first, second = self._read(2)
                length = second & 0x7F
                if length == 126:
                    length = struct.unpack(">H", self._read(2))[0]
                elif length == 127:
                    length = struct.unpack(">Q", self._read(8))[0]
                payload = self._read(length)
                if first & 0x0F == 0x8:
                    return texts, struct.unpack(">H", payload[:2])[0] if payload else None
                texts += first & 0x0F == 0x1
        except EOFError:
            return texts, None


async def test_a_json_subscriber_that_never_reads_is_closed_not_buffered(
    server: ServerProcess,
) -> None:
    headers = {"Authorization": f"Bearer {token('agent', {'ws': 'write'})}"}
    async with httpx.AsyncClient(base_url=server.http, headers=headers, timeout=30) as api:
        await api.put("/api/state/ws/firehose", json={"state": {"$state": {}}})
        sub = RawSubscriber(server, "sub")
        sub.send({"type": "subscribe", "panelId": "firehose"})
        before = rss(server)
        value = "w" * 100_000
        writes = 120  # 12 MB of notices for a client that reads none of them
        for n in range(writes):
            path = f"/$state/k{n % 50}"
            answer = await api.patch(
                "/api/state/ws/firehose",
                json={"patches": [{"op": "add", "path": path, "value": f"{n}{value}"}]},
            )
            assert answer.status_code == 200
        await asyncio.sleep(3)  # the server gives a client that reads nothing 2 s
        grown = rss(server) - before
        texts, code = await asyncio.to_thread(sub.read_until_closed)
        sub.sock.close()
    assert code == 1013  # try again later: it was too slow
    assert texts < writes  # not everything was kept for it
    assert grown < 48 * MIB, f"RSS grew {grown / MIB:.0f} MiB"


async def test_query_awareness_in_a_loop_is_answered_once_a_second(
    server: ServerProcess,
) -> None:
    present = await writer(server, "aw-query", subject="someone")
    await present.ws.send(awareness(777, 1, json.dumps({"pad": "q" * 30_000})))
    reader_token = token("rita", {"ws": "read"})
    reader = await RawPeer.open(f"{server.yjs_url('ws')}/aw-query?token={reader_token}")
    await reader.sync()  # (the presence a joiner is sent comes, and goes, with the handshake)
    await asyncio.sleep(1.1)  # a query now is answered: the once-a-second window has passed
    for _ in range(20):
        await reader.ws.send(b"\x03")  # query-awareness, one byte each
    answers = 0
    with pytest.raises(TimeoutError):
        while True:
            message = await reader.recv(timeout=1.5)
            answers += message.type == protocol.MessageType.AWARENESS
    assert answers == 2  # one at once, one a second later for the 19 others
    await reader.close()
    await present.close()
