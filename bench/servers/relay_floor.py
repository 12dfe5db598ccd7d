"""The floor of the Python stack: a y-websocket relay with no document, on bare ASGI + uvicorn.

A benchmark tool, not a server anyone should run: it answers a client's sync step 1 with an
empty step 2 (so the client counts as synced), relays every update and awareness frame to the
other clients of the room, and keeps nothing. It runs on the same uvicorn, websockets, uvloop
and httptools as crdt-state, so what it costs per delivery, per connection and per connect is
the least any server on this stack can cost: what is left above it is the server's own work.
It cannot serve a cold join (it holds no document), so it sits out the cold-sync workloads.

    python bench/servers/relay_floor.py --port 8000
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

import uvicorn

SYNC, AWARENESS = 0, 1
EMPTY_STEP2 = b"\x00\x01\x02\x00\x00"  # sync, step 2, an empty update
EMPTY_UPDATE_PAYLOAD = b"\x02\x00\x00"  # var-length bytes of the empty update

rooms: defaultdict[str, set[Any]] = defaultdict(set)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":  # readiness probe
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    room = rooms[scope["path"]]
    room.add(send)
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if not data or len(data) < 2:
                continue
            if data[0] == SYNC:
                if data[1] == 0:  # step 1: nothing to give, but the client is synced
                    await send({"type": "websocket.send", "bytes": EMPTY_STEP2})
                    continue
                if data[2:] == EMPTY_UPDATE_PAYLOAD:
                    continue
                frame = b"\x00\x02" + data[2:]  # step 2 or update: relay as an update
            elif data[0] == AWARENESS:
                frame = data
            else:
                continue
            out = {"type": "websocket.send", "bytes": frame}
            for other in list(room):
                if other is not send:
                    try:
                        await other(out)
                    except Exception:  # a client that left: its own reader cleans up
                        room.discard(other)
    finally:
        room.discard(send)
        if not room:
            rooms.pop(scope["path"], None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        log_level="warning",
        lifespan="on",
    )


if __name__ == "__main__":
    main()
