"""The IdempotencyStore port on Redis: idempotency records every replica sees.

One string per key, `crdt:idem:{sha256}` (the core hashes subject, method, path and
Idempotency-Key: fixed-size names that hold nothing in clear), holding one of

    {"pending": token, "replica": id}               a claim; lapses after its lease (PX)
    {"status": 200, "body": {...}, "replica": id}   the answer; lapses after an hour

Each operation is one Lua script (one atomic step on the key, one round trip): claim is
"return what is there, else store my claim" (SET NX, but telling what it found); refresh and
release act only on the caller's own claim (compared byte for byte); complete stores the
answer unless an answer is there already (the first one stays). Answers are stored whole:
they are bounded by the request limits (a PUT's inverse patch is at most its state), and
they all expire. Any Redis failure raises Unavailable: the core then falls back to the
replica's own memory.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import Any

import orjson

from crdt_state.errors import Unavailable
from crdt_state.idempotency import Answer, IdempotencyRecord

from .redis import _TRANSPORT_ERRORS, _client, _describe, _guarded, _retry_once

log = logging.getLogger(__name__)

KEY_PREFIX = "crdt:idem:"
_PENDING = b'{"pending":'  # how every claim begins (orjson keeps the members' order)

_CLAIM = """
local found = redis.call('GET', KEYS[1])
if found then return found end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_COMPLETE = """
local found = redis.call('GET', KEYS[1])
if found and string.sub(found, 1, string.len(ARGV[3])) ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def record_key(name: str) -> str:
    return f"{KEY_PREFIX}{name}"


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def parse_record(raw: bytes) -> IdempotencyRecord:
    """A stored record; Unavailable for anything else (the key is not ours to trust)."""
    try:
        value = orjson.loads(raw)
        replica = str(value["replica"])
        if "pending" in value:
            return IdempotencyRecord(replica)
        status = value["status"]
        if not isinstance(status, int):
            raise TypeError(f"status {status!r}")
        return IdempotencyRecord(replica, (status, value["body"]))
    except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
        raise Unavailable(f"a malformed idempotency record ({exc})") from exc


class RedisIdempotencyStore:
    """Build it with `await RedisIdempotencyStore.open(url, replica_id)`."""

    def __init__(self, url: str, replica_id: str, *, timeout_seconds: float = 1.0) -> None:
        self.replica_id = replica_id
        self._client = _client(url, timeout_seconds, _retry_once())
        self._claim = self._client.register_script(_CLAIM)
        self._refresh = self._client.register_script(_REFRESH)
        self._complete = self._client.register_script(_COMPLETE)
        self._release = self._client.register_script(_RELEASE)

    @classmethod
    async def open(
        cls, url: str, replica_id: str, *, timeout_seconds: float = 1.0
    ) -> RedisIdempotencyStore:
        """The store; Redis being down now is logged, not raised (keys are then kept per
        replica until it answers)."""
        store = cls(url, replica_id, timeout_seconds=timeout_seconds)
        try:
            await _guarded(store._client.ping())
        except _TRANSPORT_ERRORS as exc:
            log.warning("idempotency: Redis at %s cannot be reached yet: %s", url, _describe(exc))
        return store

    def pending(self, token: str) -> bytes:
        """The claim `token` stores: compared byte for byte by refresh and release."""
        return orjson.dumps({"pending": token, "replica": self.replica_id})

    async def claim(self, key: str, token: str, lease_seconds: float) -> IdempotencyRecord | None:
        args: list[bytes | int] = [self.pending(token), _milliseconds(lease_seconds)]
        found = await self._call(self._claim(keys=[record_key(key)], args=args))
        return None if found is None else parse_record(found)

    async def refresh(self, key: str, token: str, lease_seconds: float) -> bool:
        args: list[bytes | int] = [self.pending(token), _milliseconds(lease_seconds)]
        return bool(await self._call(self._refresh(keys=[record_key(key)], args=args)))

    async def complete(self, key: str, token: str, answer: Answer, ttl_seconds: float) -> bool:
        status, body = answer
        record = orjson.dumps({"status": status, "body": body, "replica": self.replica_id})
        args: list[bytes | int] = [record, _milliseconds(ttl_seconds), _PENDING]
        return bool(await self._call(self._complete(keys=[record_key(key)], args=args)))

    async def release(self, key: str, token: str) -> None:
        await self._call(self._release(keys=[record_key(key)], args=[self.pending(token)]))

    async def close(self) -> None:
        with suppress(Exception):
            await self._client.aclose()

    async def _call(self, call: Any) -> Any:
        try:
            return await _guarded(call)
        except _TRANSPORT_ERRORS as exc:
            raise Unavailable(f"Redis cannot be reached: {_describe(exc)}") from exc
