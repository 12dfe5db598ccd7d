"""Drive real ``yjs`` + ``y-websocket`` clients from pytest.

``YjsClients`` starts ``node tests/js/yclient.mjs`` (installed by ``npm ci --prefix tests/js``)
and talks to it with JSON lines: each request gets an id, and the matching reply resolves the
awaiting call. The Node process holds any number of named clients, each one Y.Doc plus one
``WebsocketProvider`` (and its awareness), and raw ``ws`` sockets for protocol-level tests.

Every call has a timeout; a failed command (``ok: false``), a timeout or a dead Node process
raises ``YjsClientError`` (an ``AssertionError``) whose message ends with Node's stderr tail.

    async with YjsClients() as node:
        a = await node.connect("a", f"ws://127.0.0.1:{port}/ws/yjs/ws1", "panel-1")
        b = await node.connect("b", f"ws://127.0.0.1:{port}/ws/yjs/ws1", "panel-1")
        await a.set(["$state", "title"], "hello")
        await b.wait_for(["$state", "title"], "hello")
        await a.awareness({"user": "ann"})
        await b.wait_peers(1, match={"user": "ann"})

Pytest: ``yjs_clients`` below is a ready function-scoped fixture; import it into a test
module or conftest (``from .yjs_client import yjs_clients``) or build your own fixture around
``YjsClients``. Each Node process starts in ~0.1 s; one per test keeps tests independent.

Waiting calls (``wait_*``, ``connect``/``reconnect`` waiting for sync, ``raw_connect``) take
``within`` in seconds: Node gives up after it and reports the last value it saw; the Python
side waits a little longer so that Node's message wins. Other commands get ``timeout``
(default 10 s) given to ``YjsClients``.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest_asyncio

from .node_process import JS_DIR, NodeProcess

SCRIPT = JS_DIR / "yclient.mjs"
DEFAULT_WAIT = 5.0
"""Seconds a ``wait_*`` (or a connect waiting for sync) waits on the Node side."""
_WAIT_SLACK = 3.0

Json = Any
YPath = Sequence[str | int]
"""``[root, key or index, ...]``, e.g. ``["$state", "items", 0]``."""


class YjsClientError(AssertionError):
    """A Node command failed, timed out, or the Node process died."""


class YjsClients(NodeProcess):
    """One ``node yclient.mjs`` process holding named Yjs clients.

    Use ``async with YjsClients() as node:`` or ``await start()`` / ``await close()``.
    Methods mirror the Node commands and return the reply without ``id``/``ok``.
    """

    script = "yclient.mjs"
    requires = "y-websocket"
    error = YjsClientError
    what = "the Yjs client tests"

    @staticmethod
    def _wait_fields(within: float) -> dict[str, Any]:
        return {"timeoutMs": int(within * 1000)}

    def _wait_limit(self, within: float) -> float:
        return max(self.timeout, within + _WAIT_SLACK)

    # -- Yjs clients ---------------------------------------------------------------------------

    async def connect(
        self,
        name: str,
        url: str,
        room: str,
        *,
        params: Mapping[str, str | int | None] | None = None,
        protocols: Sequence[str] | None = None,
        awareness: Json = ...,
        wait_synced: bool = True,
        connect: bool = True,
        within: float = DEFAULT_WAIT,
    ) -> YjsClient:
        """Create a Y.Doc + WebsocketProvider connecting to ``{url}/{room}?{params}``.

        ``awareness`` (if given, ``None`` included) is set as the local state before the
        socket opens; otherwise y-websocket's default ``{}`` is announced. With
        ``wait_synced`` the call returns once the provider has synced with the server.
        """
        fields: dict[str, Any] = {"name": name, "url": url, "room": room}
        if params is not None:
            fields["params"] = dict(params)
        if protocols is not None:
            fields["protocols"] = list(protocols)
        if awareness is not ...:
            fields["awareness"] = awareness
        fields.update(waitSynced=wait_synced, connect=connect, **self._wait_fields(within))
        reply = await self.request("connect", limit=self._wait_limit(within), **fields)
        client = YjsClient(self, name, int(reply["clientId"]))
        client.keys_at_sync = reply.get("keysAtSync")
        return client

    def client(self, name: str) -> YjsClient:
        """A handle for an existing client (``client_id`` unknown: 0)."""
        return YjsClient(self, name, 0)

    async def set(self, name: str, path: YPath, value: Json) -> None:
        await self.request("set", name=name, path=list(path), value=value)

    async def burst(self, name: str, count: int, prefix: str = "k", within: float = 120) -> None:
        """`count` updates from client `name`, one transaction each, as fast as it can send."""
        await self.request("burst", limit=within, name=name, count=count, prefix=prefix)

    async def start_writing(self, name: str, hz: float, prefix: str) -> None:
        """Client `name` sets `$state[prefix + i] = i`, i = 0, 1, ..., `hz` times a second in
        its own doc (connected or not), until `stop_writing`."""
        await self.request("startWriting", name=name, hz=hz, prefix=prefix)

    async def stop_writing(self, name: str) -> int:
        """Stop the writer of `start_writing`; how many keys it wrote."""
        return int((await self.request("stopWriting", name=name))["written"])

    async def delete(self, name: str, path: YPath) -> bool:
        reply = await self.request("delete", name=name, path=list(path))
        return bool(reply["existed"])

    async def push(self, name: str, path: YPath, value: Json) -> None:
        await self.request("push", name=name, path=list(path), value=value)

    async def json(self, name: str, roots: Sequence[str] | None = None) -> dict[str, Json]:
        """``{root: doc.getMap(root).toJSON()}`` for ``$state``, ``$computed``, ``$meta``."""
        fields: dict[str, Any] = {} if roots is None else {"roots": list(roots)}
        reply = await self.request("json", name=name, **fields)
        return dict(reply["json"])

    async def state(self, name: str) -> dict[str, Json]:
        """The client's ``$state`` as JSON."""
        return (await self.json(name, ["$state"]))["$state"]  # type: ignore[no-any-return]

    async def wait_for(
        self,
        name: str,
        path: YPath,
        equals: Json = None,
        *,
        missing: bool = False,
        within: float = DEFAULT_WAIT,
    ) -> Json:
        """Wait until the JSON value at ``path`` equals ``equals`` (or is absent if ``missing``)."""
        fields: dict[str, Any] = {"name": name, "path": list(path)}
        fields.update({"missing": True} if missing else {"equals": equals})
        reply = await self.request(
            "waitFor", limit=self._wait_limit(within), **fields, **self._wait_fields(within)
        )
        return reply.get("value")

    async def wait_json_equals(
        self, name: str, expected: Json, *, root: str = "$state", within: float = DEFAULT_WAIT
    ) -> None:
        """Wait until the client's ``$state`` (or ``root``) JSON equals ``expected``."""
        await self.request(
            "waitJsonEquals",
            limit=self._wait_limit(within),
            name=name,
            json=expected,
            root=root,
            **self._wait_fields(within),
        )

    async def awareness(self, name: str, state: Json) -> None:
        """``awareness.setLocalState(state)``; ``None`` announces leaving."""
        await self.request("awareness", name=name, state=state)

    async def peers(self, name: str) -> dict[int, Json]:
        """Other clients' awareness states by client id."""
        reply = await self.request("peers", name=name)
        return {int(k): v for k, v in reply["states"].items()}

    async def wait_peers(
        self,
        name: str,
        count: int,
        *,
        match: Mapping[str, Json] | None = None,
        within: float = DEFAULT_WAIT,
    ) -> dict[int, Json]:
        """Wait until exactly ``count`` other clients have a state (one containing ``match``)."""
        fields: dict[str, Any] = {"name": name, "count": count}
        if match is not None:
            fields["match"] = dict(match)
        reply = await self.request(
            "waitPeers", limit=self._wait_limit(within), **fields, **self._wait_fields(within)
        )
        return {int(k): v for k, v in reply["states"].items()}

    async def stats(self, name: str) -> dict[str, Any]:
        """updatesReceived, messagesReceived, bytesReceived, closeCodes, closeEvents,
        localCloses, errors, terminalClose, synced, wsconnected, connects, clientId, url."""
        return await self.request("stats", name=name)

    async def disconnect(self, name: str) -> None:
        """``provider.disconnect()``: the doc stays, later edits are offline edits."""
        await self.request("disconnect", name=name)

    async def reconnect(
        self,
        name: str,
        *,
        params: Mapping[str, str | int | None] | None = None,
        wait_synced: bool = True,
        refresh_awareness: bool = False,
        within: float = DEFAULT_WAIT,
    ) -> None:
        """``provider.connect()`` (with new URL ``params`` if given), then wait for sync.

        y-websocket re-announces the local awareness state with an unchanged clock, so peers
        that saw this client leave ignore it for up to 15 s (the awareness renewal period);
        ``refresh_awareness`` sets the same state again afterwards, which peers do accept.
        """
        fields: dict[str, Any] = {
            "name": name,
            "waitSynced": wait_synced,
            "refreshAwareness": refresh_awareness,
        }
        if params is not None:
            fields["params"] = dict(params)
        await self.request(
            "reconnect", limit=self._wait_limit(within), **fields, **self._wait_fields(within)
        )

    async def wait_close(self, name: str, *, within: float = DEFAULT_WAIT) -> tuple[int, str]:
        """The next not yet consumed server-side close ``(code, reason)`` of this client."""
        reply = await self.request(
            "waitClose", limit=self._wait_limit(within), name=name, **self._wait_fields(within)
        )
        return int(reply["code"]), str(reply["reason"])

    async def destroy(self, name: str) -> None:
        await self.request("destroy", name=name)

    # -- raw sockets ---------------------------------------------------------------------------

    async def raw_connect(
        self,
        name: str,
        url: str,
        *,
        protocols: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
        expect_open: bool = True,
        within: float = DEFAULT_WAIT,
    ) -> dict[str, Any]:
        """Open a plain ``ws`` socket. Returns ``{opened, protocol, httpStatus, error, close}``;
        raises if it did not open and ``expect_open``."""
        fields: dict[str, Any] = {"name": name, "url": url}
        if protocols is not None:
            fields["protocols"] = list(protocols)
        if headers is not None:
            fields["headers"] = dict(headers)
        reply = await self.request(
            "rawConnect", limit=self._wait_limit(within), **fields, **self._wait_fields(within)
        )
        if expect_open and not reply["opened"]:
            raise self._error(f"raw socket {name!r} to {url} did not open: {reply}")
        return reply

    async def raw_send(self, name: str, data: bytes | str) -> None:
        """Send a binary frame (``bytes``) or a text frame (``str``)."""
        if isinstance(data, str):
            await self.request("rawSend", name=name, text=data)
        else:
            await self.request("rawSend", name=name, base64=_b64encode(data))

    async def raw_close(self, name: str, code: int = 1000, reason: str = "") -> None:
        await self.request("rawClose", name=name, code=code, reason=reason)

    async def raw_wait_close(self, name: str, *, within: float = DEFAULT_WAIT) -> tuple[int, str]:
        reply = await self.request(
            "rawWaitClose", limit=self._wait_limit(within), name=name, **self._wait_fields(within)
        )
        return int(reply["code"]), str(reply["reason"])

    async def raw_messages(self, name: str, *, clear: bool = False) -> list[bytes]:
        reply = await self.request("rawMessages", name=name, clear=clear)
        return [_b64decode(m) for m in reply["messages"]]

    async def raw_wait_messages(
        self, name: str, count: int, *, within: float = DEFAULT_WAIT
    ) -> list[bytes]:
        """Wait until at least ``count`` frames arrived; return all received so far."""
        reply = await self.request(
            "rawWaitMessages",
            limit=self._wait_limit(within),
            name=name,
            count=count,
            **self._wait_fields(within),
        )
        return [_b64decode(m) for m in reply["messages"]]


