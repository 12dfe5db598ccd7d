"""`StateClient`: the API over httpx.AsyncClient, and `Subscription`: the JSON WebSocket as
an async iterator that reconnects and resumes by version."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from ._api import StateApi
from ._call import Attempts, Call, RetryPolicy, client_headers, result
from ._subscribe import (
    MAX_MESSAGE_BYTES,
    Message,
    Reconnect,
    Resume,
    decode,
    encode,
    state_socket_url,
)

_LOST = (ConnectionClosed, InvalidHandshake, OSError, TimeoutError)


class StateClient(StateApi[Awaitable[dict[str, Any]]]):
    """The crdt-state API for asyncio services. Use it as an async context manager::

        async with StateClient("http://crdt-state:8001", token=jwt) as state:
            panel = await state.get_state("ws-1", "chart")

    Every method returns the API's JSON answer as a dict, or raises the error's class from
    `crdt_state.client.errors`. Reads, writes (each with its own Idempotency-Key) and calls
    answered 503 are tried again up to `retries` times; a 4xx never is.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        retries: int = 3,
        timeout: float | httpx.Timeout = 15.0,
        backoff: float = 0.2,
        max_retry_wait: float = 10.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.policy = RetryPolicy(retries, backoff, max_retry_wait=max_retry_wait)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=client_headers(token, headers),
            timeout=timeout,
            transport=transport,
        )
        self._open_timeout = self._http.timeout.connect or 10.0
        self._subscriptions: set[Subscription] = set()

    async def __aenter__(self) -> StateClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every subscription and the HTTP connections."""
        for subscription in list(self._subscriptions):
            await subscription.aclose()
        await self._http.aclose()

    def _send(self, call: Call) -> Awaitable[dict[str, Any]]:
        return self._exchange(call)

    async def _exchange(self, call: Call) -> dict[str, Any]:
        attempts = Attempts(call, self.policy)
        while True:
            try:
                response = await self._http.send(call.build(self._http))
            except httpx.TransportError as exc:
                delay = attempts.failed(exc)
            else:
                wait = attempts.answered(response)
                if wait is None:
                    return result(response)
                delay = wait
            await asyncio.sleep(delay)

    def subscribe(
        self,
        workspace_id: str,
        panel_ids: Iterable[str],
        *,
        versions: Mapping[str, int] | None = None,
        reconnect_attempts: int | None = None,
    ) -> Subscription:
        """Every change of `panel_ids`, in order, exactly once, across reconnections::

            async with state.subscribe("ws-1", ["chart"]) as changes:
                async for message in changes:
                    ...  # state_sync, then state_update / state_deleted

        `versions`: the version the caller already has of some panels (their changes since
        are sent, instead of a `state_sync`), e.g. `versions=old_subscription.versions`.
        `reconnect_attempts`: consecutive failed reconnections before ConnectionFailed
        (None: keep trying, backing off up to 5 s)."""
        subscription = Subscription(
            state_socket_url(self.base_url, workspace_id, self._token),
            Resume(panel_ids, versions),
            Reconnect(reconnect_attempts),
            open_timeout=self._open_timeout,
            on_close=self._subscriptions.discard,
        )
        self._subscriptions.add(subscription)
        return subscription


class Subscription:
    """An async iterator of the server's messages (`state_sync`, `state_update`,
    `state_deleted`, `error`); acknowledgements (`subscribed`, `pong`...) are not shown.
    Connects on first use; after a disconnection, reconnects with backoff and resumes each
    panel from its last version. Close codes 4400-4499 raise their error (Unauthorized for
    an expired token...). Ends (StopAsyncIteration) once `aclose()` is called."""

    def __init__(
        self,
        url: str,
        resume: Resume,
        reconnect: Reconnect,
        *,
        open_timeout: float,
        on_close: Callable[[Subscription], None] | None = None,
    ) -> None:
        self._url = url
        self._resume = resume
        self._reconnect = reconnect
        self._open_timeout = open_timeout
        self._on_close = on_close
        self._ws: ClientConnection | None = None
        self._closing = asyncio.Event()
        self.connections = 0  # connections opened so far (1 + reconnections)

    @property
    def versions(self) -> dict[str, int]:
        """Each panel's last version delivered."""
        return {p: v for p, v in self._resume.versions.items() if v is not None}

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        while not self._closing.is_set():
            try:
                ws = self._ws or await self._connect()
                message = decode(await ws.recv())
                self._reconnect.succeeded()
                deliver, replies = self._resume.receive(message)
                for reply in replies:
                    await ws.send(encode(reply))
            except _LOST as exc:
                if self._closing.is_set():
                    break
                await self._drop()
                delay = self._reconnect.failed(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
                continue
            if deliver is not None:
                return deliver
        raise StopAsyncIteration

    async def _connect(self) -> ClientConnection:
        ws = await connect(self._url, open_timeout=self._open_timeout, max_size=MAX_MESSAGE_BYTES)
        try:
            for message in self._resume.hello():
                await ws.send(encode(message))
        except BaseException:
            ws.transport.abort()  # subscribed to some panels only: never used
            raise
        self._ws = ws
        self.connections += 1
        if self._closing.is_set():  # closed while connecting
            await ws.close()
        return ws

    async def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def aclose(self) -> None:
        self._closing.set()
        await self._drop()
        if self._on_close is not None:
            self._on_close(self)
