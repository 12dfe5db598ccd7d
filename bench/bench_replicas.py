"""Cross-replica fan-out: latency and throughput with 1, 2 and 4 replicas on this machine.

    python -m bench.bench_replicas [--updates 150] [--clients 8]

Replicas are real `crdt-state serve` processes sharing a fresh PostgreSQL database and the
local Redis. Clients are y-websocket peers (pycrdt docs, the wire protocol of
tests/wire.py) spread round-robin over the replicas, all in one panel; each sends updates
carrying its send time, and every other client records when it sees them. Latency is send →
observe on the same machine clock. JSON on stdout, a table on stderr; the JSON is also
written to bench/results/replicas.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from adapters.postgres import migrate
from tests.conftest import token
from tests.pg import create_database, drop_database
from tests.server import ServerProcess
from tests.wire import RawPeer

RESULTS = Path(__file__).parent / "results" / "replicas.json"
REDIS_URL = os.environ.get("CRDT_STATE_BENCH_REDIS", "redis://127.0.0.1:6379/0")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def run(
    replicas: int, clients: int, updates: int, interval: float, folder: Path, dsn: str
) -> dict[str, Any]:
    servers = [
        ServerProcess(
            folder / f"r{replicas}-{i}", env={"DATABASE_URL": dsn, "REDIS_URL": REDIS_URL}
        )
        for i in range(replicas)
    ]
    for server in servers:
        server.start()
    workspace = f"bench{uuid.uuid4().hex[:8]}"
    try:
        peers = []
        for i in range(clients):
            server = servers[i % replicas]
            url = f"{server.yjs_url(workspace)}/p?token={token(f'c{i}', {workspace: 'write'})}"
            peer = await RawPeer.open(url)
            await peer.sync()
            peers.append(peer)
        expected = updates * (clients - 1)
        seen: list[list[float]] = [[] for _ in peers]
        done = asyncio.Event()
        remaining = [expected] * clients

        async def receive(index: int, peer: RawPeer) -> None:
            events = seen[index]

            def on_change(event: Any) -> None:
                now = time.time()
                for key in event.keys:
                    if key.startswith("c") and not key.startswith(f"c{index}:"):
                        sent = peer.state[key]
                        if isinstance(sent, float):
                            events.append(now - sent)
                            remaining[index] -= 1

            subscription = peer.state.observe(on_change)
            try:
                while remaining[index] > 0:
                    message = await peer.recv(timeout=30)
                    if message.sync_type is not None and message.type == 0:
                        peer.doc.apply_update(message.payload)
            finally:
                peer.state.unobserve(subscription)
            if all(r <= 0 for r in remaining):
                done.set()

        readers = [asyncio.create_task(receive(i, p)) for i, p in enumerate(peers)]
        started = time.time()

        async def send(index: int, peer: RawPeer) -> None:
            for n in range(updates):
                await peer.set(f"c{index}:{n}", time.time())
                await asyncio.sleep(interval)

        await asyncio.gather(*(send(i, p) for i, p in enumerate(peers)))
        await asyncio.wait_for(asyncio.gather(*readers), 120)
        elapsed = time.time() - started
        latencies = [ms * 1000 for events in seen for ms in events]
        for peer in peers:
            await peer.close()
        return {
            "replicas": replicas,
            "clients": clients,
            "updatesPerClient": updates,
            "offeredUpdatesPerSecond": round(clients / interval, 1),
            "deliveries": len(latencies),
            "lostDeliveries": expected * clients - len(latencies),
            "seconds": round(elapsed, 3),
            "deliveriesPerSecond": round(len(latencies) / elapsed, 1),
            "latencyMs": {
                "p50": round(percentile(latencies, 0.50), 2),
                "p95": round(percentile(latencies, 0.95), 2),
                "p99": round(percentile(latencies, 0.99), 2),
                "max": round(max(latencies), 2),
                "mean": round(statistics.fmean(latencies), 2),
            },
        }
    finally:
        for server in servers:
            server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=150)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--replicas", default="1,2,4")
    parser.add_argument("--interval-ms", type=float, default=25.0, help="per client")
    args = parser.parse_args()
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in [int(n) for n in args.replicas.split(",")]:
            dsn = await create_database()
            try:
                await migrate(dsn)
                rows.append(
                    await run(
                        count, args.clients, args.updates, args.interval_ms / 1000, Path(tmp), dsn
                    )
                )
            finally:
                await drop_database(dsn)
            row = rows[-1]
            print(
                f"{row['replicas']} replica(s): p50 {row['latencyMs']['p50']} ms, "
                f"p99 {row['latencyMs']['p99']} ms, {row['deliveriesPerSecond']} deliveries/s, "
                f"lost {row['lostDeliveries']}",
                file=sys.stderr,
            )
    result = {
        "benchmark": "cross-replica fan-out",
        "command": "python -m bench.bench_replicas " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "note": "load generator (one Python process) shares the 2 cores with the replicas, "
        "PostgreSQL and Redis; more replicas than cores add scheduling, not capacity",
        "storage": "PostgreSQL (fresh database) + Redis Pub/Sub",
        "runs": rows,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    asyncio.run(main())
