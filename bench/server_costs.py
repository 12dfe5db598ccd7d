"""Two costs of our server outside the Yjs workloads, for checkouts side by side:

- `restart`: a server stopped with SIGTERM (until its process is gone) and started again on
  the same data (until /health answers), polled every 2 ms (the bench's own restart polls
  every 50 ms, which hides anything finer);
- `http`: server CPU per request (from /proc) under keep-alive connections that each keep one
  request in flight, GETs of one panel or durable PATCHes of it, at whatever pace the server
  takes (the REST workload runs at a fixed rate, where the per-request cost drowns in noise).
  The REST rate limit is off for it (CRDT_STATE_RATE_REST=0): all answers are 200.

Each checkout runs its own server from its own tree with this venv (as bench.before_after):

    python -m bench.server_costs restart before=../before,PYTHONPATH=x after=. --rounds 6
    python -m bench.server_costs http before=../before after=. --kind get --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson

from .launchers import free_port

PANEL = "/api/state/ws/rest-panel"
POLL_SECONDS = 0.002  # polling a child's readiness: there is no event to wait on


class Checkout:
    def __init__(self, tree: Path, env: dict[str, str], data: Path) -> None:
        self.tree, self.data, self.port = tree, data, free_port()
        self.env = {**os.environ, **env, "CRDT_STATE_DATA_DIR": str(data)}
        self.env.setdefault("JWT_SECRET_KEY", "bench-secret-of-at-least-thirty-two-bytes!!")
        self.env.pop("DATABASE_URL", None)
        self.env.pop("REDIS_URL", None)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Seconds from the spawn to the first /health answer."""
        began = time.monotonic()
        argv = [sys.executable, "-m", "crdt_state", "serve", "--dev", "--log-level", "warning"]
        self.process = subprocess.Popen(
            [*argv, "--port", str(self.port)],
            cwd=self.tree,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server of {self.tree} exited at start")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=0.5):
                    return time.monotonic() - began
            except (urllib.error.URLError, OSError):
                time.sleep(POLL_SECONDS)

    def stop(self) -> float:
        """Seconds from SIGTERM to the process gone."""
        assert self.process is not None
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        self.process = None
        return time.monotonic() - began

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def restart(tree: Path, env: dict[str, str]) -> tuple[float, float]:
    """(stop, start) seconds of a server that has served one panel."""
    with tempfile.TemporaryDirectory() as data:
        server = Checkout(tree, env, Path(data))
        server.start()
        _put_panel(server)
        stopped = server.stop()
        started = server.start()
        server.stop()
        return stopped, started


def _put_panel(server: Checkout) -> None:
    state = {"title": "hot", "items": [{"id": i, "v": "x" * 20} for i in range(20)]}
    body = orjson.dumps({"state": {"$state": state}})
    request = urllib.request.Request(
        f"{server.url}{PANEL}", body, {"content-type": "application/json"}, method="PUT"
    )
    with urllib.request.urlopen(request) as answer:
        answer.read()


def _request(kind: str, index: int) -> bytes:
    if kind == "get":
        return f"GET {PANEL} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode()
    body = orjson.dumps([{"op": "add", "path": f"/$state/k{index % 20}", "value": index}])
    head = f"PATCH {PANEL} HTTP/1.1\r\nhost: 127.0.0.1\r\n"
    head += f"content-type: application/json-patch+json\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def _requests(port: int, kind: str, count: int, statuses: dict[bytes, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for index in range(count):
            writer.write(_request(kind, index))
            head = await reader.readuntil(b"\r\n\r\n")
            statuses[head[9:12]] = statuses.get(head[9:12], 0) + 1
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
    finally:
        writer.close()


def http_cost(tree: Path, env: dict[str, str], kind: str, total: int, connections: int) -> float:
    """Server CPU microseconds per request (after a warm-up of 500 per connection)."""
    with tempfile.TemporaryDirectory() as data:
        server = Checkout(tree, {**env, "CRDT_STATE_RATE_REST": "0"}, Path(data))
        server.start()
        try:
            _put_panel(server)
            statuses: dict[bytes, int] = {}

            async def load(each: int) -> None:
                await asyncio.gather(
                    *(_requests(server.port, kind, each, statuses) for _ in range(connections))
                )

            asyncio.run(load(500))
            before = server.cpu_seconds()
            asyncio.run(load(total // connections))
            spent = server.cpu_seconds() - before
            if set(statuses) != {b"200"}:
                raise RuntimeError(f"not every answer was 200: {statuses}")
            return spent / (total // connections * connections) * 1e6
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["restart", "http"])
    parser.add_argument("sources", nargs="+", help="label=checkout[,VAR=value...], oldest first")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--kind", choices=["get", "patch"], default="get")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    sources: dict[str, tuple[Path, dict[str, str]]] = {}
    for spec in args.sources:
        label, _, rest = spec.partition("=")
        path, *pairs = rest.split(",")
        sources[label] = (Path(path).resolve(), dict(pair.split("=", 1) for pair in pairs))
    figures: dict[str, dict[str, list[float]]] = {label: {} for label in sources}
    for _ in range(args.rounds):  # rounds alternate the checkouts
        for label, (tree, env) in sources.items():
            if args.what == "restart":
                stopped, started = restart(tree, env)
                figures[label].setdefault("stop (s)", []).append(stopped)
                figures[label].setdefault("start (s)", []).append(started)
            else:
                cost = http_cost(tree, env, args.kind, args.requests, args.connections)
                figures[label].setdefault(f"CPU per {args.kind} (us)", []).append(cost)
    for label, named in figures.items():
        for name, values in named.items():
            print(
                f"{label:10s} {name:20s} median {statistics.median(values):.4g} "
                f"[{min(values):.4g}-{max(values):.4g}] over {len(values)}"
            )


if __name__ == "__main__":
    main()
