"""A raw y-websocket peer in Python, for protocol, bad-input and auth tests.

Interop with the real Yjs client is tested with Node (tests/yjs_client.py); this peer exists to
send what a well-behaved client never would.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pycrdt import Doc, Map
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from crdt_state import protocol


class RawPeer:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.doc = Doc()
        self.state = self.doc.get("$state", type=Map)

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> RawPeer:
        return cls(await connect(url, max_size=None, **kwargs))

    async def recv(self, timeout: float = 5.0) -> protocol.Message:
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(frame, bytes)
        return protocol.decode(frame)

    async def sync(self) -> None:
        """Do the handshake: answer the server's step 1, ask for its state, apply it."""
        await self.ws.send(protocol.sync_step1(self.doc.get_state()))
        while True:
            message = await self.recv()
            if message.type == protocol.MessageType.SYNC:
                if message.sync_type == protocol.SyncType.STEP1:
                    await self.ws.send(protocol.sync_step2(self.doc.get_update(message.payload)))
                elif message.sync_type == protocol.SyncType.STEP2:
                    self.doc.apply_update(message.payload)
                    return

    async def set(self, key: str, value: Any) -> bytes:
        """Edit the local doc and send the update; returns the update sent."""
        updates: list[bytes] = []
        subscription = self.doc.observe(lambda event: updates.append(event.update))
        self.state[key] = value
        self.doc.unobserve(subscription)
        await self.ws.send(protocol.sync_update(updates[0]))
        return updates[0]

    async def closed_with(self, timeout: float = 5.0) -> int | None:
        """Wait for the server to close the socket; return its close code."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.ws.recv()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None

    async def close(self) -> None:
        await self.ws.close()
