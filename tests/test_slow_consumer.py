"""A client that does not read is disconnected with a transient code; memory stays bounded."""

from __future__ import annotations

from .conftest import token
from .server import ServerProcess
from .wire import RawPeer


async def test_a_slow_reader_is_dropped_with_1013_and_the_room_goes_on(tmp_path):
    server = ServerProcess(
        tmp_path, env={"CRDT_STATE_SEND_QUEUE_MESSAGES": "64", "CRDT_STATE_ROOM_IDLE_SECONDS": "0"}
    ).start()
    try:
        url = f"{server.yjs_url('ws')}/slow?token={token()}"
        writer = await RawPeer.open(url)
        await writer.sync()
        # max_queue=1 and no reads: the socket's buffers fill, then the server's send queue.
        slow = await RawPeer.open(url, max_queue=1)
        await slow.sync()
        sent = 600
        for i in range(sent):
            await writer.set("blob", f"{i:06d}" + "x" * 20_000)
        await writer.ws.send(b"\x03")  # round trip: the server handled every update
        await writer.recv()
        received = 0
        code = None
        try:
            while True:
                await slow.recv(timeout=10)
                received += 1
        except Exception as closed:
            code = getattr(getattr(closed, "rcvd", None), "code", None)
        assert code == 1013
        assert received < sent  # the queue was dropped, not delivered late
        await writer.set("still", "works")
        await writer.ws.send(b"\x03")
        await writer.recv()
    finally:
        server.stop()
