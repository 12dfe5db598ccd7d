"""Write docs/BENCHMARKS.md from the recorded results (bench/results/*.json).

    python -m bench.report            # after `make bench` / `make bench-compare` (they call it)

Every figure in the page comes from a result file; the text around the figures is fixed here.
Results named quick-* (from `--quick`) are left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .before_after import before_after_section
from .burst_commit import burst_section
from .goals import floor_section, goals_section
from .machine import BENCH_DIR, ROOT
from .two_replicas import OURS as TWO_OURS
from .two_replicas import THEIRS as TWO_THEIRS
from .two_replicas import two_replicas

RESULTS = ROOT / "bench" / "results"
OUTPUT = ROOT / "docs" / "BENCHMARKS.md"
OURS = "crdt-state"
OURS_HP = "crdt-state-hocuspocus"  # the same server, its clients on /ws/hocuspocus
FLOOR = "relay-floor"
SERVER_ORDER = [OURS, OURS_HP, "y-websocket", "hocuspocus", "pycrdt-websocket", FLOOR]
HP_ONLY = ("panels", "fanout-shared")  # shown in their own section

# REST targets: the seed's (p50/p95) and the (p99).
REST_TARGETS = {
    "get_hot": {"latency_p50_ms": 5.0, "latency_p95_ms": 10.0, "latency_p99_ms": 2.0},
    "patch_durable": {"latency_p50_ms": 80.0, "latency_p95_ms": 150.0, "latency_p99_ms": 15.0},
}
TARGET_SOURCE = {"latency_p50_ms": "seed", "latency_p95_ms": "seed", "latency_p99_ms": "issue"}

# What each profile component is, in words (the shares come from the recorded profile).
COMPONENT_NOTES = {
    "SQLite log (worker thread)": (
        "the durable log on the SQLite worker thread: one `BEGIN IMMEDIATE … COMMIT` per "
        "group-commit batch (the COMMIT is the WAL fsync of `synchronous=FULL`; samples "
        "waiting in it are counted too), the row inserts, the views that ride along"
    ),
    "event loop scheduling (tasks, futures, queues)": (
        "asyncio itself: running callbacks, waking tasks (each connection's reader, commit "
        "futures, the committer)"
    ),
    "socket writes (transport.write)": (
        "one `send` system call per frame and receiver (per response for REST)"
    ),
    "socket reads": "reading frames from sockets",
    "rooms, connections, group commit (crdt_state)": (
        "our own Python: room dispatch, broadcast loop, send queues, change records"
    ),
    "thread hand-off (executor submit, loop wake-up)": (
        "handing each commit batch to the SQLite thread and waking the loop when it is done"
    ),
    "HTTP / WebSocket protocol (uvicorn, websockets)": (
        "uvicorn's HTTP and WebSocket protocol code, WebSocket framing in `websockets`: "
        "the part the relay floor pays too"
    ),
    "pycrdt (apply update, encode)": "applying each Yjs update to the room's doc (pycrdt/yrs)",
    "JSON view upkeep (patch replay)": (
        "keeping the room's JSON view current by replaying each change's JSON Patch"
    ),
    "change events -> JSON Patch": "turning each transaction's Yjs events into a JSON Patch",
    "y-websocket codec": "decoding and encoding y-websocket frames",
    "ASGI / Starlette": "ASGI and Starlette plumbing",
    "orjson / logging": "JSON encoding and logging",
    "other Python": "everything else",
}


def load(name: str) -> dict[str, Any] | None:
    for folder in (RESULTS, BENCH_DIR / "results"):  # the latter: --quick results
        path = folder / f"{name}.json"
        if path.exists():
            return dict(json.loads(path.read_text()))
    return None


# -- formatting -------------------------------------------------------------------------------


def num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def size(value: float | None) -> str:
    if value is None:
        return "–"
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(value) >= factor:
            return f"{value / factor:.1f} {unit}"
    return f"{value:.0f} B"


def stat(summary: dict[str, Any], key: str, fmt: Any = num) -> str:
    """median (min–max) of a figure over the repeats."""
    entry = summary.get(key)
    if not isinstance(entry, dict) or "median" not in entry:
        return "–"
    if entry["n"] == 1 or entry["min"] == entry["max"]:
        return fmt(entry["median"])
    return f"{fmt(entry['median'])} ({fmt(entry['min'])}–{fmt(entry['max'])})"


def median(summary: dict[str, Any], key: str) -> float | None:
    entry = summary.get(key)
    if isinstance(entry, dict) and "median" in entry:
        return float(entry["median"])
    return None


def flag(summary: dict[str, Any], key: str) -> bool | None:
    entry = summary.get(key)
    if isinstance(entry, dict) and "all" in entry:
        return bool(entry["all"])
    return None


def ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def servers_of(entry: dict[str, Any]) -> list[str]:
    names = list(entry["servers"])
    return sorted(names, key=lambda n: SERVER_ORDER.index(n) if n in SERVER_ORDER else 99)


def params_text(params: dict[str, Any]) -> str:
    shown = {k: v for k, v in params.items() if k not in ("room_prefix", "room")}
    return ", ".join(f"`{k}={v}`" for k, v in shown.items())


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


# -- sections ---------------------------------------------------------------------------------


def header(
    ours: dict[str, Any] | None,
    compare: dict[str, Any] | None,
    hocuspocus: dict[str, Any] | None = None,
) -> list[str]:
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by `python -m bench.report` from bench/results/*.json: do not edit. -->",
        "",
        "Our server next to the servers people would pick instead, on the same 2-core machine,",
        "with the same clients: real `yjs` + `y-websocket` clients under Node (the browser stack),",
        "plus REST load for ours. Every figure below comes from a recorded run in",
        "`bench/results/` (the JSON holds every run, the command and the machine).",
        "",
        "## How to run",
        "",
        "```sh",
        "make bench           # ours: every workload, REST, a profile -> bench/results/ours.json",
        "make bench-compare   # five servers, same workloads -> bench/results/compare.json",
        "make bench-hocuspocus  # many panels, one socket -> bench/results/hocuspocus.json",
        ".venv/bin/python -m bench.report   # rewrite this page from the JSON (the targets do)",
        "```",
        "",
        "`crdt-state-hocuspocus` is our server again, its clients on `/ws/hocuspocus` with",
        "`@hocuspocus/provider` (the provider the Hocuspocus server is measured with); `make",
        "bench` and `make bench-compare` run it too, on the workloads of their own.",
        "",
        "`make bench-compare` also sets two replicas against two Hocuspocus instances: crdt-state",
        "as replicas on PostgreSQL + Redis, `hocuspocus-redis` as Hocuspocus instances with",
        "`@hocuspocus/extension-redis` on the same Redis, each on one process and on two (see",
        "Two replicas; alone: `python -m bench.run compare --only",
        "replicas-1,replicas-2,cold-sync-replicas-1,cold-sync-replicas-2`).",
        "",
        "Both install what they need: `npm ci --prefix bench/js` (the load generator), and into",
        "the git-ignored `.bench/`: the reference servers (`bench/servers/package-lock.json`),",
        "pycrdt-websocket in its own venv (`bench/servers/pycrdt-websocket-requirements.txt`)",
        "and py-spy. None of it is a dependency of the product. The fifth server, the relay",
        "floor (`bench/servers/relay_floor.py`), is a benchmark tool of ours: a y-websocket relay",
        "with no document on bare ASGI and the same uvicorn stack, i.e. the least any server on",
        "this stack can cost. The replica workloads use this machine's PostgreSQL and Redis",
        "(`BENCH_PG_ADMIN_DSN`, `BENCH_REDIS_URL`). Sizes are defaults that fit each",
        "target in 15 minutes on 2 cores; raise them from the environment, e.g.",
        "`BENCH_FANOUT_UPDATES=200 BENCH_REPEATS=5 make bench` (`BENCH_<WORKLOAD>_<PARAM>`,",
        "see `bench/workloads.py`), or run one workload: `python -m bench.run compare --only",
        "hot-room`.",
        "",
        "Checkouts side by side (each its server from its own tree, alternated rounds):",
        "`python -m bench.before_after run <set> before=<tree> after=<tree>` (the Before /",
        "after tables; each round takes the commits in turn first), and for costs the",
        "workloads blur, `python -m bench.server_costs restart|http|calls before=<tree>",
        "after=<tree>`: stop and start times polled every 2 ms; server CPU per GET or durable",
        "PATCH with keep-alive connections at the server's pace (`--auth` for a JWT on every",
        "request, `--rate-limit`, `--pace N` requests a second); Python calls per request on",
        "the event-loop thread (cProfile: a count, the same each round).",
        "",
    ]
    rows = []
    for result in (ours, compare, hocuspocus):
        if result is None:
            continue
        versions = result["servers"].get(OURS, {}).get("versions", {})
        commit = str(versions.get("commit"))[:12]
        if versions.get("dirty"):
            commit += " + uncommitted changes"
        rows.append(
            [
                f"`{result['command']}`",
                f"`{result['argv']}`",
                result["started_at"],
                duration(result.get("duration_s")),
                str(result["repeats"]),
                ", ".join(f"`{k}={v}`" for k, v in result["env_overrides"].items()) or "none",
                commit,
            ]
        )
    lines += table(
        [
            "target",
            "command",
            "started (UTC)",
            "took (bench.run, without installs)",
            "repeats",
            "overrides",
            "crdt-state at",
        ],
        rows,
    )
    lines.append("")
    return lines


def machine_section(result: dict[str, Any]) -> list[str]:
    m = result["machine"]
    lines = ["## Machine and versions", ""]
    lines += table(
        ["cpu", "cores", "memory", "kernel", "node", "python"],
        [
            [
                m["cpu_model"],
                str(m["cores"]),
                size(m["memory_bytes"]),
                m["kernel"],
                str(m["node"]),
                m["python"],
            ]
        ],
    )
    lines.append("")
    clients = result["client_packages"]
    lines.append(
        "Clients (bench/js/package-lock.json): "
        + ", ".join(f"{name} {version}" for name, version in clients.items())
        + "."
    )
    lines.append("")
    rows = []
    for name, server in result["servers"].items():
        versions = server.get("versions", {})
        if name == OURS:
            text = (
                f"crdt-state {versions.get('crdt-state')} at {str(versions.get('commit'))[:12]}"
                f"{' (uncommitted changes)' if versions.get('dirty') else ''}; "
                + ", ".join(f"{k} {v}" for k, v in versions.get("python_packages", {}).items())
            )
        else:
            text = ", ".join(f"{k} {v}" for k, v in versions.items())
        rows.append([name, server["storage"], server["client"], text])
    lines += table(["server", "storage", "client stack", "versions"], rows)
    lines.append("")
    return lines


def method_section(ours: dict[str, Any] | None, compare: dict[str, Any] | None) -> list[str]:
    any_result = compare or ours
    assert any_result is not None
    workloads = {**(ours or {}).get("workloads", {}), **(compare or {}).get("workloads", {})}
    lines = [
        "## What is measured",
        "",
        "Each run starts a fresh server process (fresh data folder) and one Node load generator",
        "(`bench/js/loadgen.mjs`); the driver (`bench/run.py`) reads `/proc/<pid>` of both at",
        "each phase boundary. Repeats alternate the servers run by run. Figures are the",
        "**median over the repeats, with the min–max spread in brackets**.",
        "",
    ]
    for name, entry in workloads.items():
        lines.append(f"- **{name}** – {entry['title']}: {params_text(entry['params'])}.")
    lines += ["", *scale_notes(workloads)]
    lines += [
        "- **Latency** (fan-out, hot room): each writer overwrites its own key of the panel's",
        "  `$state` map with `{s: sequence, t: send time}`; each other client of the room takes",
        "  `now − t` when its map observer fires (one process, one clock). The first `warmup_s`",
        "  of sends are delivered and checked but left out of latency and CPU figures.",
        "  **Lost deliveries** = updates that never reached a client of the room (must be 0);",
        "  **converged** = every doc of a room equal at the end (state vector and content).",
        "  For ours, the log is also checked: each room's version = 1 + its updates.",
        "- **Server CPU per 1,000 deliveries**: CPU time of the server process (user + system,",
        "  all threads) over the measured phase ÷ deliveries (a delivery = one update reaching",
        "  one other client). CPU is read from each process's CPU-time clock, in nanoseconds",
        "  (results from before 2026-12-04 counted `/proc` ticks of 10 ms).",
        "- **Memory per connection**: server RSS after all clients synced minus RSS before the",
        "  first, ÷ connections. **Connect rate**: clients synced per second, 100 handshakes in",
        "  flight. **RSS peak**: the server's `VmHWM`.",
        "- **Cold sync**: one client writes 20,000 updates (10 keys overwritten in turn), a",
        "  watcher confirms the last one arrived, then all joiners connect at once from an empty",
        "  doc. The writer stays connected (the reference servers keep no log and drop a doc",
        "  when its last client leaves). CPU per cold join = server CPU while they join ÷ joiners.",
        "  `cold-sync-log` (ours only) restarts the server first: the panel loads from SQLite.",
        "  **Full at sync**: joiners whose doc held the whole panel when their provider said",
        "  synced (a joiner on a replica that did not hold the panel may sync before it has it",
        "  all); the run then waits, bounded, until every joiner has it, inside the CPU window.",
        "- **REST** (ours only): open-loop load at a fixed rate, at most 16 requests in flight",
        "  over keep-alive connections; latency from request issue to the end of the body.",
        "  `history_page` asks for 50 entries at a random offset of the panel's history.",
        "",
        "Conditions, so that the comparison is fair and its limits are plain:",
        "",
        "- **Durability differs.** Ours appends every update to its SQLite log (WAL,",
        "  `synchronous=FULL`; live updates are committed in group-commit windows of 10 ms",
        "  after their relay, a REST write answers after its own commit); y-websocket,",
        "  Hocuspocus (no extensions) and pycrdt-websocket (no store) keep documents in memory",
        "  only; the relay floor keeps nothing.",
        "- **The relay floor** answers sync step 1 with an empty step 2 and relays frames: no",
        "  CRDT, no document, no log. It sits out cold sync (it has no document to serve).",
        "- **Replicas** (`replicas-N`, `cold-sync-replicas-N`): N `crdt-state serve` processes",
        "  share a fresh PostgreSQL database and Redis; `hocuspocus-redis` is N Hocuspocus",
        "  instances with `@hocuspocus/extension-redis` on the same Redis (a key and channel",
        "  prefix per run, documents in memory). In fan-out, client c of room r connects to",
        "  process (r + c) mod N, so each room has clients on every process (up to its client",
        "  count); cold-sync joiners alternate over the processes, the writer is on the first.",
        "  Server CPU is the sum over the processes. Redis's CPU (the local `redis-server`) and",
        "  PostgreSQL's (the run database's backends, the WAL writer, checkpointer and",
        "  background writer) are read from `/proc` apart (`redis_cpu_*`, `postgres_cpu_*`)",
        "  and left out of `other_cpu_pct`; Redis serves nothing else during a run only if",
        "  nothing else on the machine uses it.",
        "- **No authentication on the WebSocket workloads**: ours runs with `--dev`, as the",
        "  reference servers have none. REST runs with authentication on, as in production",
        "  (a bearer JWT, HS256, checked on every request). Ours logs at `warning`.",
        "- **Client stacks**: y-websocket, pycrdt-websocket and ours get the stock",
        "  `WebsocketProvider`. Hocuspocus speaks its own protocol (document name on every",
        "  message, an auth step, an ack per update), so its clients use `@hocuspocus/provider`",
        "  over the same yjs.",
        "- **permessage-deflate is not offered** by the load generator. Browsers offer it; our",
        "  server declines it unless `CRDT_STATE_WS_DEFLATE=1`, pycrdt-websocket accepts it,",
        "  the Node servers do not. With it, one Node process inflating every frame for hundreds",
        "  of clients becomes the bottleneck, which no browser is. What turning it on costs our",
        "  server is measured separately below.",
        "- **Room opening**: each room is opened by one client before the others join.",
        "  pycrdt-websocket 0.16.5 leaves a client hanging forever when it joins a room another",
        "  connection is still starting (found by this bench); every server gets the same order.",
        "- **Shared machine**: the load generator and the server share the 2 cores, and other",
        "  work may run too. Each run records the load generator's CPU (flagged when over 90 % of",
        "  a core), its event-loop delay, and the CPU of everything else (`other_cpu_pct`);",
        "  the bench waits briefly for a quiet machine before each run.",
        "",
    ]
    return lines


def scale_notes(workloads: dict[str, Any]) -> list[str]:
    """How the sizes compare with the issue's examples (the defaults fit 15 minutes)."""
    notes = []
    fan = workloads.get("fanout", {}).get("params")
    if fan:
        warm = round(fan["warmup_s"] * fan["rate"])
        notes.append(
            f"Sizes, against the issue's examples: fan-out runs {fan['rooms']} rooms × "
            f"{fan['clients']} clients × {fan['updates']} updates (+{warm} warm-up) at "
            f"{num(fan['rate'])} updates/s per client, **scaled down** from 200 updates per "
            "client so that five servers × three repeats fit in 15 minutes (200 updates at "
            f"{num(fan['rate'])}/s is {num(200 / fan['rate'])} s of sending per run: "
            "`BENCH_FANOUT_UPDATES=200`)."
        )
    hot = workloads.get("hot-room", {}).get("params")
    if hot:
        notes.append(
            f"The hot room has the issue's {hot['clients']} clients, each writing "
            f"{hot['updates']} updates at {num(hot['rate'])}/s "
            f"({num(hot['clients'] * hot['rate'])} updates/s, "
            f"{num(hot['clients'] * (hot['clients'] - 1) * hot['rate'])} deliveries/s)."
        )
    cold = workloads.get("cold-sync", {}).get("params")
    if cold:
        notes.append(
            f"Cold sync has the issue's {cold['updates']:,} updates and {cold['joiners']} "
            "joiners at once. Each joiner is a real client integrating the whole document, and "
            f"{cold['joiners']} of them in one Node process saturate it: the join times are "
            "bound by the load generator as much as by the server; the server's own figure is "
            "its CPU per cold join."
        )
    rest = workloads.get("rest", {}).get("params")
    if rest:
        notes.append(
            f"REST runs GET at {num(rest['get_rate'])}/s and PATCH at {num(rest['patch_rate'])}/s "
            f'(the issue\'s "a few hundred requests/s"), history pages at '
            f"{num(rest['history_rate'])}/s, {num(rest['seconds'])} s each after a 1 s warm-up."
        )
    return [" ".join(notes), ""] if notes else []


