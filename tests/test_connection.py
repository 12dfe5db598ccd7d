"""A connection sends at once while the socket takes frames, queues behind a held-up send,
and drops a client whose queue passes its bound; a stuck send never outlives the connection."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.websockets import WebSocketState

from crdt_state.auth import DEV_PRINCIPAL
from crdt_state.connection import CLOSE_TRY_AGAIN, Connection


class Socket:
    """A socket whose sends complete at once unless `hold` is cleared (the transport pushes
    back, as uvicorn's send does when the client stops reading)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed: tuple[int, str] | None = None
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.application_state = WebSocketState.CONNECTED
        self.waiting_sends = 0

    async def send_bytes(self, data: bytes) -> None:
        if not self.flowing.is_set():
            self.waiting_sends += 1
            try:
                await self.flowing.wait()
            finally:
                self.waiting_sends -= 1
        self.sent.append(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)
        self.application_state = WebSocketState.DISCONNECTED

    async def receive(self) -> dict[str, Any]:
        raise NotImplementedError


def connection(socket: Socket, max_messages: int = 100) -> Connection:
    return Connection(
        socket,
        DEV_PRINCIPAL,
        can_write=True,
        max_queue_messages=max_messages,
        max_queue_bytes=1 << 20,
    )


async def test_frames_go_out_at_once_while_the_socket_takes_them() -> None:
    socket = Socket()
    conn = connection(socket)
    for n in range(5):
        conn.send(b"%d" % n)
    assert socket.sent == [b"0", b"1", b"2", b"3", b"4"]  # no task, no wait: sent already
    assert conn.sent_messages == 5


async def test_frames_queue_behind_a_held_up_send_and_go_out_in_order() -> None:
    socket = Socket()
    conn = connection(socket)
    socket.flowing.clear()
    for n in range(4):
        conn.send(b"%d" % n)
    assert socket.sent == [] and socket.waiting_sends == 1
    socket.flowing.set()
    await conn.finish(5)
    assert socket.sent == [b"0", b"1", b"2", b"3"]
    conn.send(b"4")  # flowing again: at once
    assert socket.sent[-1] == b"4"


async def test_a_client_that_does_not_keep_up_is_closed_with_1013() -> None:
    socket = Socket()
    conn = connection(socket, max_messages=3)
    socket.flowing.clear()
    for n in range(10):
        conn.send(b"%d" % n)
    assert conn.closing
    socket.flowing.set()
    await conn.finish(5)
    assert socket.closed is not None and socket.closed[0] == CLOSE_TRY_AGAIN
    assert socket.sent == [b"0"]  # the send in progress finished; the queue was dropped


async def test_a_send_stuck_for_good_is_abandoned_when_the_connection_ends() -> None:
    socket = Socket()
    conn = connection(socket)
    socket.flowing.clear()
    conn.send(b"never")
    conn.close(1000)
    await conn.finish(0.05)  # the reader is gone: wait a little, then give up on the send
    await asyncio.sleep(0)  # let the cancelled writer unwind
    assert socket.waiting_sends == 0  # the held-up send was closed, not left pending
    assert socket.sent == []


class ReadySocket(Socket):
    """A socket whose client's messages are all read already: receive returns at once."""

    async def receive(self) -> dict[str, Any]:
        return {"type": "websocket.receive", "bytes": b"update"}


async def test_a_client_whose_messages_are_all_read_lets_the_loop_turn() -> None:
    """A burst already read from the socket is handled message by message without the read
    ever waiting; the connection gives the loop a turn every SLICE_SECONDS of it, so the
    process's other work (another socket, the fan-out reader, a timer) goes on meanwhile."""
    conn = connection(ReadySocket())
    turns = 0
    flooding = True

    async def other_work() -> None:
        nonlocal turns
        while flooding:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    started = turns
    deadline = asyncio.get_running_loop().time() + 0.2
    while asyncio.get_running_loop().time() < deadline:  # 200 ms of work, message by message
        await conn.receive()
        end = asyncio.get_running_loop().time() + 0.0005  # what handling one update costs
        while asyncio.get_running_loop().time() < end:
            pass
    during = turns - started
    flooding = False
    await other
    assert during >= 10, f"the rest of the process got {during} turns in 200 ms of a burst"
