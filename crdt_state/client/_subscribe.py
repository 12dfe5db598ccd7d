"""What a subscription to the JSON WebSocket (`/ws/state/{ws}`) decides, apart from any I/O:
which messages a (re)connection sends, which of the server's messages reach the caller, and
when to reconnect or give up. The async and the sync subscriptions run these.

Exactly once, in order: `Resume` remembers each panel's last version delivered. A connection
subscribes with it, so the server sends the versions missed (or a `state_sync` when it cannot);
anything at or below it is dropped. A `state_update` that skips a version (versions are
gapless) makes it subscribe again without a version: the caller gets a `state_sync`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosed, InvalidStatus

from ._call import segment
from .errors import ConnectionFailed, StateServiceError, error_from_answer, error_from_close

Message = dict[str, Any]
CHANGES = ("state_update", "state_deleted")
HIDDEN = ("pong", "subscribed", "unsubscribed")  # acknowledgements the caller needs not see
MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # a state_sync holds a whole panel
TRANSIENT = ("unavailable", "commit_pending", "repository_busy")  # errors worth a reconnection


class ServerBusy(ConnectionError):
    """A subscription refused for a while (the database is down...): the connection is
    dropped and made again, with backoff, as after any disconnection."""


class Resume:
    """Each panel's last version delivered, and what to do with each message."""

    def __init__(self, panel_ids: Iterable[str], versions: Mapping[str, int] | None = None):
        known = dict(versions or {})
        ids = [panel_ids] if isinstance(panel_ids, str) else panel_ids  # one panel's id
        self.versions: dict[str, int | None] = {p: known.get(p) for p in ids}
        if not self.versions:
            raise ValueError("Subscribe to at least one panel.")
        self._resuming: set[str] = set()  # subscribed with a version, not yet acknowledged
        self._resyncing: set[str] = set()  # waiting for a state_sync after a gap

    def hello(self) -> list[Message]:
        """What a new connection sends: each panel, from the version last delivered."""
        self._resyncing.clear()
        self._resuming = {p for p, v in self.versions.items() if v is not None}
        return [_subscribe(panel, version) for panel, version in self.versions.items()]

    def receive(self, message: Message) -> tuple[Message | None, list[Message]]:
        """(the message for the caller or None, the messages to send back)."""
        kind, panel, version = message.get("type"), message.get("panelId"), message.get("version")
        if kind in HIDDEN:
            self._resuming.discard(str(panel))
            return None, []
        if kind == "error" and panel in self.versions and message.get("code") in TRANSIENT:
            raise ServerBusy(f"Subscribing to {panel!r}: {message.get('message')}")
        if kind == "error" and panel in self._resuming:
            # Resuming refused (e.g. a version ahead of the panel's: the server lost it):
            # start over from the panel's state; a second refusal reaches the caller.
            self._resuming.discard(panel)
            self._resyncing.add(panel)
            return None, [_subscribe(panel, None)]
        if panel in self.versions and _is_version(version):
            return self._versioned(message, kind, panel, version)
        return message, []

    def _versioned(
        self, message: Message, kind: Any, panel: str, version: int
    ) -> tuple[Message | None, list[Message]]:
        known = self.versions[panel]
        if kind == "state_sync":
            if version == known and panel not in self._resyncing:
                return None, []  # the state the caller has
            self._resyncing.discard(panel)
            self.versions[panel] = version
            return message, []
        if kind in CHANGES:
            if panel in self._resyncing or (known is not None and version <= known):
                return None, []
            if known is not None and version > known + 1:
                self._resyncing.add(panel)
                return None, [{"type": "unsubscribe", "panelId": panel}, _subscribe(panel, None)]
            self.versions[panel] = version
        return message, []


def _subscribe(panel: Any, version: int | None) -> Message:
    message: Message = {"type": "subscribe", "panelId": panel}
    if version is not None:
        message["version"] = version
    return message


def _is_version(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def decode(text: str | bytes) -> Message:
    message = json.loads(text)
    if not isinstance(message, dict):
        raise StateServiceError(f"Unexpected message {message!r}.", code="unexpected_message")
    return message


def encode(message: Message) -> str:
    return json.dumps(message, separators=(",", ":"))


def state_socket_url(base_url: str, workspace_id: str, token: str | None) -> str:
    """`ws(s)://host/prefix/ws/state/{ws}?token=...` from the REST base URL."""
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = f"{parts.path.rstrip('/')}/ws/state/{segment(workspace_id)}"
    query = urlencode({"token": token}) if token else ""
    return urlunsplit((scheme, parts.netloc, path, query, ""))


@dataclass
class Reconnect:
    """Backoff between connection attempts; `attempts` consecutive failures (None: no
    limit) before giving up with ConnectionFailed. Close codes 4400-4499 and handshake
    refusals (4xx) raise their error at once: reconnecting as is would not help."""

    attempts: int | None = None
    backoff: float = 0.1
    max_backoff: float = 5.0
    failures: int = 0

    def failed(self, error: BaseException) -> float:
        """The delay before the next attempt; raises the error to give up with."""
        fatal = fatal_error(error)
        if fatal is not None:
            raise fatal from error
        if self.attempts is not None and self.failures >= self.attempts:
            raise ConnectionFailed(
                f"The subscription lost its connection and {self.failures} attempt(s) "
                f"to reconnect failed: {error!r}"
            ) from error
        ceiling = min(self.backoff * 2.0**self.failures, self.max_backoff)
        self.failures += 1
        return ceiling * (0.5 + random.random() / 2)

    def succeeded(self) -> None:
        self.failures = 0


def fatal_error(error: BaseException) -> StateServiceError | None:
    if isinstance(error, ConnectionClosed) and error.rcvd is not None:
        return error_from_close(error.rcvd.code, error.rcvd.reason)
    if isinstance(error, InvalidStatus):
        status = error.response.status_code
        if 400 <= status < 500 and status != 429:
            return error_from_answer(status, bytes(error.response.body or b""))
    return None
