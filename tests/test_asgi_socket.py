"""Frames written straight to the transport (crdt_state/asgi_socket.py) reach a real client
exactly as uvicorn would have framed them, in order with frames sent through ASGI; with
permessage-deflate negotiated, every frame goes through ASGI. Served by a real uvicorn with the
WebSocket protocol `crdt-state serve` runs, against the `websockets` client."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect

from crdt_state.asgi_socket import UVICORN_WS, AsgiSocket, binary_frame

# Header sizes change at 126 and 65,536 bytes (RFC 6455, 5.2): both sides of each.
LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 70000]


def payload(length: int, seed: int) -> bytes:
    return bytes((seed + i) % 251 for i in range(length))


class App:
    """Sends LENGTHS payloads to each client, alternating the direct path and ASGI."""

    def __init__(self) -> None:
        self.direct: list[bool] = []
        self.written: list[bool] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        ws = AsgiSocket(scope, receive, send)
        self.direct.append(ws.direct)
        await ws.accept()
        for i, length in enumerate(LENGTHS):
            data = payload(length, i)
            if i % 2 == 0:
                written = ws.write_now(data)
                self.written.append(written)
                if not written:
                    await ws.send_bytes(data)
            else:
                await ws.send_bytes(data)
        await ws.receive()  # the client closes


@contextlib.asynccontextmanager
async def serving(app: App, deflate: bool) -> AsyncIterator[int]:
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, ws=UVICORN_WS, ws_per_message_deflate=deflate, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn's Server has no event for it
            await asyncio.sleep(0.01)
        yield listening.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        listening.close()


async def received(port: int, deflate: bool) -> list[bytes]:
    compression = "deflate" if deflate else None
    async with connect(f"ws://127.0.0.1:{port}/", compression=compression, max_size=None) as ws:
        return [await ws.recv() for _ in LENGTHS]  # type: ignore[misc]


def test_a_frame_is_the_header_of_its_length_and_the_payload() -> None:
    assert binary_frame(b"") == b"\x82\x00"
    assert binary_frame(b"x" * 125)[:2] == b"\x82\x7d"
    assert binary_frame(b"x" * 126)[:4] == b"\x82\x7e\x00\x7e"
    assert binary_frame(b"x" * 65536)[:10] == b"\x82\x7f" + (65536).to_bytes(8, "big")


async def test_direct_frames_reach_the_client_intact_and_in_order() -> None:
    app = App()
    async with serving(app, deflate=False) as port:
        got = await received(port, deflate=False)
    assert app.direct == [True]
    assert app.written == [True] * len(app.written)  # every even frame went the direct way
    assert got == [payload(length, i) for i, length in enumerate(LENGTHS)]


@pytest.mark.parametrize("offered", [False, True])
async def test_with_deflate_negotiated_frames_go_through_asgi(offered: bool) -> None:
    app = App()
    async with serving(app, deflate=True) as port:
        got = await received(port, deflate=offered)
    assert got == [payload(length, i) for i, length in enumerate(LENGTHS)]
    # Deflate on the server but not negotiated: the frames are plain, so still direct.
    assert app.written == [not offered] * len(app.written)