def fanout_rows(entry: dict[str, Any], servers: list[str]) -> list[list[str]]:
    rows = []
    for server in servers:
        s = entry["servers"][server].get("summary", {})
        rows.append(
            [
                server,
                stat(s, "latency_p50_ms"),
                stat(s, "latency_p95_ms"),
                stat(s, "latency_p99_ms"),
                stat(s, "latency_max_ms"),
                stat(s, "deliveries_per_s"),
                stat(s, "server_cpu_ms_per_1000_deliveries"),
                stat(s, "server_cpu_pct"),
                stat(s, "server_rss_peak_bytes", size),
                stat(s, "lost_deliveries"),
                yes_no(flag(s, "converged")),
                stat(s, "loadgen_cpu_pct"),
                stat(s, "loadgen_loop_delay_p99_ms"),
            ]
        )
    return rows


FANOUT_HEADER = [
    "server",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "deliveries/s",
    "CPU ms / 1,000 deliveries",
    "server CPU %",
    "RSS peak",
    "lost",
    "converged",
    "loadgen CPU %",
    "loadgen loop delay p99 ms",
]


def yes_no(value: bool | None) -> str:
    return "–" if value is None else ("yes" if value else "**NO**")


def connection_rows(entry: dict[str, Any], servers: list[str]) -> list[list[str]]:
    rows = []
    for server in servers:
        s = entry["servers"][server].get("summary", {})
        rows.append(
            [
                server,
                stat(s, "connected"),
                stat(s, "connects_per_s"),
                stat(s, "connect_p95_ms"),
                stat(s, "rss_per_connection_bytes", size),
                stat(s, "server_rss_connected_bytes", size),
                stat(s, "server_cpu_ms_per_connect"),
                stat(s, "connect_failed"),
                stat(s, "loadgen_cpu_pct"),
            ]
        )
    return rows


