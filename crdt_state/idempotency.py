"""Idempotency-Key: a retried request gets the first answer instead of applying twice.

Only requests that carry a key are remembered. Kept in memory per replica for `ttl_seconds`
(a client retries on the replica it reached; after that window, or on another replica, the
retry is treated as new: documented), and bounded in entries and in bytes (the oldest go
first). A retry that arrives while the first is still running waits for its answer.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

Answer = tuple[int, Any]  # status, JSON body


@dataclass(slots=True)
class _Entry:
    created: float
    future: asyncio.Future[Answer]
    size: int = 0  # bytes of the answer, once known


class IdempotencyCache:
    def __init__(
        self,
        *,
        ttl_seconds: float = 3600,
        max_entries: int = 10_000,
        max_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple[str, ...], _Entry] = OrderedDict()

    async def run(self, key: tuple[str, ...], work: Callable[[], Awaitable[Answer]]) -> Answer:
        self._expire()
        entry = self._entries.get(key)
        if entry is not None:
            return await asyncio.shield(entry.future)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        entry = self._entries[key] = _Entry(time.monotonic(), future)
        try:
            answer = await work()
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
