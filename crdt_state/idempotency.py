"""Idempotency-Key: a retried request gets the first answer instead of applying twice.

Kept in memory per replica for `ttl_seconds` (a client retries on the replica it reached,
or after that window the retry is treated as new: documented). A retry that arrives while
the first is still running waits for its answer.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

Answer = tuple[int, Any]  # status, JSON body


class IdempotencyCache:
    def __init__(self, *, ttl_seconds: float = 3600, max_entries: int = 10_000) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, ...], tuple[float, asyncio.Future[Answer]]] = (
            OrderedDict()
        )

    async def run(self, key: tuple[str, ...], work: Callable[[], Awaitable[Answer]]) -> Answer:
        self._expire()
        entry = self._entries.get(key)
        if entry is not None:
            return await asyncio.shield(entry[1])
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._entries[key] = (time.monotonic(), future)
        try:
            answer = await work()
        except BaseException as exc:
            # A failure that changed nothing may be retried for real.
            del self._entries[key]
            future.set_exception(exc)
            future.exception()
            raise
        future.set_result(answer)
        return answer

    def _expire(self) -> None:
        now = time.monotonic()
        while self._entries:
            oldest_key, (created, _) = next(iter(self._entries.items()))
            if now - created < self.ttl_seconds and len(self._entries) < self.max_entries:
                break
            del self._entries[oldest_key]
