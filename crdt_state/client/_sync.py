"""`SyncStateClient`: the API over httpx.Client, for code without an event loop, and
`SyncSubscription`: the JSON WebSocket as a blocking iterator. Same methods, arguments,
answers, errors and retries as `StateClient` (both send the `Call`s of `_api.StateApi`)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection, connect

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


class SyncStateClient(StateApi[dict[str, Any]]):
    """The crdt-state API, blocking. Use it as a context manager::

    with SyncStateClient("http://crdt-state:8001", token=jwt) as state:
        panel = state.get_state("ws-1", "chart")
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
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.policy = RetryPolicy(retries, backoff, max_retry_wait=max_retry_wait)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=client_headers(token, headers),
            timeout=timeout,
            transport=transport,
        )
        self._open_timeout = self._http.timeout.connect or 10.0
        self._subscriptions: set[SyncSubscription] = set()

    def __enter__(self) -> SyncStateClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every subscription and the HTTP connections."""
        for subscription in list(self._subscriptions):
            subscription.close()
        self._http.close()

    def _send(self, call: Call) -> dict[str, Any]:
        attempts = Attempts(call, self.policy)
        while True:
            try:
                response = self._http.send(call.build(self._http))
            except httpx.TransportError as exc:
                delay = attempts.failed(exc)
            else:
                wait = attempts.answered(response)
                if wait is None:
                    return result(response)
                delay = wait
            time.sleep(delay)

    def subscribe(
        self,
        workspace_id: str,
        panel_ids: Iterable[str],
        *,
        versions: Mapping[str, int] | None = None,
        reconnect_attempts: int | None = None,
    ) -> SyncSubscription:
        """As `StateClient.subscribe`, as a blocking iterator (run it in a thread of its
        own; `close()` from another thread ends it)::

            with state.subscribe("ws-1", ["chart"]) as changes:
                for message in changes:
                    ...
        """
        subscription = SyncSubscription(
            state_socket_url(self.base_url, workspace_id, self._token),
            Resume(panel_ids, versions),
            Reconnect(reconnect_attempts),
            open_timeout=self._open_timeout,
            on_close=self._subscriptions.discard,
        )
        self._subscriptions.add(subscription)
        return subscription


class SyncSubscription:
    """`Subscription`, blocking: an iterator of messages that reconnects and resumes."""

    def __init__(
        self,
        url: str,
        resume: Resume,
        reconnect: Reconnect,
        *,
        open_timeout: float,
        on_close: Callable[[SyncSubscription], None] | None = None,
    ) -> None:
        self._url = url
        self._resume = resume
        self._reconnect = reconnect
        self._open_timeout = open_timeout
        self._on_close = on_close
        self._ws: ClientConnection | None = None
        self._closing = threading.Event()
        self.connections = 0

    @property
    def versions(self) -> dict[str, int]:
        """Each panel's last version delivered."""
        return {p: v for p, v in self._resume.versions.items() if v is not None}

    def __enter__(self) -> SyncSubscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        while not self._closing.is_set():
            try:
                ws = self._ws or self._connect()
                message = decode(ws.recv())
                self._reconnect.succeeded()
                deliver, replies = self._resume.receive(message)
                for reply in replies:
                    ws.send(encode(reply))
            except _LOST as exc:
                if self._closing.is_set():
                    break
                self._drop()
                self._closing.wait(self._reconnect.failed(exc))
                continue
            if deliver is not None:
                return deliver
        raise StopIteration

    def _connect(self) -> ClientConnection:
        ws = connect(
            self._url, open_timeout=self._open_timeout, max_size=MAX_MESSAGE_BYTES, legacy=True
        )
        self._ws = ws
        self.connections += 1
        if self._closing.is_set():  # closed from another thread while connecting
            ws.close()
        for message in self._resume.hello():
            ws.send(encode(message))
        return ws

    def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):  # already gone
                ws.close()

    def close(self) -> None:
        self._closing.set()
        self._drop()
        if self._on_close is not None:
            self._on_close(self)
