"""Two costs of our server outside the Yjs workloads, for checkouts side by side:

- `restart`: a server stopped with SIGTERM (until its process is gone) and started again on
  the same data (until /health answers), polled every 2 ms (the bench's own restart polls
  every 50 ms, which hides anything finer);
- `http`: server CPU per request under keep-alive connections that each keep one request in
  flight, GETs of one panel or durable PATCHes of it, at whatever pace the server takes (the
  REST workload runs at a fixed rate, where the per-request cost drowns in noise). The REST
  rate limit is off for it (CRDT_STATE_RATE_REST=0): all answers are 200. `--auth` runs the
  server with JWT authentication (a bearer token on every request) instead of `--dev`,
  `--rate-limit` keeps the server's default REST rate limit, and `--pace N` sends N requests a
  second in all, spread over the connections, instead of as fast as answered. Each connection
  waits for its answer before its next request, so over many connections paced PATCHes bunch
  behind a commit and share its fsync; the REST workload's PATCH phase (an open-loop client)
  commits each alone, which `--pace 200 --connections 1` reproduces;
- `calls`: Python function calls per request on the server's event-loop thread, counted by
  cProfile: requests one at a time, 200 a second (each PATCH alone in its commit, as the REST
  workload's PATCH phase). A count, not a time: the same every round, where CPU per request
  moves by 10-20 % with the shared machine. It sees no other thread and no native code (the
  database's work, the kernel's).

Each checkout runs its own server from its own tree with this venv (as bench.before_after):

    python -m bench.server_costs restart before=../before,PYTHONPATH=x after=. --rounds 6
    python -m bench.server_costs http before=../before after=. --kind get --rounds 2
    python -m bench.server_costs calls before=../before after=. --kind patch --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
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

from .launchers import BENCH_SECRET, free_port
from .machine import process_cpu_seconds

WORKSPACE = "ws"
PANEL = f"/api/state/{WORKSPACE}/rest-panel"
CALLS_PACE = 200  # requests a second for `calls`: each PATCH alone in its commit, as the bench
POLL_SECONDS = 0.002  # polling a child's readiness: there is no event to wait on


class Checkout:
    def __init__(
        self,
        tree: Path,
        env: dict[str, str],
        data: Path,
        auth: bool = False,
        profile: Path | None = None,
    ) -> None:
        self.tree, self.data, self.port, self.auth = tree, data, free_port(), auth
        self.profile = profile  # run under cProfile, its figures written there at exit
        self.headers: dict[str, str] = {}  # what every request carries (its token)
        if auth:
            from crdt_state.auth import mint_token

            token = mint_token(BENCH_SECRET, "bench", {WORKSPACE: "write"}, ttl_seconds=6 * 3600)
            self.headers["authorization"] = f"Bearer {token}"
        self.env = {**os.environ, **env, "CRDT_STATE_DATA_DIR": str(data)}
        self.env.setdefault("JWT_SECRET_KEY", BENCH_SECRET)
        self.env.pop("DATABASE_URL", None)
        self.env.pop("REDIS_URL", None)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Seconds from the spawn to the first /health answer."""
        began = time.monotonic()
        argv = [sys.executable, "-m", "crdt_state", "serve", "--log-level", "warning"]
        if self.profile is not None:
            argv[1:1] = ["-m", "cProfile", "-o", str(self.profile)]
        self.process = subprocess.Popen(
            [*argv, *([] if self.auth else ["--dev"]), "--port", str(self.port)],
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
        """Seconds from the stop signal to the process gone."""
        assert self.process is not None
        began = time.monotonic()
        # Under cProfile, SIGINT: uvicorn re-raises the signal it stopped on, and only an
        # interrupt (an exception) lets cProfile write its figures on the way out.
        self.process.send_signal(signal.SIGTERM if self.profile is None else signal.SIGINT)
        self.process.wait(30)
        self.process = None
        return time.monotonic() - began

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return process_cpu_seconds(self.process.pid)


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
    headers = {"content-type": "application/json", **server.headers}
    request = urllib.request.Request(f"{server.url}{PANEL}", body, headers, method="PUT")
    with urllib.request.urlopen(request) as answer:
        answer.read()


def _request(kind: str, index: int, extra: str) -> bytes:
    if kind == "get":
        return f"GET {PANEL} HTTP/1.1\r\nhost: 127.0.0.1\r\n{extra}\r\n".encode()
    body = orjson.dumps([{"op": "add", "path": f"/$state/k{index % 20}", "value": index}])
    head = f"PATCH {PANEL} HTTP/1.1\r\nhost: 127.0.0.1\r\n{extra}"
    head += f"content-type: application/json-patch+json\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def _requests(
    server: Checkout,
    kind: str,
    count: int,
    statuses: dict[bytes, int],
    period: float,
    offset: float,
) -> None:
    """`count` requests, one in flight; with a `period`, one every `period` seconds."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in server.headers.items())
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    loop = asyncio.get_running_loop()
    began = loop.time() + offset
    try:
        for index in range(count):
            if period:
                await asyncio.sleep(max(0.0, began + index * period - loop.time()))
            writer.write(_request(kind, index, extra))
            head = await reader.readuntil(b"\r\n\r\n")
            statuses[head[9:12]] = statuses.get(head[9:12], 0) + 1
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
    finally:
        writer.close()


def http_cost(
    tree: Path,
    env: dict[str, str],
    kind: str,
    total: int,
    connections: int,
    *,
    auth: bool = False,
    rate_limit: bool = False,
    pace: float = 0.0,
) -> float:
    """Server CPU microseconds per request (after a warm-up)."""
    with tempfile.TemporaryDirectory() as data:
        limits = {} if rate_limit else {"CRDT_STATE_RATE_REST": "0"}
        server = Checkout(tree, {**env, **limits}, Path(data), auth=auth)
        server.start()
        try:
            _put_panel(server)
            statuses: dict[bytes, int] = {}
            period = connections / pace if pace else 0.0

            async def load(each: int) -> None:
                await asyncio.gather(
                    *(
                        _requests(server, kind, each, statuses, period, i * period / connections)
                        for i in range(connections)
                    )
                )

            asyncio.run(load(max(1, int(pace)) // connections if pace else 500))
            before = server.cpu_seconds()
            asyncio.run(load(total // connections))
            spent = server.cpu_seconds() - before
            if set(statuses) != {b"200"}:
                raise RuntimeError(f"not every answer was 200: {statuses}")
            return spent / (total // connections * connections) * 1e6
        finally:
            server.stop()


def calls_per_request(
    tree: Path, env: dict[str, str], kind: str, total: int, *, auth: bool = False
) -> float:
    """Python calls per request on the event-loop thread: two servers under cProfile, one sent
    `total` requests more than the other (both a warm-up of 100); the difference per request."""
    counts = []
    for extra in (0, total):
        with tempfile.TemporaryDirectory() as folder:
            profile = Path(folder) / "profile"
            limits = {"CRDT_STATE_RATE_REST": "0"}
            server = Checkout(tree, {**env, **limits}, Path(folder) / "data", auth, profile)
            server.start()
            try:
                _put_panel(server)
                statuses: dict[bytes, int] = {}
                asyncio.run(_requests(server, kind, 100 + extra, statuses, 1 / CALLS_PACE, 0.0))
                if set(statuses) != {b"200"}:
                    raise RuntimeError(f"not every answer was 200: {statuses}")
            finally:
                server.stop()
            counts.append(pstats.Stats(str(profile)).total_calls)
    return (counts[1] - counts[0]) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["restart", "http", "calls"])
    parser.add_argument("sources", nargs="+", help="label=checkout[,VAR=value...], oldest first")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--kind", choices=["get", "patch"], default="get")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--auth", action="store_true", help="JWT on every request, not --dev")
    parser.add_argument("--rate-limit", action="store_true", help="keep the REST rate limit")
    parser.add_argument("--pace", type=float, default=0.0, help="requests a second in all")
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
            elif args.what == "calls":
                calls = calls_per_request(tree, env, args.kind, args.requests, auth=args.auth)
                figures[label].setdefault(f"calls per {args.kind}", []).append(calls)
            else:
                cost = http_cost(
                    tree,
                    env,
                    args.kind,
                    args.requests,
                    args.connections,
                    auth=args.auth,
                    rate_limit=args.rate_limit,
                    pace=args.pace,
                )
                figures[label].setdefault(f"CPU per {args.kind} (us)", []).append(cost)
    for label, named in figures.items():
        for name, values in named.items():
            print(
                f"{label:10s} {name:20s} median {statistics.median(values):.4g} "
                f"[{min(values):.4g}-{max(values):.4g}] over {len(values)}"
            )


if __name__ == "__main__":
    main()