CONNECTION_HEADER = [
    "server",
    "connected",
    "connects/s",
    "connect p95 ms",
    "RSS per connection",
    "RSS with all connected",
    "CPU ms per connect",
    "failed",
    "loadgen CPU %",
]


def cold_rows(entry: dict[str, Any], servers: list[str]) -> list[list[str]]:
    rows = []
    for server in servers:
        s = entry["servers"][server].get("summary", {})
        rows.append(
            [
                server,
                stat(s, "server_cpu_ms_per_join"),
                stat(s, "join_p50_ms"),
                stat(s, "join_p95_ms"),
                stat(s, "all_joined_ms"),
                stat(s, "joiners_full_at_sync"),
                stat(s, "bytes_per_joiner", size),
                stat(s, "preload_updates_per_s"),
                stat(s, "preload_settle_s"),
                stat(s, "server_rss_peak_bytes", size),
                yes_no(flag(s, "converged")),
                stat(s, "loadgen_cpu_pct"),
            ]
        )
    return rows


COLD_HEADER = [
    "server",
    "CPU ms per cold join",
    "join p50 ms",
    "join p95 ms",
    "all joined ms",
    "full at sync",
    "sync bytes per joiner",
    "preload updates/s",
    "busy after preload s",
    "RSS peak",
    "all correct",
    "loadgen CPU %",
]


