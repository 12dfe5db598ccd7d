"""Idempotency across replicas: a retry with the same Idempotency-Key that reaches another
replica gets the first answer, and the write applies once.

Three levels, all against the real Redis (and PostgreSQL for the servers): the Redis store
alone (claim, refresh, answer, release, a dead claim lapsing, Redis unreachable); the core's
claim-run-answer protocol with two caches standing for two replicas; and two real server
processes on PostgreSQL + Redis, retried across, raced, and with a failing first attempt.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from adapters.redis_idempotency import RedisIdempotencyStore, record_key
from crdt_state.errors import TestFailed, Unavailable
from crdt_state.idempotency import (
    Answer,
    IdempotencyCache,
    IdempotencyPending,
    IdempotencyRecord,
    record_name,
)

from . import redis_server
from .conftest import token
from .server import ServerProcess, free_port

WAIT = 5.0  # the longest any expected outcome may take before a test fails
HOUR_MS = 3600 * 1000


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = WAIT) -> None:
    """Wait until `await check()` is true (a TTL lapsing has no event to await)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url())
    yield client
    await client.aclose()


@pytest.fixture
async def stores() -> AsyncIterator[tuple[RedisIdempotencyStore, RedisIdempotencyStore]]:
    """Two replicas' stores (unique replica ids) on the test Redis."""
    url = redis_server.url()
    a = await RedisIdempotencyStore.open(url, unique("replica-a"))
    b = await RedisIdempotencyStore.open(url, unique("replica-b"))
    yield a, b
    await a.close()
    await b.close()


@pytest.fixture
async def name(redis: Redis) -> AsyncIterator[str]:
    """A record name no other test uses, deleted afterwards."""
    found = record_name(("tester", "PATCH", "/api/state/w/p", unique("key")))
    yield found
    await redis.delete(record_key(found))


# -- the Redis store ----------------------------------------------------------------------


async def test_a_key_is_claimed_once_and_its_answer_replaces_the_claim(stores, name, redis):
    a, b = stores
    assert await a.claim(name, "token-a", 5.0) is None
    assert 0 < await redis.pttl(record_key(name)) <= 5000  # the claim lapses on its own
    assert await b.claim(name, "token-b", 5.0) == IdempotencyRecord(a.replica_id)
    assert await b.claim(name, "token-b", 5.0) == IdempotencyRecord(a.replica_id)  # unchanged

    answer = (200, {"version": 7, "inversePatch": [{"op": "remove", "path": "/$state/x"}]})
    assert await a.complete(name, "token-a", answer, 3600)
    assert HOUR_MS - 5000 < await redis.pttl(record_key(name)) <= HOUR_MS
    assert await b.claim(name, "token-b", 5.0) == IdempotencyRecord(a.replica_id, answer)
    assert not await b.complete(name, "token-b", (200, {"version": 8}), 3600)  # first stays
    assert not await a.refresh(name, "token-a", 5.0)  # an answer is no claim to refresh
    await a.release(name, "token-a")  # nor to release
    assert (await b.claim(name, "token-b", 5.0)) == IdempotencyRecord(a.replica_id, answer)


async def test_only_the_claims_owner_refreshes_or_releases_it(stores, name, redis):
    a, b = stores
    assert await a.claim(name, "token-a", 0.5) is None
    assert not await b.refresh(name, "token-b", 60.0)
    assert await redis.pttl(record_key(name)) <= 500
    assert await a.refresh(name, "token-a", 60.0)
    assert 500 < await redis.pttl(record_key(name)) <= 60_000
    await b.release(name, "token-b")  # not b's: stays
    assert await b.claim(name, "token-b", 5.0) == IdempotencyRecord(a.replica_id)
    await a.release(name, "token-a")
    assert await redis.exists(record_key(name)) == 0
    assert await b.claim(name, "token-b", 5.0) is None  # released: the next one claims it


