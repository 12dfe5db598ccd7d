"""Idempotency-Key: a retried request gets the first answer instead of applying twice.

Only requests that carry a key are remembered, for `ttl_seconds` (an hour). Two layers:

- In memory, per replica: a retry that arrives while the first is still running here waits
  for its answer; answers are kept bounded in entries and in bytes (the oldest go first).
  The embedded single-process server has only this layer.
- Shared (`IdempotencyStore`, Redis when the server runs replicas): records every replica
  sees, so a retry that reaches another replica gets the first answer too. The first replica
  to see a key claims it atomically (a pending record with a lease of `lease_seconds`, which
  it refreshes while the request runs) and replaces the claim by the answer when done. A
  retry that finds a claim polls for the answer with back-off, at most `wait_seconds`, then
  answers 409 `idempotency_pending` with Retry-After. A claim whose replica died lapses with
  its lease, and the next retry runs the request for real. A request that fails (an error:
  nothing changed) releases its claim, as errors are never remembered.

When the shared store cannot be reached, a request runs with this replica's memory only (a
warning is logged once per outage): idempotency never fails a write that would otherwise
succeed. A retry waiting on another replica's claim when the store goes away answers
`idempotency_pending` instead of running: the first may still be running.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from .background import cancel
from .errors import IdempotencyPending, Unavailable

if TYPE_CHECKING:
    from .ports import IdempotencyStore

log = logging.getLogger(__name__)

Answer = tuple[int, Any]  # status, JSON body
Work = Callable[[], Awaitable[Answer]]

TTL_SECONDS = 3600.0  # how long an answer is kept
LEASE_SECONDS = 5.0  # a claim lapses this long after its replica last refreshed it
WAIT_SECONDS = 8.0  # the longest a retry waits for another replica's answer
POLL_FIRST_SECONDS = 0.01
POLL_MAX_SECONDS = 0.2
RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """What the shared store holds under a key: a claim (`answer` None: the request runs on
    `replica`) or the first request's answer."""

    replica: str
    answer: Answer | None = None


def record_name(key: tuple[str, ...]) -> str:
    """The key's name in the shared store: the SHA-256 of its parts (subject, method, path,
    Idempotency-Key) as a JSON array, in hex. Fixed in length, and holding no part in clear."""
    return hashlib.sha256(orjson.dumps(key)).hexdigest()


@dataclass(slots=True)
class _Entry:
    created: float
    future: asyncio.Future[Answer]
    size: int = 0  # bytes of the answer, once known


class IdempotencyCache:
    """What the faces call (`run(key, work)`): this replica's memory, in front of the shared
    store when there is one."""

    def __init__(
        self,
        *,
        ttl_seconds: float = TTL_SECONDS,
        max_entries: int = 10_000,
        max_bytes: int = 32 * 1024 * 1024,
        shared: IdempotencyStore | None = None,
        lease_seconds: float = LEASE_SECONDS,
        wait_seconds: float = WAIT_SECONDS,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple[str, ...], _Entry] = OrderedDict()
        self.shared = (
            None
            if shared is None
            else SharedIdempotency(
                shared,
                ttl_seconds=ttl_seconds,
                lease_seconds=lease_seconds,
                wait_seconds=wait_seconds,
            )
        )

    async def run(self, key: tuple[str, ...], work: Work) -> Answer:
        self._expire()
        entry = self._entries.get(key)
        if entry is not None:
            return await asyncio.shield(entry.future)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        entry = self._entries[key] = _Entry(time.monotonic(), future)
        try:
            answer = await (work() if self.shared is None else self.shared.run(key, work))
        except BaseException as exc:
            # A failure that changed nothing may be retried for real.
            self._entries.pop(key, None)
            future.set_exception(exc)
            future.exception()
            raise
        future.set_result(answer)
        if self._entries.get(key) is entry:
            entry.size = len(orjson.dumps(answer[1]))
            self.bytes += entry.size
            self._expire()
        return answer

    def _expire(self) -> None:
        now = time.monotonic()
        while self._entries:
            oldest_key, oldest = next(iter(self._entries.items()))
            fresh = now - oldest.created < self.ttl_seconds
            if fresh and len(self._entries) <= self.max_entries and self.bytes <= self.max_bytes:
                break
            del self._entries[oldest_key]
            self.bytes -= oldest.size