def panel_rows(entry: dict[str, Any], servers: list[str]) -> list[list[str]]:
    rows = []
    for server in servers:
        s = entry["servers"][server].get("summary", {})
        shared = flag(s, "shared_socket")
        rows.append(
            [
                server,
                "one per tab" if shared else ("one per panel" if shared is False else "–"),
                stat(s, "sockets"),
                stat(s, "connected"),
                stat(s, "rss_per_subscription_bytes", size),
                stat(s, "rss_per_socket_bytes", size),
                stat(s, "server_rss_connected_bytes", size),
                stat(s, "subscriptions_per_s"),
                stat(s, "server_cpu_ms_per_subscription"),
                stat(s, "idle_server_cpu_pct"),
                stat(s, "connect_failed"),
            ]
        )
    return rows


PANEL_HEADER = [
    "server",
    "sockets",
    "sockets open",
    "subscriptions",
    "RSS per subscription",
    "RSS per socket",
    "RSS with all open",
    "subscriptions/s",
    "CPU ms per subscription",
    "idle CPU %",
    "failed",
]


def workload_table(name: str, entry: dict[str, Any], servers: list[str]) -> list[str]:
    if name in ("fanout", "hot-room", "fanout-shared") or name.startswith("replicas-"):
        return table(FANOUT_HEADER, fanout_rows(entry, servers))
    if name == "panels":
        return table(PANEL_HEADER, panel_rows(entry, servers))
    if name == "connections":
        return table(CONNECTION_HEADER, connection_rows(entry, servers))
    if name.startswith("cold-sync"):
        return table(COLD_HEADER, cold_rows(entry, servers))
    return []


RATIO_LABELS = {
    "latency_p50_ms": "latency p50",
    "latency_p95_ms": "latency p95",
    "latency_p99_ms": "latency p99",
    "server_cpu_ms_per_1000_deliveries": "CPU / delivery",
    "server_rss_peak_bytes": "RSS peak",
    "rss_per_connection_bytes": "RSS / connection",
    "connects_per_s": "connects/s",
    "server_cpu_ms_per_connect": "CPU / connect",
    "server_cpu_ms_per_join": "CPU / cold join",
    "server_redis_cpu_ms_per_join": "CPU + Redis / cold join",
    "server_redis_cpu_ms_per_1000_deliveries": "CPU + Redis / delivery",
    "join_p50_ms": "join p50",
    "join_p95_ms": "join p95",
    "preload_updates_per_s": "preload updates/s",
    "rss_per_subscription_bytes": "RSS / subscription",
    "subscriptions_per_s": "subscriptions/s",
    "server_cpu_ms_per_subscription": "CPU / subscription",
}


def compare_section(compare: dict[str, Any]) -> list[str]:
    lines = [
        "## Side by side (`make bench-compare`)",
        "",
        "Ratios are **ours ÷ theirs** of the medians: below 1 is better for latency, CPU and",
        "memory, above 1 is better for rates.",
        "",
    ]
    for name, entry in compare["workloads"].items():
        if name not in HP_ONLY:
            lines += workload_lines(name, entry)
    return lines


def workload_lines(name: str, entry: dict[str, Any]) -> list[str]:
    """A workload's table, its ratios (ours ÷ each other server) and notes on its runs."""
    servers = servers_of(entry)
    lines = [f"### {name}: {entry['title']}", "", params_text(entry["params"]), ""]
    lines += workload_table(name, entry, servers)
    lines.append("")
    ratios = entry.get("ratios", {})
    if ratios:
        metrics = list(next(iter(ratios.values())).keys())
        base = OURS if OURS in entry["servers"] else OURS_HP
        rows = [
            [f"{'ours' if base == OURS else base} ÷ {server}"]
            + [ratio(ratios[server].get(m)) for m in metrics]
            for server in servers
            if server in ratios
        ]
        lines += table(["ratio"] + [RATIO_LABELS.get(m, m) for m in metrics], rows)
        lines.append("")
    lines += run_notes(entry, servers)
    return lines


def hocuspocus_section(results: list[dict[str, Any] | None]) -> list[str]:
    """Many panels over one socket: from the newest result that measured it."""
    measured = [r for r in results if r is not None and "panels" in r["workloads"]]
    if not measured:
        return []
    result = max(measured, key=lambda r: str(r["started_at"]))
    lines = [
        "## Many panels over one socket (`/ws/hocuspocus`)",
        "",
        f"From `{result['command']}` (`{result['argv']}`, {result['repeats']} repeat(s), "
        f"started {result['started_at']}). A page showing many panels: with y-websocket each",
        "panel is a socket of its own (`crdt-state`); with `@hocuspocus/provider` the panels of",
        "a tab are documents of one shared `HocuspocusProviderWebsocket` (`crdt-state-hocuspocus`",
        "on our server, `hocuspocus` on the Hocuspocus server). **RSS per subscription**: server",
        "RSS with every panel of every tab synced minus before, ÷ panel subscriptions (the",
        "rooms' own documents included, the same for all). `fanout-shared` is the fan-out load",
        "with each client of a room a document on its tab's shared socket.",
        "",
    ]
    for name in ("panels", "fanout", "fanout-shared"):
        entry = result["workloads"].get(name)
        if entry is not None:
            lines += workload_lines(name, entry)
    return lines


def hocuspocus_findings(results: list[dict[str, Any] | None]) -> list[str]:
    measured = [r for r in results if r is not None and "panels" in r["workloads"]]
    if not measured:
        return []
    result = max(measured, key=lambda r: str(r["started_at"]))
    servers = result["workloads"]["panels"]["servers"]

    def per(server: str) -> float | None:
        return median(servers.get(server, {}).get("summary", {}), "rss_per_subscription_bytes")

    shared, alone, theirs = per(OURS_HP), per(OURS), per("hocuspocus")
    if not (shared and alone and shared < alone):
        return []
    text = (
        f"**A panel on a shared socket costs {size(shared)} of server memory, a socket per "
        f"panel {size(alone)}** ({num(alone / shared)}× more): 20 tabs × 50 panels on "
        "`/ws/hocuspocus` with `@hocuspocus/provider`, against the same on `/ws/yjs`"
    )
    if theirs:
        text += f"; the Hocuspocus server holds {size(theirs)} per panel on its shared sockets"
    return [text + "."]