async def test_a_dead_replicas_claim_lapses_and_another_takes_it_over(stores, name):
    a, b = stores
    assert await a.claim(name, "token-a", 0.3) is None  # ... and replica a dies: no refresh
    assert await b.claim(name, "token-b", 5.0) == IdempotencyRecord(a.replica_id)

    async def claimed_by_b() -> bool:
        return await b.claim(name, "token-b", 5.0) is None

    await eventually(claimed_by_b)
    assert not await a.refresh(name, "token-a", 5.0)  # a's claim is gone for good
    assert await a.claim(name, "token-a", 5.0) == IdempotencyRecord(b.replica_id)


async def test_records_are_namespaced_hashed_and_bounded_in_name(stores, name, redis):
    a, _ = stores
    long_key = ("s" * 500, "PATCH", "/api/state/w/" + "p" * 200, "k:" * 300)
    long_name = record_name(long_key)
    assert len(long_name) == 64 and long_name != record_name((*long_key[:3], "k:" * 299 + "k;"))
    assert record_name(("a|b", "c")) != record_name(("a", "b|c"))  # parts cannot run together
    assert record_key(name) == f"crdt:idem:{name}"
    await a.claim(name, "token-a", 5.0)
    stored = orjson.loads(await redis.get(record_key(name)))
    assert stored == {"pending": "token-a", "replica": a.replica_id}


async def test_a_malformed_record_or_an_unreachable_redis_is_unavailable(stores, name, redis):
    a, _ = stores
    await redis.set(record_key(name), b"not json", px=60_000)
    with pytest.raises(Unavailable):
        await a.claim(name, "token-a", 5.0)
    down = RedisIdempotencyStore(f"redis://127.0.0.1:{free_port()}/0", "nobody")
    try:
        for call in (
            down.claim(name, "t", 5.0),
            down.refresh(name, "t", 5.0),
            down.complete(name, "t", (200, {}), 60),
            down.release(name, "t"),
        ):
            with pytest.raises(Unavailable):
                await call
    finally:
        await down.close()


# -- the core's protocol, two caches standing for two replicas ----------------------------


def counted(answer: Answer) -> tuple[list[int], Callable[[], Awaitable[Answer]]]:
    calls: list[int] = []

    async def work() -> Answer:
        calls.append(1)
        return answer

    return calls, work


@pytest.fixture
async def key(redis: Redis) -> AsyncIterator[tuple[str, ...]]:
    """A request's key no other test uses; its record deleted afterwards."""
    found = ("tester", "PATCH", "/api/state/w/p", unique("key"))
    yield found
    await redis.delete(record_key(record_name(found)))


async def test_a_retry_through_another_replica_gets_the_first_answer(stores, key):
    a, b = stores
    on_a, on_b = IdempotencyCache(shared=a), IdempotencyCache(shared=b)
    first_calls, first = counted((200, {"version": 2}))
    retry_calls, retry = counted((200, {"version": 3}))
    assert await on_a.run(key, first) == (200, {"version": 2})
    assert await on_b.run(key, retry) == (200, {"version": 2})
    assert (first_calls, retry_calls) == ([1], [])


async def test_a_retry_waits_for_the_first_request_running_elsewhere(stores, key):
    a, b = stores
    on_a = IdempotencyCache(shared=a, lease_seconds=0.5)  # refreshed every 0.17 s
    on_b = IdempotencyCache(shared=b, wait_seconds=WAIT)
    started, finish = asyncio.Event(), asyncio.Event()

    async def slow() -> Answer:
        started.set()
        await finish.wait()
        return 200, {"version": 5}

    retry_calls, retry = counted((200, {"version": 6}))
    first = asyncio.create_task(on_a.run(key, slow))
    await started.wait()
    waiting = asyncio.create_task(on_b.run(key, retry))
    # Not a synchronisation: the first request runs three leases long, and its claim, kept
    # fresh, must not lapse meanwhile (the retry would then run it a second time).
    await asyncio.sleep(1.6)
    assert not waiting.done()
    finish.set()
    assert await first == await waiting == (200, {"version": 5})
    assert retry_calls == []