class SharedIdempotency:
    """Claim, run, answer: one key across replicas, through the shared store."""

    def __init__(
        self,
        store: IdempotencyStore,
        *,
        ttl_seconds: float = TTL_SECONDS,
        lease_seconds: float = LEASE_SECONDS,
        wait_seconds: float = WAIT_SECONDS,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.store = store
        self.ttl_seconds = ttl_seconds
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.fallbacks = 0  # requests run with this replica's memory only (store unreachable)
        self._reachable = True  # an outage is logged once, not once per request

    async def run(self, key: tuple[str, ...], work: Work) -> Answer:
        name = record_name(key)
        token = uuid.uuid4().hex
        try:
            record = await self.store.claim(name, token, self.lease_seconds)
        except Unavailable as exc:
            self._failed("claim", exc)
            self.fallbacks += 1
            return await work()  # the store is down: this replica's memory only
        self._succeeded()
        if record is not None:
            answer = await self._wait(name, token, record)
            if answer is not None:
                return answer
        return await self._run_claimed(name, token, work)

    async def _wait(self, name: str, token: str, record: IdempotencyRecord) -> Answer | None:
        """The first request's answer; None once the key is claimed for `token` (the claim it
        waited on was released or lapsed). Polls with back-off, at most wait_seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        delay = POLL_FIRST_SECONDS
        found: IdempotencyRecord | None = record
        while found is not None:
            if found.answer is not None:
                return found.answer
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise IdempotencyPending(
                    "A request with this Idempotency-Key is still running (on another replica). "
                    "Retry later with the same key to get its answer.",
                    retryAfter=RETRY_AFTER_SECONDS,
                )
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, POLL_MAX_SECONDS)
            try:
                found = await self.store.claim(name, token, self.lease_seconds)
            except Unavailable as exc:
                # The first may still run: running this one too could apply it twice.
                self._failed("wait", exc)
                raise IdempotencyPending(
                    "A request with this Idempotency-Key may still be running, and the "
                    "idempotency store cannot be reached. Retry later with the same key.",
                    retryAfter=RETRY_AFTER_SECONDS,
                ) from exc
        return None

    async def _run_claimed(self, name: str, token: str, work: Work) -> Answer:
        keeper = asyncio.create_task(self._keep(name, token), name="idempotency lease")
        try:
            answer = await work()
        except Exception:
            await cancel(keeper)
            await self._release(name, token)  # errors change nothing: the retry runs for real
            raise
        except BaseException:
            keeper.cancel()  # cancelled: the outcome is unknown, the claim lapses with its lease
            raise
        await cancel(keeper)
        try:
            if not await self.store.complete(name, token, answer, self.ttl_seconds):
                log.warning("idempotency: key %s was answered by another claim", name[:16])
        except Unavailable as exc:
            self._failed("answer", exc)  # the claim lapses: a retry elsewhere runs again
        return answer

    async def _keep(self, name: str, token: str) -> None:
        """Refresh the claim while the request runs (three times per lease)."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                held = await self.store.refresh(name, token, self.lease_seconds)
            except Unavailable as exc:
                self._failed("refresh", exc)
                continue
            if not held:
                log.warning(
                    "idempotency: the claim of key %s lapsed while its request ran; a retry "
                    "on another replica may run it again",
                    name[:16],
                )
                return

    async def _release(self, name: str, token: str) -> None:
        try:
            await self.store.release(name, token)
        except Unavailable as exc:
            self._failed("release", exc)  # the claim lapses with its lease

    def _failed(self, operation: str, exc: BaseException) -> None:
        level = logging.WARNING if self._reachable else logging.DEBUG
        self._reachable = False
        log.log(
            level,
            "idempotency store %s failed (%s): keys are kept by this replica only meanwhile",
            operation,
            exc,
        )

    def _succeeded(self) -> None:
        if not self._reachable:
            self._reachable = True
            log.info("idempotency store answers again")