def run_notes(entry: dict[str, Any], servers: list[str]) -> list[str]:
    """Failed runs, saturated load generator, busy machine: said next to the table."""
    notes = []
    for server in servers:
        for run in entry["servers"][server]["runs"]:
            where = f"{server}, repeat {run['repeat']}"
            if not run.get("ok"):
                notes.append(f"- {where}: **failed**: {run.get('error', '')[:200]}")
                continue
            figures = run["figures"]
            if figures.get("loadgen_saturated"):
                notes.append(
                    f"- {where}: the load generator was saturated "
                    f"({num(figures.get('loadgen_cpu_pct'))} % of a core): its figures are a "
                    "bound on the load generator as much as on the server."
                )
            other = figures.get("other_cpu_pct")
            if isinstance(other, float) and other > 50:
                notes.append(
                    f"- {where}: other work on the machine used {num(other)} % of a core "
                    "during the measured phase."
                )
            for key in ("lost_deliveries", "connect_failed", "join_failed"):
                if figures.get(key):
                    notes.append(f"- {where}: {key.replace('_', ' ')} = {figures[key]}.")
            if figures.get("converged") is False:
                notes.append(f"- {where}: **did not converge**.")
            if figures.get("log_versions_ok") is False:
                notes.append(f"- {where}: **log versions do not match the updates sent**.")
    if notes:
        return ["Notes on these runs:", "", *notes, ""]
    return []


def ours_section(ours: dict[str, Any]) -> list[str]:
    lines = ["## Our server (`make bench`)", ""]
    for name, entry in ours["workloads"].items():
        if name == "rest" or name in HP_ONLY:
            continue
        lines += [f"### {name}: {entry['title']}", "", params_text(entry["params"]), ""]
        lines += workload_table(name, entry, servers_of(entry))
        lines.append("")
        summary = entry["servers"].get(OURS, {}).get("summary", {})
        if name in ("fanout", "hot-room") and "log_versions_ok" in summary:
            lines.append(
                "Every update durable: each room's log version = 1 + its updates in "
                f"{'every' if flag(summary, 'log_versions_ok') else '**not every**'} run."
            )
            lines.append("")
        if name == "cold-sync-log":
            lines.append(f"Restart (stop, flush, start, healthy): {stat(summary, 'restart_s')} s.")
            lines.append("")
        lines += run_notes(entry, servers_of(entry))
    return lines


def rest_section(ours: dict[str, Any]) -> list[str]:
    entry = ours["workloads"].get("rest")
    if entry is None:
        return []
    s = entry["servers"][OURS].get("summary", {})
    p = entry["params"]
    lines = [
        "## REST (ours)",
        "",
        params_text(p) + ". Latency in ms, median over the repeats (min–max).",
        "",
    ]
    rows = []
    for phase in ("get_hot", "patch_durable", "history_page"):
        rows.append(
            [
                f"`{phase}`",
                stat(s, f"{phase}.achieved_rate"),
                stat(s, f"{phase}.latency_p50_ms"),
                stat(s, f"{phase}.latency_p95_ms"),
                stat(s, f"{phase}.latency_p99_ms"),
                stat(s, f"{phase}.latency_max_ms"),
                stat(s, f"{phase}.server_cpu_ms_per_request"),
                stat(s, f"{phase}.server_cpu_pct"),
                stat(s, f"{phase}.errors"),
                stat(s, f"{phase}.loadgen_cpu_pct"),
            ]
        )
    lines += table(
        [
            "phase",
            "req/s",
            "p50",
            "p95",
            "p99",
            "max",
            "CPU ms / request",
            "server CPU %",
            "errors",
            "loadgen CPU %",
        ],
        rows,
    )
    lines += ["", "Against the targets (medians):", ""]
    rows = []
    for phase, targets in REST_TARGETS.items():
        for key, target in targets.items():
            value = median(s, f"{phase}.{key}")
            if value is None:
                verdict = "–"
            elif value <= target:
                verdict = "met"
            else:
                verdict = f"**missed** by {num(value - target)} ms ({num(value / target)}×)"
            rows.append(
                [
                    f"`{phase}` {key.split('_')[1]}",
                    f"< {num(target)} ms ({TARGET_SOURCE[key]})",
                    num(value),
                    verdict,
                ]
            )
    lines += table(["figure", "target", "measured", "verdict"], rows)
    lines.append("")
    lines += run_notes(entry, [OURS])
    return lines


WORKER = "SQLite log (worker thread)"


