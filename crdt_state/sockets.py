"""Every live WebSocket of this process (Yjs and JSON), by subject and by token id, so that
a revocation can close the ones it covers, and each closes itself when its token expires.

A face registers its socket once the token is checked and the socket accepted, with a
function that closes it with a code and a reason, and unregisters it in its `finally`. An
expiring token gets one timer (`loop.call_at`), cancelled when the socket goes: no polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .revocations import Revocation, RevocationKind
from .status import CLOSE_UNAUTHORIZED

if TYPE_CHECKING:
    from .auth import Principal

log = logging.getLogger(__name__)

# Closes a socket with (code, reason); may return an awaitable, which is run as a task.
Closer = Callable[[int, str], Awaitable[Any] | None]
Covering = Callable[["Principal"], Revocation | None]

EXPIRED = "token expired"
REVOKED = "token revoked"


class LiveSocket:
    __slots__ = ("_owner", "closed", "closer", "principal", "timer")

    def __init__(self, owner: LiveSockets, principal: Principal, closer: Closer) -> None:
        self._owner = owner
        self.principal = principal
        self.closer = closer
        self.timer: asyncio.TimerHandle | None = None
        self.closed: tuple[int, str] | None = None

    def close(self, code: int, reason: str) -> None:
        """Close the socket (once); the face's `finally` unregisters it."""
        if self.closed is not None:
            return
        self.closed = (code, reason)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        try:
            result = self.closer(code, reason)
        except Exception as exc:  # the socket is gone already: nothing to close
            log.debug("closing a socket failed: %r", exc)
            return
        if inspect.isawaitable(result):
            self._owner._run(result)

    def _expired(self) -> None:
        self.timer = None
        self.close(CLOSE_UNAUTHORIZED, EXPIRED)


class LiveSockets:
    def __init__(self, covering: Covering | None = None) -> None:
        self.covering = covering
        self._by_subject: dict[str, set[LiveSocket]] = {}
        self._by_token: dict[str, set[LiveSocket]] = {}
        self._closing: set[asyncio.Task[Any]] = set()
        self.closed_expired = 0
        self.closed_revoked = 0

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._by_subject.values())

    def register(self, principal: Principal, closer: Closer) -> LiveSocket:
        """Track a socket; closed at once if its token is revoked or expired already."""
        entry = LiveSocket(self, principal, closer)
        self._by_subject.setdefault(principal.subject, set()).add(entry)
        if principal.token_id:
            self._by_token.setdefault(principal.token_id, set()).add(entry)
        if self.covering is not None and self.covering(principal) is not None:
            self.closed_revoked += 1
            entry.close(CLOSE_UNAUTHORIZED, REVOKED)
        elif math.isfinite(principal.expires):
            delay = max(0.0, principal.expires - time.time())
            entry.timer = asyncio.get_running_loop().call_later(delay, self._expire, entry)
        return entry

    def unregister(self, entry: LiveSocket) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        _discard(self._by_subject, entry.principal.subject, entry)
        if entry.principal.token_id:
            _discard(self._by_token, entry.principal.token_id, entry)

    def close_covered(self, revocation: Revocation) -> int:
        """Close (4401) every socket whose token the revocation covers; how many."""
        index = self._by_subject if revocation.kind is RevocationKind.SUBJECT else self._by_token
        covered = [
            entry
            for entry in index.get(revocation.value, ())
            if entry.closed is None and revocation.covers(entry.principal)
        ]
        for entry in covered:
            entry.close(CLOSE_UNAUTHORIZED, REVOKED)
        self.closed_revoked += len(covered)
        return len(covered)

    def close_all(self, code: int, reason: str) -> int:
        """Close every socket (the server is stopping); how many."""
        entries = {e for group in self._by_subject.values() for e in group if e.closed is None}
        for entry in entries:
            entry.close(code, reason)
        return len(entries)

    def _expire(self, entry: LiveSocket) -> None:
        if entry.closed is None:
            self.closed_expired += 1
        entry._expired()

    def _run(self, closing: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(_quietly(closing))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


def _discard(index: dict[str, set[LiveSocket]], key: str, entry: LiveSocket) -> None:
    entries = index.get(key)
    if entries is not None:
        entries.discard(entry)
        if not entries:
            del index[key]


async def _quietly(closing: Awaitable[Any]) -> None:
    with contextlib.suppress(Exception):
        await closing
