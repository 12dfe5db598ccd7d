"""Latency of `GET /api/state/{ws}/context` (docs/AI-CONTEXT.md) for workspaces of 10, 100
and 1,000 dashboard panels (~1.2 KB of JSON each, bench_git.panel_view), through the real
app in this process (SQLite, in-process fan-out; httpx's ASGI transport, no sockets).

    .venv/bin/python -m bench.context_latency            # prints one JSON document
    .venv/bin/python -m bench.context_latency --sizes 10,100 --repeats 10

Each workspace is filled over REST, then the app is restarted on the same store: its
panels are quiet (views read from the store, no room loaded), as on a server that has not
seen the workspace lately. Then, for a few budgets:

- cold: a rendering each time (each request asks a budget one token larger than the last:
  a new cache key, the same work);
- cached: the same request again (served from the cache: no rendering; what is left is
  listing the panels' versions);
- live: cold again once every panel's room is loaded (versions and views from the rooms).

p50 and p95 in milliseconds; `renders` is the server's count (GET /api/admin/context-cache).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from adapters.git import GitSnapshotRepository
from adapters.local import LocalFanout
from adapters.sqlite import SqliteUpdateLog
from bench.bench_git import panel_view
from crdt_state.app import Adapters, App, create_app
from crdt_state.auth import mint_token
from crdt_state.config import Settings

SECRET = "bench-secret-of-at-least-thirty-two-bytes!"
WORKSPACE = "bench"
BUDGETS = (1_000, 8_000, 50_000)
FILL_CONCURRENCY = 16


def settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        jwt_secret_key=SECRET,
        snapshot_interval_seconds=0,
        room_idle_seconds=0,
        rate_rest=0,  # the benchmark is the only client
        rate_panel_creations=0,
    )


class Running:
    """The app over SQLite in `data_dir`, its lifespan started, and a client of it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    async def __aenter__(self) -> httpx.AsyncClient:
        self.log = await SqliteUpdateLog.open(self.data_dir / "crdt-state.sqlite3")
        self.fanout = LocalFanout()
        self.repository = GitSnapshotRepository(self.data_dir / "git")
        parts = Adapters(self.log, self.fanout, None, self.repository)
        self.app: App = create_app(settings(self.data_dir), adapters=parts)
        self.lifespan = self.app.starlette.router.lifespan_context(self.app.starlette)
        await self.lifespan.__aenter__()
        token = mint_token(SECRET, "bench", {WORKSPACE: "admin"}, admin=True)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://bench",
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        )
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self.lifespan.__aexit__(None, None, None)
        await self.repository.close()
        await self.fanout.close()
        await self.log.close()


async def fill(api: httpx.AsyncClient, count: int) -> None:
    queue = iter(range(count))

    async def worker() -> None:
        for index in queue:
            body = {"state": panel_view(index), "triggeredBy": ("user", "ai", "system")[index % 3]}
            response = await api.put(f"/api/state/{WORKSPACE}/panel-{index:04d}", json=body)
            assert response.status_code in (200, 201), response.text

    await asyncio.gather(*(worker() for _ in range(FILL_CONCURRENCY)))


async def timed_get(api: httpx.AsyncClient, params: dict[str, Any]) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = await api.get(f"/api/state/{WORKSPACE}/context", params=params)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    return elapsed, response


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[max(int(len(ordered) * 0.95) - 1, 0)] * 1000, 2),
    }


async def renders(api: httpx.AsyncClient) -> int:
    response = await api.get("/api/admin/context-cache")
    count: int = response.json()["contextRenders"]
    return count


async def measure(
    api: httpx.AsyncClient, budget: int, repeats: int, extra: dict[str, Any], first: int = 1
) -> dict[str, Any]:
    """Cold: budgets `budget + first` on (each a new cache key); cached: `budget` again."""
    before = await renders(api)
    cold, tokens, shown = [], 0, 0
    for offset in range(first, first + repeats):
        elapsed, response = await timed_get(api, {"maxTokens": budget + offset, **extra})
        cold.append(elapsed)
        body = response.json()
        tokens = body["tokenEstimate"]
        shown = sum(1 for p in body["panels"] if p["shown"] != "omitted")
    rendered = await renders(api) - before
    await timed_get(api, {"maxTokens": budget, **extra})  # rendered once more, or a hit
    before = await renders(api)
    cached = []
    for _ in range(repeats):
        elapsed, response = await timed_get(api, {"maxTokens": budget, **extra})
        assert response.headers["X-Context-Cache"] == "hit"
        cached.append(elapsed)
    assert await renders(api) == before  # the cached calls rendered nothing
    return {
        "budget": budget,
        **{k: v for k, v in extra.items()},
        "cold": summary(cold),
        "cached": summary(cached),
        "renders": rendered,
        "tokenEstimate": tokens,
        "panelsShown": shown,
    }


async def bench_size(root: Path, count: int, repeats: int) -> dict[str, Any]:
    data_dir = root / f"ws-{count}"
    data_dir.mkdir()
    started = time.perf_counter()
    async with Running(data_dir) as api:
        await fill(api, count)
    fill_s = time.perf_counter() - started
    result: dict[str, Any] = {"panels": count, "fill_s": round(fill_s, 2), "quiet": []}
    async with Running(data_dir) as api:  # quiet panels: views from the store
        await timed_get(api, {"maxTokens": 500})  # warm-up: imports, first queries
        for budget in BUDGETS:
            result["quiet"].append(await measure(api, budget, repeats, {}))
        result["quiet"].append(await measure(api, 8_000, repeats, {"recentChanges": 20}))
        for index in range(count):  # every room loaded
            response = await api.get(f"/api/state/{WORKSPACE}/panel-{index:04d}")
            assert response.status_code == 200
        result["live"] = [await measure(api, 8_000, repeats, {}, first=repeats + 1)]
    return result


async def main(sizes: list[int], repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="context-bench-") as tmp:
        results = [await bench_size(Path(tmp), count, repeats) for count in sizes]
    return {
        "command": " ".join(["python -m bench.context_latency", *sys.argv[1:]]),
        "repeats": repeats,
        "python": sys.version.split()[0],
        "results": results,
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        "| panels | rooms | budget | changes | cold p50 / p95 ms | cached p50 / p95 ms "
        "| panels shown | tokens |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in report["results"]:
        for rooms in ("quiet", "live"):
            for row in result[rooms]:
                lines.append(
                    f"| {result['panels']:,} | {rooms} | {row['budget']:,} "
                    f"| {row.get('recentChanges', '–')} "
                    f"| {row['cold']['p50_ms']} / {row['cold']['p95_ms']} "
                    f"| {row['cached']['p50_ms']} / {row['cached']['p95_ms']} "
                    f"| {row['panelsShown']:,} | {row['tokenEstimate']:,} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--table", action="store_true", help="a markdown table on stderr too")
    args = parser.parse_args()
    report = asyncio.run(main([int(s) for s in args.sizes.split(",")], args.repeats))
    print(json.dumps(report, indent=2))
    if args.table:
        print(table(report), file=sys.stderr)