def cpu_shares(window: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(component, share of samples, share of CPU): samples of the SQLite worker include its
    waits in fsync, so its share is set to the worker's measured CPU (/proc) and the event
    loop's components share the rest in the proportions sampled."""
    rows = window["summary"]["by_component"]
    threads = window.get("thread_cpu") or {}
    main, other = threads.get("main_thread_pct"), threads.get("other_threads_pct")
    worker_samples = sum(row["share"] for row in rows if row["name"] == WORKER)
    if not main or other is None or worker_samples >= 1:
        return [(row["name"], row["share"], row["share"]) for row in rows]
    worker_cpu = other / (main + other)
    scale = (1 - worker_cpu) / (1 - worker_samples)
    shares = [
        (row["name"], row["share"], worker_cpu if row["name"] == WORKER else row["share"] * scale)
        for row in rows
    ]
    return sorted(shares, key=lambda item: -item[2])


def profile_tables(window: dict[str, Any], rows: int = 12) -> list[str]:
    summary = window["summary"]
    lines = [
        "By component (the first library or module of ours met from the leaf up). The share",
        "of CPU corrects the samples with the per-thread CPU above: the SQLite worker's",
        "samples include its waits in fsync.",
        "",
    ]
    lines += table(
        ["component", "share of CPU", "share of samples", "what it is"],
        [
            [name, f"{100 * cpu:.1f} %", f"{100 * sampled:.1f} %", COMPONENT_NOTES.get(name, "")]
            for name, sampled, cpu in cpu_shares(window)[:rows]
        ],
    )
    lines += [
        "",
        "By function of ours (innermost frame of `crdt_state/` or `adapters/`; helpers such as",
        "`_transaction` are charged to their caller, so a COMMIT shows under what committed):",
        "",
    ]
    lines += table(
        ["function", "share"],
        [
            [f"`{row['name']}`", f"{100 * row['share']:.1f} %"]
            for row in summary["by_our_function"][:rows]
        ],
    )
    lines += ["", "Hottest leaf functions (self time):", ""]
    lines += table(
        ["function", "share"],
        [
            [f"`{row['name']}`", f"{100 * row['share']:.1f} %"]
            for row in summary["by_leaf_function"][:8]
        ],
    )
    lines.append("")
    return lines


def threads_text(window: dict[str, Any]) -> list[str]:
    threads = window.get("thread_cpu")
    if not threads:
        return []
    return [
        f"Per thread, from `/proc` over the same phase: the event-loop thread used "
        f"{num(threads['main_thread_pct'])} % of a core, the other threads (the SQLite "
        f"worker) {num(threads['other_threads_pct'])} %.",
        "",
    ]


def profile_section(ours: dict[str, Any]) -> list[str]:
    profile = ours.get("profile")
    window = (profile or {}).get("windows", {}).get("fanout")
    if not profile or not window or "summary" not in window:
        return []
    summary = window["summary"]
    lines = [
        "## Where our server's CPU goes (fan-out profile)",
        "",
        f"{profile['tool']}, attached to our server for the measured phase of one fan-out run "
        f"({params_text(profile['params'])}): {summary['samples']} samples of busy threads "
        f"({summary['idle_samples_left_out']} samples of threads parked in `select`, in "
        "uvloop's C loop (its own C work included: py-spy cannot tell it apart) or on an "
        "empty work queue left out).",
        "",
    ]
    lines += threads_text(window)
    lines += profile_tables(window)
    top = [item for item in cpu_shares(window) if item[0] != "other Python"][:3]
    lines += ["**The top three costs that remain**, by this profile:", ""]
    for index, (name, _, cpu) in enumerate(top, 1):
        note = COMPONENT_NOTES.get(name, "")
        lines.append(f"{index}. {name}: {100 * cpu:.0f} % of the server's CPU – {note}.")
    lines.append("")
    lines += rest_profile_section(ours)
    return lines


def rest_profile_section(ours: dict[str, Any]) -> list[str]:
    profile = ours.get("rest_profile")
    if not profile:
        return []
    lines = [
        "### REST profile",
        "",
        f"The same tool over each phase of one REST run ({params_text(profile['params'])}).",
        "Top entries per phase:",
        "",
    ]
    rows = []
    for phase, window in profile.get("windows", {}).items():
        summary = window.get("summary")
        if not summary:
            continue
        threads = window.get("thread_cpu", {})
        rows.append(
            [
                f"`{phase}`",
                str(summary["samples"]),
                f"{num(threads.get('main_thread_pct'))} / {num(threads.get('other_threads_pct'))}",
                "; ".join(
                    f"{row['name']} {100 * row['share']:.0f} %"
                    for row in summary["by_component"][:4]
                ),
                "; ".join(
                    f"`{row['name'].split(' (')[0]}` {100 * row['share']:.0f} %"
                    for row in summary["by_our_function"][:4]
                ),
            ]
        )
    lines += table(
        ["phase", "samples", "CPU % loop / other threads", "components", "functions of ours"],
        rows,
    )
    lines.append("")
    return lines


def deflate_section(ours: dict[str, Any]) -> list[str]:
    diagnostics = ours.get("diagnostics", {}).get("deflate")
    if not diagnostics:
        return []
    lines = [
        "## permessage-deflate (ours, as browsers connect)",
        "",
        "The same workloads with the clients offering permessage-deflate, as browsers do; our",
        "server (uvicorn's default, `ws_per_message_deflate=True`) accepts it and compresses",
        "every frame it sends, mostly tiny Yjs updates. Medians; the first column is the",
        "main run above (deflate not offered).",
        "",
    ]
    rows = []
    metrics: dict[str, list[tuple[str, Any, str]]] = {
        "fanout": [
            ("server_cpu_ms_per_1000_deliveries", num, "CPU ms / 1,000 deliveries"),
            ("latency_p50_ms", num, "latency p50 ms"),
            ("latency_p99_ms", num, "latency p99 ms"),
            ("loadgen_cpu_pct", num, "loadgen CPU %"),
        ],
        "connections": [
            ("rss_per_connection_bytes", size, "RSS per connection"),
            ("server_cpu_ms_per_connect", num, "CPU ms per connect"),
            ("connects_per_s", num, "connects/s"),
        ],
    }
    for name, keys in metrics.items():
        entry = diagnostics.get(name)
        main = ours["workloads"].get(name, {}).get("servers", {}).get(OURS, {}).get("summary")
        if entry is None or main is None:
            continue
        for key, fmt, label in keys:
            without, with_ = median(main, key), median(entry["summary"], key)
            change = ratio(with_ / without) if with_ is not None and without else "–"
            rows.append([name, label, fmt(without), fmt(with_), change])
    lines += table(["workload", "figure", "not offered", "offered", "offered ÷ not"], rows)
    lines.append("")
    return lines


HEADLINE = [
    ("fanout", "latency_p50_ms", "fan-out latency p50 (ms)", num),
    ("fanout", "latency_p99_ms", "fan-out latency p99 (ms)", num),
    ("fanout", "server_cpu_ms_per_1000_deliveries", "fan-out CPU ms / 1,000 deliveries", num),
    ("hot-room", "latency_p50_ms", "hot room latency p50 (ms)", num),
    ("hot-room", "latency_p99_ms", "hot room latency p99 (ms)", num),
    ("hot-room", "server_cpu_ms_per_1000_deliveries", "hot room CPU ms / 1,000 deliveries", num),
    ("connections", "rss_per_connection_bytes", "memory per idle connection", size),
    ("connections", "connects_per_s", "connects/s", num),
    ("cold-sync", "server_cpu_ms_per_join", "CPU ms per cold join (20,000 updates)", num),
    ("cold-sync", "preload_updates_per_s", "one writer's updates/s (preload)", num),
]


def ratio_spread(entry: dict[str, Any] | None) -> str:
    """A ratio's median over the repeats, with its min–max."""
    if not entry:
        return "–"
    text = ratio(entry["median"])
    if entry["n"] > 1 and entry["min"] != entry["max"]:
        text += f" ({entry['min']:.2f}–{entry['max']:.2f})"
    return text


def spread_cell(entry: dict[str, Any] | None) -> str:
    return stat({"x": entry}, "x") if entry else "–"


def two_replicas_section(compare: dict[str, Any]) -> list[str]:
    """Two crdt-state replicas against two Hocuspocus instances on Redis, each beside its own
    single process (bench/two_replicas.py)."""
    comparison = two_replicas(compare["workloads"])
    if comparison is None:
        return []
    workloads = compare["workloads"]
    lines = [
        "## Two replicas",
        "",
        "crdt-state as 1 and 2 replicas on PostgreSQL + Redis, against Hocuspocus as 1 and 2",
        "instances with `@hocuspocus/extension-redis` on the same Redis, in the same run of",
        f"`{compare['command']}` with the same clients on each side (y-websocket's provider",
        "for ours, `@hocuspocus/provider` for Hocuspocus). CPU is the server processes plus",
        "Redis (the one local `redis-server`, read from `/proc` alike for both sides);",
        "PostgreSQL's CPU, ours only (Hocuspocus keeps documents in memory, ours logs every",
        "update), is shown apart and not in the sum. Medians over the repeats with the min–max",
        "in brackets; every ratio is taken within a repeat (2 ÷ 1 of the same side; crdt-state",
        "×2 ÷ Hocuspocus ×2), then summarized over the repeats. CPU is read from each",
        "process's CPU-time clock (nanoseconds); runs before 2026-12-04 counted ticks of 10 ms,",
        "where a share under one tick in a window read 0 and got no ratio.",
        "",
    ]
    for shape, data in comparison["shapes"].items():
        one, two = data["workloads"]
        params = workloads[two]["params"]
        runs = workloads[two].get("repeats", compare["repeats"])
        lines += [
            f"### {shape} (`{one}`, `{two}`)",
            "",
            f"{workloads[two]['title']}: {params_text(params)}; {runs} repeat(s).",
            "",
        ]
        rows = []
        for row in data["rows"]:
            theirs, ours = row["sides"][TWO_THEIRS], row["sides"][TWO_OURS]
            rows.append(
                [
                    row["label"],
                    spread_cell(theirs["1"]),
                    spread_cell(theirs["2"]),
                    ratio_spread(theirs["2/1"]),
                    spread_cell(ours["1"]),
                    spread_cell(ours["2"]),
                    ratio_spread(ours["2/1"]),
                    ratio_spread(row["ours_2_over_theirs_2"]),
                ]
            )
        lines += table(
            [
                "figure",
                "Hocuspocus ×1",
                "Hocuspocus ×2",
                "Hocuspocus 2 ÷ 1",
                "crdt-state ×1",
                "crdt-state ×2",
                "crdt-state 2 ÷ 1",
                "crdt-state ×2 ÷ Hocuspocus ×2",
            ],
            rows,
        )
        lines.append("")
    lines += [
        "Each workload's full table (all figures, notes on its runs) is under",
        "Side by side below.",
        "",
    ]
    return lines


def two_replicas_findings(compare: dict[str, Any] | None) -> list[str]:
    if compare is None:
        return []
    comparison = two_replicas(compare["workloads"]) or {}
    fan = comparison.get("shapes", {}).get("fan-out")
    if not fan:
        return []
    rows = {row["figure"]: row for row in fan["rows"]}
    cpu = rows.get("server_redis_cpu_ms_per_1000_deliveries")
    p99 = rows.get("latency_p99_ms")
    if cpu is None or p99 is None:
        return []

    def med(entry: dict[str, Any] | None) -> float | None:
        return None if not entry else float(entry["median"])

    ours_r, theirs_r = med(cpu["sides"][TWO_OURS]["2/1"]), med(cpu["sides"][TWO_THEIRS]["2/1"])
    across = med(cpu["ours_2_over_theirs_2"])
    if ours_r is None or theirs_r is None or across is None:
        return []
    text = (
        f"**Two processes, fan-out**: server + Redis CPU per delivery is {ratio(ours_r)} that "
        f"of one replica for crdt-state and {ratio(theirs_r)} that of one instance for "
        f"Hocuspocus on Redis; with two each, crdt-state spends {ratio(across)} Hocuspocus's. "
        f"p99 latency, 2 ÷ 1: {ratio_spread(p99['sides'][TWO_OURS]['2/1'])} for crdt-state, "
        f"{ratio_spread(p99['sides'][TWO_THEIRS]['2/1'])} for Hocuspocus."
    )
    cold = comparison.get("shapes", {}).get("cold sync")
    full = {row["figure"]: row for row in (cold or {}).get("rows", [])}.get("joiners_full_at_sync")
    if cold and full:
        joiners = compare["workloads"][cold["workloads"][1]]["params"].get("joiners")
        text += (
            f" Cold sync over two: {spread_cell(full['sides'][TWO_OURS]['2'])} of {joiners} "
            f"joiners had the whole panel at sync on crdt-state, "
            f"{spread_cell(full['sides'][TWO_THEIRS]['2'])} on Hocuspocus."
        )
    return [text]


def headline_section(compare: dict[str, Any]) -> list[str]:
    """The key figures of `make bench-compare` in one table: medians, ours ÷ theirs."""
    servers = [
        n for n in SERVER_ORDER if any(n in e["servers"] for e in compare["workloads"].values())
    ]
    others = [n for n in servers if n != OURS]
    lines = [
        "## Headline",
        "",
        "Medians of `make bench-compare`; in brackets, ours ÷ theirs (below 1 is better for ours,",
        "except rates). Ours logs every update durably; the others keep documents in memory.",
        "",
    ]
    rows = []
    for workload, key, label, fmt in HEADLINE:
        entry = compare["workloads"].get(workload)
        if entry is None:
            continue
        ours = median(entry["servers"].get(OURS, {}).get("summary", {}), key)
        row = [label, fmt(ours)]
        for other in others:
            theirs = median(entry["servers"].get(other, {}).get("summary", {}), key)
            share = f" ({ratio(ours / theirs)})" if ours is not None and theirs else ""
            row.append(fmt(theirs) + share)
        rows.append(row)
    lines += table(["figure", OURS, *others], rows)
    lines.append("")
    return lines


def findings_section(
    ours: dict[str, Any] | None,
    compare: dict[str, Any] | None,
    hocuspocus: dict[str, Any] | None = None,
) -> list[str]:
    """Observations computed from the results; each appears only when the data shows it."""
    found: list[str] = []
    window = ((ours or {}).get("profile") or {}).get("windows", {}).get("fanout", {})
    deflate = ((ours or {}).get("diagnostics") or {}).get("deflate", {})
    conn_main = (ours or {}).get("workloads", {}).get("connections", {}).get("servers", {})
    main = conn_main.get(OURS, {}).get("summary", {})
    with_deflate = deflate.get("connections", {}).get("summary", {})
    a, b = (
        median(main, "rss_per_connection_bytes"),
        median(with_deflate, "rss_per_connection_bytes"),
    )
    if a and b and b > 1.3 * a:
        found.append(
            f"**permessage-deflate would cost {size(b - a)} per connection**: {size(b)} per idle "
            f"connection instead of {size(a)} when it is on (`CRDT_STATE_WS_DEFLATE=1`) and "
            "browsers offer it, as they do, for frames that are mostly tiny Yjs updates. It is "
            "off by default; large initial syncs then travel uncompressed."
        )
    rest = (ours or {}).get("workloads", {}).get("rest", {}).get("servers", {}).get(OURS, {})
    rest_summary = rest.get("summary", {})
    history_cpu = median(rest_summary, "history_page.server_cpu_ms_per_request")
    entries = median(rest_summary, "history_page.history_entries")
    if history_cpu and history_cpu > 3:
        found.append(
            f"**A history page costs {num(history_cpu)} ms of server CPU** on a panel of "
            f"{num(entries)} versions, so one core serves about {num(1000 / history_cpu)} pages "
            "per second (`SqliteUpdateLog._history` reads a range of versions and decodes each "
            "entry's stored patch)."
        )
    rest_profile = ((ours or {}).get("rest_profile") or {}).get("windows", {})
    get_functions = {
        row["name"].split(" (")[0]: row["share"]
        for row in rest_profile.get("get_hot", {}).get("summary", {}).get("by_our_function", [])
    }
    auth = sum(v for k, v in get_functions.items() if k.startswith("Authenticator."))
    get_cpu = median(rest_summary, "get_hot.server_cpu_ms_per_request")
    if get_cpu and auth > 0.05:
        found.append(
            f"**A hot GET costs {num(get_cpu)} ms of server CPU**, of which the bearer-token "
            f"check (`Authenticator`) is {100 * auth:.0f} % of samples; the rest is uvicorn, "
            "Starlette and the socket: the room's cached view itself is cheap."
        )
    if compare is not None:
        cold = compare["workloads"].get("cold-sync", {}).get("servers", {})
        ours_cpu = median(cold.get(OURS, {}).get("summary", {}), "server_cpu_ms_per_join")
        y_cpu = median(cold.get("y-websocket", {}).get("summary", {}), "server_cpu_ms_per_join")
        if ours_cpu and y_cpu and ours_cpu < y_cpu:
            found.append(
                f"**Cold joins are cheap on ours**: {num(ours_cpu)} ms of CPU per joiner against "
                f"{num(y_cpu)} ms for y-websocket, which encodes the whole document for each "
                "joiner; ours encodes it once per change and shares it."
            )
        fan = compare["workloads"].get("fanout", {}).get("servers", {})
        ours_d = median(fan.get(OURS, {}).get("summary", {}), "server_cpu_ms_per_1000_deliveries")
        py_d = median(
            fan.get("pycrdt-websocket", {}).get("summary", {}), "server_cpu_ms_per_1000_deliveries"
        )
        components = {
            row["name"]: row["share"] for row in window.get("summary", {}).get("by_component", [])
        }
        sqlite = components.get("SQLite log (worker thread)")
        bookkeeping = sum(
            components.get(name, 0.0)
            for name in ("JSON view upkeep (patch replay)", "change events -> JSON Patch")
        )
        if ours_d and py_d and ours_d > 1.5 * py_d and sqlite:
            found.append(
                f"**Per delivery, ours spends {ratio(ours_d / py_d)} the CPU of pycrdt-websocket** "
                "(same pycrdt, same uvicorn and websockets) in fan-out. In the fan-out profile "
                f"the SQLite worker is {100 * sqlite:.0f} % of busy samples and the per-change "
                f"JSON Patch and view upkeep {100 * bookkeeping:.0f} %."
            )
        found += floor_findings(compare)
    found += replica_findings(ours)
    found += two_replicas_findings(compare)
    found += hocuspocus_findings([ours, compare, hocuspocus])
    if not found:
        return []
    lines = [
        "## Findings",
        "",
        "Computed from the results below (each only when the data shows it):",
        "",
    ]
    lines += [f"- {text}" for text in found]
    lines.append("")
    return lines


def floor_findings(compare: dict[str, Any]) -> list[str]:
    """What the transport alone costs (the relay floor), against ours and y-websocket."""
    found = []

    def fig(workload: str, server: str, key: str) -> float | None:
        entry = compare["workloads"].get(workload, {}).get("servers", {}).get(server, {})
        return median(entry.get("summary", {}), key)

    cpu = "server_cpu_ms_per_1000_deliveries"
    floor_cpu, ours_cpu, y_cpu = (fig("fanout", n, cpu) for n in (FLOOR, OURS, "y-websocket"))
    if floor_cpu and ours_cpu:
        found.append(
            f"**The transport alone costs {num(floor_cpu)} ms of CPU per 1,000 deliveries** in "
            f"fan-out: the relay floor (uvicorn, websockets, uvloop, no document) against "
            f"{num(y_cpu)} ms for y-websocket. Ours spends {num(ours_cpu - floor_cpu)} ms more "
            f"({ratio(ours_cpu / floor_cpu)} the floor): applying each update to the room's doc, "
            "its JSON Patch, the view, the durable log. That part is ours to shrink; the floor "
            "is the stack's."
        )
    rss = "rss_per_connection_bytes"
    floor_rss, ours_rss, y_rss = (fig("connections", n, rss) for n in (FLOOR, OURS, "y-websocket"))
    if floor_rss and ours_rss and y_rss:
        side = "above" if floor_rss > y_rss else "below"
        found.append(
            f"**An idle connection costs {size(floor_rss)} on the relay floor** (uvicorn's "
            f"protocol objects, the websockets parser, the ASGI task), {side} y-websocket's "
            f"{size(y_rss)}; ours holds {size(ours_rss)}, {size(ours_rss - floor_rss)} above the "
            "floor (the connection's room membership, presence and reader)."
            + (
                " A server on uvicorn cannot match y-websocket's memory per connection "
                "without leaving uvicorn."
                if floor_rss > y_rss
                else ""
            )
        )
    return found


def replica_findings(ours: dict[str, Any] | None) -> list[str]:
    rows = []
    for n in (1, 2, 4):
        entry = (ours or {}).get("workloads", {}).get(f"replicas-{n}", {})
        summary = entry.get("servers", {}).get(OURS, {}).get("summary")
        if summary:
            rows.append((n, summary))
    if len(rows) < 2:
        return []
    parts = [
        f"{n}: p50 {num(median(s, 'latency_p50_ms'))} ms, p99 {num(median(s, 'latency_p99_ms'))}"
        f" ms, {num(median(s, 'server_cpu_ms_per_1000_deliveries'))} ms CPU / 1,000 deliveries"
        for n, s in rows
    ]
    n, last = rows[-1]
    busy = sum(
        median(last, key) or 0.0 for key in ("server_cpu_pct", "loadgen_cpu_pct", "other_cpu_pct")
    )
    text = (
        "**Across replicas** (PostgreSQL + Redis, clients of a room on different replicas): "
        + "; ".join(parts)
        + ". Every replica holding a room applies each of its updates to its own copy of the "
        "doc, so CPU per delivery grows with the number of replicas that hold a room."
    )
    if busy > 170:
        text += (
            f" With {n} replicas the 2-core machine is saturated (replicas, PostgreSQL, Redis "
            f"and the load generator use {num(busy)} % of a core in all): its latency is the "
            "machine's queueing, not the design's."
        )
    return [text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--ours", default="ours", help="result name of `make bench`")
    parser.add_argument("--compare", default="compare", help="result name of `make bench-compare`")
    parser.add_argument(
        "--hocuspocus", default="hocuspocus", help="result name of `make bench-hocuspocus`"
    )
    args = parser.parse_args(argv)
    ours, compare = load(args.ours), load(args.compare)
    hocuspocus = load(args.hocuspocus)
    if ours is None and compare is None:
        print(
            "no results in bench/results/ (run make bench or make bench-compare)", file=sys.stderr
        )
        return 1
    lines = header(ours, compare, hocuspocus)
    if compare is not None:
        lines += headline_section(compare)
        lines += goals_section(compare, load("burst"))
        lines += floor_section(load("floor"), compare)
        lines += two_replicas_section(compare)
    lines += findings_section(ours, compare, hocuspocus)
    lines += machine_section(compare or ours)  # type: ignore[arg-type]
    lines += method_section(ours, compare)
    if compare is not None:
        lines += compare_section(compare)
    lines += hocuspocus_section([ours, compare, hocuspocus])
    if ours is not None:
        lines += ours_section(ours)
        lines += rest_section(ours)
        lines += profile_section(ours)
        lines += deflate_section(ours)
    lines += burst_section(load("burst"))
    lines += before_after_section()
    text = "\n".join(lines).rstrip() + "\n"
    args.output.write_text(text)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
