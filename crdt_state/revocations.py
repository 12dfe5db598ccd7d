"""Revoked subjects and token ids: the record, what this replica enforces, and how replicas
learn about each other's revocations.

A revocation lives in the store (ports.Revocations: the SQLite file or PostgreSQL, whichever
the replicas share), never only in Redis or in memory. Every replica polls it (one indexed
range query on the id, every `poll_seconds`), adds what is new to its `RevocationList` (which
the Authenticator consults on every request, cached tokens included) and closes the sockets it
holds that the revocation covers (`sockets.LiveSockets`).

What a revocation covers (docs/SECURITY.md, "Revocation"):
- a token id: every token whose `jti` is that id;
- a subject: every token of that subject issued at or before the revocation (`iat` <= the
  revocation's time; a token without `iat` counts as issued before). The subject's next token,
  issued after, works: nothing needs lifting.

A revocation is kept until every token it covers must have expired: tokens live at most
`max_token_lifetime` from their `iat` (the Authenticator refuses longer ones), so that long
after the revocation. With no such limit (or tokens without `exp` allowed) it is kept forever.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from .background import cancel

if TYPE_CHECKING:
    from .auth import Principal
    from .ports import Revocations

log = logging.getLogger(__name__)

MAX_VALUE_CHARS = 1024
MAX_REASON_CHARS = 500
SYNC_BATCH = 1000  # rows read per poll query
STALE_AFTER_SECONDS = 5.0  # /ready reports revocations stale after this long without a poll


class RevocationKind(StrEnum):
    SUBJECT = "subject"
    TOKEN = "token"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Revocation:
    kind: RevocationKind
    value: str  # the subject, or the token id (jti)
    revoked_at: datetime
    expires_at: datetime | None  # None: kept until deleted by hand
    revoked_by: str
    reason: str | None = None
    id: int = 0  # the store's cursor (increasing, never reused); 0 before it is stored

    def in_force(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at.timestamp() > now

    def covers(self, principal: Principal) -> bool:
        if principal.dev:
            return False
        if self.kind is RevocationKind.TOKEN:
            return principal.token_id == self.value
        if principal.subject != self.value:
            return False
        return principal.issued_at is None or principal.issued_at <= self.revoked_at.timestamp()

    def message(self) -> str:
        when = self.revoked_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.kind is RevocationKind.TOKEN:
            return f"The token was revoked at {when}; get a new one."
        return f"The subject's tokens issued before {when} were revoked; get a new token."

    def to_json(self) -> dict[str, Any]:
        name = "subject" if self.kind is RevocationKind.SUBJECT else "tokenId"
        return {
            "id": self.id,
            name: self.value,
            "revokedAt": _iso(self.revoked_at),
            "expiresAt": _iso(self.expires_at),
            "revokedBy": self.revoked_by,
            "reason": self.reason,
        }


class RevocationList:
    """The revocations this replica enforces, by subject and by token id (in memory)."""

    def __init__(self) -> None:
        self._subjects: dict[str, Revocation] = {}
        self._tokens: dict[str, Revocation] = {}

    def __len__(self) -> int:
        return len(self._subjects) + len(self._tokens)

    def add(self, revocation: Revocation) -> None:
        found = self._subjects if revocation.kind is RevocationKind.SUBJECT else self._tokens
        known = found.get(revocation.value)
        # Of two revocations of one subject, the later covers all the earlier does.
        if known is None or revocation.revoked_at >= known.revoked_at:
            found[revocation.value] = revocation

    def covering(self, principal: Principal) -> Revocation | None:
        """The revocation that covers the principal's token, if any is in force."""
        if principal.dev or not (self._subjects or self._tokens):
            return None
        now = time.time()
        for revocation in (
            self._tokens.get(principal.token_id) if principal.token_id else None,
            self._subjects.get(principal.subject),
        ):
            if revocation is not None and revocation.in_force(now) and revocation.covers(principal):
                return revocation
        return None

    def expire(self, now: float) -> None:
        for found in (self._subjects, self._tokens):
            for value in [v for v, r in found.items() if not r.in_force(now)]:
                del found[value]