class YjsClient:
    """A handle on one named client of a ``YjsClients`` process."""

    def __init__(self, node: YjsClients, name: str, client_id: int) -> None:
        self.node = node
        self.name = name
        self.client_id = client_id
        # Keys of `$state` when the provider first reported synced (connect(wait_synced)).
        self.keys_at_sync: int | None = None

    def __repr__(self) -> str:
        return f"YjsClient({self.name!r}, client_id={self.client_id})"

    async def set(self, path: YPath, value: Json) -> None:
        await self.node.set(self.name, path, value)

    async def delete(self, path: YPath) -> bool:
        return await self.node.delete(self.name, path)

    async def push(self, path: YPath, value: Json) -> None:
        await self.node.push(self.name, path, value)

    async def json(self, roots: Sequence[str] | None = None) -> dict[str, Json]:
        return await self.node.json(self.name, roots)

    async def state(self) -> dict[str, Json]:
        return await self.node.state(self.name)

    async def wait_for(
        self,
        path: YPath,
        equals: Json = None,
        *,
        missing: bool = False,
        within: float = DEFAULT_WAIT,
    ) -> Json:
        return await self.node.wait_for(self.name, path, equals, missing=missing, within=within)

    async def wait_json_equals(
        self, expected: Json, *, root: str = "$state", within: float = DEFAULT_WAIT
    ) -> None:
        await self.node.wait_json_equals(self.name, expected, root=root, within=within)

    async def awareness(self, state: Json) -> None:
        await self.node.awareness(self.name, state)

    async def peers(self) -> dict[int, Json]:
        return await self.node.peers(self.name)

    async def wait_peers(
        self, count: int, *, match: Mapping[str, Json] | None = None, within: float = DEFAULT_WAIT
    ) -> dict[int, Json]:
        return await self.node.wait_peers(self.name, count, match=match, within=within)

    async def stats(self) -> dict[str, Any]:
        return await self.node.stats(self.name)

    async def disconnect(self) -> None:
        await self.node.disconnect(self.name)

    async def reconnect(
        self,
        *,
        params: Mapping[str, str | int | None] | None = None,
        wait_synced: bool = True,
        refresh_awareness: bool = False,
        within: float = DEFAULT_WAIT,
    ) -> None:
        await self.node.reconnect(
            self.name,
            params=params,
            wait_synced=wait_synced,
            refresh_awareness=refresh_awareness,
            within=within,
        )

    async def wait_close(self, *, within: float = DEFAULT_WAIT) -> tuple[int, str]:
        return await self.node.wait_close(self.name, within=within)

    async def destroy(self) -> None:
        await self.node.destroy(self.name)


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text)


@pytest_asyncio.fixture
async def yjs_clients() -> AsyncIterator[YjsClients]:
    """A fresh Node process per test; all its clients are destroyed afterwards."""
    async with YjsClients() as node:
        yield node
