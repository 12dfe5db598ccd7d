"""Rate limits: over REST a request past the limit gets 429 with Retry-After and changes
nothing; panel creations are limited per subject; a Yjs client sending faster than its limit
is slowed down, and one that would have to wait too long is closed with 4429. Counted on
/metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from crdt_state.rate_limits import Rate, TokenBucket

from .conftest import token
from .inprocess import client_of, running_app
from .server import ServerProcess
from .wire import RawPeer


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(Rate(per_second=10, burst=3))
    assert [bucket.wait_for() for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = bucket.wait_for()
    assert 0.05 < wait <= 0.1  # one token comes every 0.1 s


async def test_rest_past_the_limit_gets_429_with_retry_after_and_changes_nothing(
    tmp_path: Path,
) -> None:
    async with running_app(tmp_path, rate_rest=2) as app:  # 2 a second, bursts of 10
        api = client_of(app, token("hasty", {"ws": "write"}))
        answers = []
        for n in range(12):
            answers.append(await api.put("/api/state/ws/p", json={"state": {"$state": {"n": n}}}))
        codes = [a.status_code for a in answers]
        assert codes[:10] == [200] * 10 and answers[0].json()["created"] is True
        refused = answers[10]
        assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        other = client_of(app, token("patient", {"ws": "read"}))
        state = (await other.get("/api/state/ws/p")).json()["state"]["$state"]
        assert state == {"n": 9}  # the refused writes changed nothing
        metrics = (await other.get("/metrics")).text
        assert 'crdt_state_rate_limited_total{kind="rest"} 2' in metrics
        await api.aclose()
        await other.aclose()


async def test_panel_creations_are_limited_per_subject(tmp_path: Path) -> None:
    async with running_app(tmp_path, rate_panel_creations=3) as app:  # bursts of 6
        api = client_of(app, token("maker", {"ws": "write"}))
        answers = [
            await api.put(f"/api/state/ws/p{n}", json={"state": {"$state": {}}}) for n in range(8)
        ]
        codes = [a.status_code for a in answers]
        assert codes == [200] * 6 + [429] * 2
        assert all(a.json()["created"] is True for a in answers[:6])
        assert (await api.get("/api/state/ws/p7")).status_code == 404  # not created
        again = await api.put("/api/state/ws/p0", json={"state": {"$state": {"x": 1}}})
        assert again.status_code == 200  # writing an existing panel is not a creation
        await api.aclose()


@pytest.fixture
def slow_server(tmp_path: Path) -> Iterator[ServerProcess]:
    # Tight limits to reach quickly: 5 updates a second per connection (bursts of 50), and
    # 1,000 update bytes a second (bursts of 16,000).
    env = {"CRDT_STATE_RATE_YJS_UPDATES": "5", "CRDT_STATE_RATE_YJS_BYTES": "1000"}
    process = ServerProcess(tmp_path / "data", env=env).start()
    yield process
    process.stop()


def applied(server: ServerProcess, panel: str) -> int:
    headers = {"Authorization": f"Bearer {token('reader', {'ws': 'read'})}"}
    state = httpx.get(f"{server.http}/api/state/ws/{panel}", headers=headers).json()
    return len(state["state"]["$state"])


async def test_a_yjs_client_over_its_update_rate_is_slowed_down(
    slow_server: ServerProcess,
) -> None:
    peer = await RawPeer.open(f"{slow_server.yjs_url('ws')}/flood?token={token('flood')}")
    await peer.sync()
    for n in range(200):  # all sent at once: the server reads them at its pace
        await peer.set(f"k{n}", n)
    await asyncio.sleep(1.0)  # the rate is what is measured: time is the point here
    taken = applied(slow_server, "flood")
    assert 50 <= taken <= 50 + 5 * 3  # the burst, then 5 a second (with some slack)
    assert peer.ws.close_code is None  # slowed down, not cut off
    metrics = httpx.get(f"{slow_server.http}/metrics").text
    assert 'crdt_state_rate_limited_total{kind="yjs_updates"} 0' not in metrics
    await peer.close()


async def test_an_update_that_would_wait_too_long_closes_its_socket_with_4429(
    slow_server: ServerProcess,
) -> None:
    peer = await RawPeer.open(f"{slow_server.yjs_url('ws')}/big?token={token('big')}")
    await peer.sync()
    await peer.set("small", 1)
    await peer.set("huge", "x" * 100_000)  # 84 s of its byte rate at once
    assert await peer.closed_with() == 4429
    assert applied(slow_server, "big") == 1  # the small one only