CloseCovered = Callable[[Revocation], int]


class RevocationService:
    """Revokes (store first, then this replica at once) and keeps this replica's list in step
    with the store by polling it; `close_covered` closes the sockets a revocation covers."""

    def __init__(
        self,
        store: Revocations | None,
        revoked: RevocationList,
        close_covered: CloseCovered,
        *,
        poll_seconds: float = 0.25,
        keep_seconds: float | None = None,
        purge_seconds: float = 60.0,
    ) -> None:
        self.store = store
        self.revoked = revoked
        self.close_covered = close_covered
        self.poll_seconds = poll_seconds
        self.keep_seconds = keep_seconds
        self.purge_seconds = purge_seconds
        self.cursor = 0
        self.synced_at = time.monotonic()
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._local_ids = itertools.count(1)  # without a store: ids of this process only

    async def start(self) -> None:
        """Load every revocation in force (before the replica serves anyone), then poll."""
        if self.store is not None:
            await self.sync()
            self._task = asyncio.create_task(self._poll(), name="revocations")

    async def close(self) -> None:
        await cancel(self._task)
        self._task = None

    async def revoke(
        self, kind: RevocationKind, value: str, revoked_by: str, reason: str | None = None
    ) -> tuple[Revocation, int]:
        """Store the revocation, enforce it here at once; (it, sockets closed here)."""
        now = datetime.now(UTC)
        expires = None
        if self.keep_seconds is not None:
            expires = datetime.fromtimestamp(now.timestamp() + self.keep_seconds, UTC)
        revocation = Revocation(kind, value, now, expires, revoked_by, reason)
        if self.store is not None:
            revocation = await self.store.revoke(revocation)
        else:
            revocation = replace(revocation, id=next(self._local_ids))
        return revocation, self._apply(revocation)

    async def listing(self, after: int, limit: int) -> list[Revocation]:
        """Revocations in force with an id above `after`, oldest first."""
        if self.store is not None:
            return await self.store.revocations_since(after, limit)
        return []

    async def sync(self) -> int:
        """Read what the store has after our cursor; the number of new revocations."""
        assert self.store is not None
        count = 0
        while True:
            rows = await self.store.revocations_since(self.cursor, SYNC_BATCH)
            for revocation in rows:
                self._apply(revocation)
                self.cursor = max(self.cursor, revocation.id)
            count += len(rows)
            if len(rows) < SYNC_BATCH:
                break
        self.synced_at = time.monotonic()
        if self.error is not None:
            log.info("revocations: reading the store again")
            self.error = None
        return count

    def health(self) -> dict[str, Any]:
        """For /ready: whether this replica reads the store in time, and how many it enforces."""
        stale = time.monotonic() - self.synced_at
        fresh = self.store is None or stale < max(STALE_AFTER_SECONDS, 4 * self.poll_seconds)
        report: dict[str, Any] = {
            "status": "ok" if fresh else "stale",
            "inForce": len(self.revoked),
        }
        if not fresh:
            report["secondsSinceRead"] = round(stale, 1)
        return report

    def _apply(self, revocation: Revocation) -> int:
        if not revocation.in_force(time.time()):
            return 0
        self.revoked.add(revocation)
        closed = self.close_covered(revocation)
        if closed:
            log.info("revocation %s closed %d socket(s)", revocation.id, closed)
        return closed

    async def _poll(self) -> None:
        assert self.store is not None
        purged = time.monotonic()
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.sync()
                now = time.monotonic()
                if now - purged >= self.purge_seconds:
                    purged = now
                    self.revoked.expire(time.time())
                    await self.store.purge_revocations(datetime.now(UTC))
            except Exception as exc:  # the store is down: keep what we know, try again
                if self.error is None:  # once per outage, not four times a second
                    log.warning("revocations: cannot read the store: %r", exc)
                self.error = repr(exc)
