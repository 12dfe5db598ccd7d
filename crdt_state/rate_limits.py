"""Rate limits: token buckets per connection and per token subject (per replica).

A bucket holds up to `burst` tokens and refills at `rate` per second; each request, update,
awareness message or byte takes tokens. What a client sees when it asks for more:
- REST: 429 `rate_limited` with `Retry-After` (whole seconds until it would be allowed);
- WebSockets: the socket's reader waits for the bucket (the client is slowed down through
  TCP, nothing is dropped); a client that would have to wait more than MAX_WAIT_SECONDS is
  closed with 4429 instead.
Defaults are far above what a person in a browser or a well-behaved service produces
(docs/SECURITY.md lists them).
"""

from __future__ import annotations

import math
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass

from .errors import RateLimited

MAX_WAIT_SECONDS = 5.0
MAX_SUBJECTS = 100_000  # buckets kept per kind; the least recently used go first


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: float

    @property
    def enabled(self) -> bool:
        return self.per_second > 0


@dataclass(frozen=True, slots=True)
class RateSettings:
    yjs_updates: Rate = Rate(500, 5000)  # per connection
    yjs_bytes: Rate = Rate(4 * 1024 * 1024, 64 * 1024 * 1024)  # per connection
    awareness: Rate = Rate(60, 300)  # per connection
    subject_updates: Rate = Rate(2500, 25_000)  # Yjs updates of every socket of a subject
    rest: Rate = Rate(1000, 5000)  # REST requests per subject
    creations: Rate = Rate(10, 1200)  # panels created per subject (600 a minute)


def rate_settings(
    rest: float, updates: float, update_bytes: float, awareness: float, creations_per_minute: float
) -> RateSettings:
    """The limits from their settings (0 turns one off); bursts allow a few seconds' worth."""
    return RateSettings(
        yjs_updates=Rate(updates, updates * 10),
        yjs_bytes=Rate(update_bytes, update_bytes * 16),
        awareness=Rate(awareness, awareness * 5),
        subject_updates=Rate(updates * 5, updates * 50),
        rest=Rate(rest, rest * 5),
        creations=Rate(creations_per_minute / 60, creations_per_minute * 2),
    )


class TokenBucket:
    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: Rate) -> None:
        self.rate = rate.per_second
        self.burst = rate.burst
        self.tokens = rate.burst
        self.updated = time.monotonic()

    def wait_for(self, cost: float = 1.0) -> float:
        """Take `cost` tokens: 0 when they are there now; else the seconds until they will
        be (the tokens are taken all the same: the caller waits that long, or gives up)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= cost
        if self.tokens >= 0:
            return 0.0
        return -self.tokens / self.rate

    def refund(self, cost: float) -> None:
        self.tokens = min(self.burst, self.tokens + cost)


class RateLimits:
    """The per-subject buckets of a replica, and what was limited (for /metrics)."""

    def __init__(self, settings: RateSettings | None = None) -> None:
        self.settings = settings or RateSettings()
        self.limited: Counter[str] = Counter()
        self._buckets: dict[str, OrderedDict[str, TokenBucket]] = {}

    def bucket(self, kind: str, rate: Rate, subject: str) -> TokenBucket:
        buckets = self._buckets.setdefault(kind, OrderedDict())
        bucket = buckets.get(subject)
        if bucket is None:
            bucket = buckets[subject] = TokenBucket(rate)
            if len(buckets) > MAX_SUBJECTS:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(subject)
        return bucket

    def admit(self, kind: str, rate: Rate, subject: str, what: str) -> None:
        """Take one token or raise RateLimited (429) without taking it."""
        if not rate.enabled:
            return
        bucket = self.bucket(kind, rate, subject)
        wait = bucket.wait_for()
        if wait > 0:
            bucket.refund(1)
            self.limited[kind] += 1
            raise RateLimited(
                f"Too many {what}: at most {rate.per_second:g} a second "
                f"(bursts of {rate.burst:g}). Retry after the delay given.",
                retryAfter=max(1, math.ceil(wait)),
            )

    def rest(self, subject: str) -> None:
        self.admit("rest", self.settings.rest, subject, "requests")

    def creation(self, subject: str | None) -> None:
        self.admit("creations", self.settings.creations, subject or "", "panels created")


class SocketLimits:
    """The buckets of one Yjs connection, and of its subject's every connection."""

    __slots__ = ("awareness", "bytes", "limits", "subject_updates", "updates")

    def __init__(self, limits: RateLimits, subject: str) -> None:
        settings = limits.settings
        self.limits = limits
        self.updates = TokenBucket(settings.yjs_updates) if settings.yjs_updates.enabled else None
        self.bytes = TokenBucket(settings.yjs_bytes) if settings.yjs_bytes.enabled else None
        self.awareness = TokenBucket(settings.awareness) if settings.awareness.enabled else None
        rate = settings.subject_updates
        self.subject_updates = limits.bucket("yjs", rate, subject) if rate.enabled else None

    def update_wait(self, size: int) -> float:
        """Seconds to wait before taking an update of `size` bytes."""
        waits = [
            self.updates.wait_for() if self.updates else 0.0,
            self.bytes.wait_for(size) if self.bytes else 0.0,
            self.subject_updates.wait_for() if self.subject_updates else 0.0,
        ]
        return self._count(max(waits), "yjs_updates")

    def awareness_wait(self) -> float:
        return self._count(self.awareness.wait_for() if self.awareness else 0.0, "awareness")

    def _count(self, wait: float, kind: str) -> float:
        if wait > 0:
            self.limits.limited[kind] += 1
        return wait