async def test_concurrent_requests_on_two_replicas_run_once(stores, redis):
    a, b = stores
    on_a, on_b = IdempotencyCache(shared=a), IdempotencyCache(shared=b)
    runs: list[str] = []

    async def work(replica: str) -> Answer:
        runs.append(replica)
        await asyncio.sleep(0)  # let the other replica's request arrive meanwhile
        return 200, {"by": replica}

    for _ in range(20):
        key = ("tester", "PATCH", "/api/state/w/p", unique("race"))
        answers = await asyncio.gather(
            on_a.run(key, lambda: work("a")), on_b.run(key, lambda: work("b"))
        )
        assert answers[0] == answers[1]
        await redis.delete(record_key(record_name(key)))
    assert len(runs) == 20


async def test_a_failed_first_attempt_is_not_remembered(stores, key, redis):
    a, b = stores
    on_a, on_b = IdempotencyCache(shared=a), IdempotencyCache(shared=b)

    async def failing() -> Answer:
        raise TestFailed("'/$state/n' is not 1.")

    with pytest.raises(TestFailed):
        await on_a.run(key, failing)
    assert await redis.exists(record_key(record_name(key))) == 0  # the claim was released
    retry_calls, retry = counted((200, {"version": 3}))
    assert await on_b.run(key, retry) == (200, {"version": 3})
    assert retry_calls == [1]
    assert await on_a.run(key, failing) == (200, {"version": 3})  # now the first answer


async def test_a_dead_replicas_claim_is_taken_over_by_the_retry(stores, key):
    a, b = stores
    assert await a.claim(record_name(key), "dead", 0.3) is None  # claimed, then a died
    on_b = IdempotencyCache(shared=b, wait_seconds=WAIT)
    retry_calls, retry = counted((200, {"version": 4}))
    assert await on_b.run(key, retry) == (200, {"version": 4})
    assert retry_calls == [1]


async def test_a_retry_waits_a_bounded_time_then_says_pending(stores, key):
    a, b = stores
    name = record_name(key)
    assert await a.claim(name, "alive", 60.0) is None  # a long request on a live replica
    on_b = IdempotencyCache(shared=b, wait_seconds=0.2)
    retry_calls, retry = counted((200, {}))
    with pytest.raises(IdempotencyPending) as raised:
        await on_b.run(key, retry)
    assert raised.value.status == 409 and raised.value.details == {"retryAfter": 1}
    assert retry_calls == []
    await a.release(name, "alive")
    assert await on_b.run(key, retry) == (200, {})  # released: the retry runs for real


async def test_without_redis_each_replica_keeps_its_own_keys(key):
    down = RedisIdempotencyStore(f"redis://127.0.0.1:{free_port()}/0", "alone")
    cache = IdempotencyCache(shared=down)
    try:
        calls, work = counted((200, {"version": 1}))
        assert await cache.run(key, work) == (200, {"version": 1})  # the write goes on
        assert await cache.run(key, work) == (200, {"version": 1})  # remembered here
        assert calls == [1]
        assert cache.shared is not None and cache.shared.fallbacks == 1
    finally:
        await down.close()


# -- two real replicas on PostgreSQL + Redis ----------------------------------------------


@pytest.fixture
async def replicas(clean_pg: str, tmp_path: Path) -> AsyncIterator[list[ServerProcess]]:
    env = {"DATABASE_URL": clean_pg, "REDIS_URL": redis_server.url()}
    started = [ServerProcess(tmp_path / name, env=env).start() for name in "ab"]
    yield started
    for process in started:
        process.stop()


@pytest.fixture
def ws() -> str:
    return unique("idem")  # Redis is shared between tests: one workspace each


@pytest.fixture
async def http(ws: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {token('agent', {ws: 'write'})}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        yield client


async def create(http: httpx.AsyncClient, server: ServerProcess, url: str, state: Any) -> int:
    """Create the panel; its version."""
    answer = await http.put(f"{server.http}{url}", json={"state": {"$state": state}})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["version"])


async def changes(
    http: httpx.AsyncClient, server: ServerProcess, url: str, after: int
) -> list[Any]:
    """The patches of the panel's history after version `after`, oldest first."""
    answer = await http.get(f"{server.http}{url}/history", params={"limit": 1000})
    assert answer.status_code == 200, answer.text
    entries = reversed(answer.json()["history"])
    return [entry["patch"] for entry in entries if entry["version"] > after]


async def state(http: httpx.AsyncClient, server: ServerProcess, url: str) -> Any:
    answer = await http.get(f"{server.http}{url}")
    assert answer.status_code == 200, answer.text
    return answer.json()["state"]["$state"]


def add(value: Any) -> dict[str, Any]:
    return {"patches": [{"op": "add", "path": "/$state/n/-", "value": value}]}


async def test_a_patch_retried_on_a_second_replica_applies_once(replicas, ws, http, redis):
    a, b = replicas
    url = f"/api/state/{ws}/p"
    created = await create(http, a, url, {"n": []})
    headers = {"Idempotency-Key": "retry-1"}
    first = await http.patch(f"{a.http}{url}", json=add("once"), headers=headers)
    retried = await http.patch(f"{b.http}{url}", json=add("once"), headers=headers)
    assert first.status_code == retried.status_code == 200, (first.text, retried.text)
    assert first.json() == retried.json()
    assert first.headers["etag"] == retried.headers["etag"] == f'"{first.json()["version"]}"'
    assert await state(http, b, url) == {"n": ["once"]}
    assert await changes(http, a, url, created) == [
        [{"op": "add", "path": "/$state/n/0", "value": "once"}]
    ]
    name = record_name(("agent", "PATCH", url, "retry-1"))
    stored = orjson.loads(await redis.get(record_key(name)))
    assert (stored["status"], stored["body"]) == (200, first.json())
    assert HOUR_MS - 60_000 < await redis.pttl(record_key(name)) <= HOUR_MS


async def test_the_same_key_on_both_replicas_at_once_applies_once(replicas, ws, http):
    a, b = replicas
    url = f"/api/state/{ws}/race"
    created = await create(http, a, url, {"n": []})

    async def both(n: int) -> list[httpx.Response]:
        headers = {"Idempotency-Key": f"race-{n}"}
        return list(
            await asyncio.gather(
                *(http.patch(f"{s.http}{url}", json=add(n), headers=headers) for s in (a, b))
            )
        )

    pairs = await asyncio.gather(*(both(n) for n in range(10)))
    for on_a, on_b in pairs:
        assert on_a.status_code == on_b.status_code == 200, (on_a.text, on_b.text)
        assert on_a.json() == on_b.json()
    assert sorted((await state(http, a, url))["n"]) == list(range(10))
    assert len(await changes(http, b, url, created)) == 10
    versions = sorted(on_a.json()["version"] for on_a, _ in pairs)
    assert versions == list(range(created + 1, created + 11))


async def test_a_failed_first_attempt_is_retried_for_real_on_another_replica(replicas, ws, http):
    a, b = replicas
    url = f"/api/state/{ws}/test"
    created = await create(http, a, url, {"n": 0})
    guarded = {
        "patches": [
            {"op": "test", "path": "/$state/n", "value": 1},
            {"op": "replace", "path": "/$state/n", "value": 2},
        ]
    }
    headers = {"Idempotency-Key": "guarded"}
    failed = await http.patch(f"{a.http}{url}", json=guarded, headers=headers)
    assert failed.status_code == 409 and failed.json()["error"] == "test_failed", failed.text
    one = {"patches": [{"op": "replace", "path": "/$state/n", "value": 1}]}
    assert (await http.patch(f"{a.http}{url}", json=one)).status_code == 200
    retried = await http.patch(f"{b.http}{url}", json=guarded, headers=headers)
    assert retried.status_code == 200, retried.text
    again = await http.patch(f"{a.http}{url}", json=guarded, headers=headers)
    assert again.json() == retried.json()  # from now on, the answer that succeeded
    assert await state(http, a, url) == {"n": 2}
    assert len(await changes(http, b, url, created)) == 2
