"""The workloads: each one is a function of (server, launcher, parameters) that runs the load
generator once and returns flat figures (a dict of numbers and flags).

Sizes are defaults that fit `make bench` and `make bench-compare` in their time budget on the
2-core machine; every parameter can be raised from the environment, e.g.
`BENCH_FANOUT_ROOMS=200 BENCH_FANOUT_UPDATES=500 make bench` (see `Workload.resolved`).
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .launchers import Launcher, Ours, Server
from .loadgen import LoadGen
from .machine import ProcSample, cpu_seconds_by_pid, machine_busy_seconds, sample_many

WORKSPACE = "bench"
LOADGEN_SATURATED_PCT = 90.0


# -- measuring --------------------------------------------------------------------------------


@dataclass(slots=True)
class Mark:
    at: float
    server: ProcSample
    loadgen: ProcSample | None
    machine_busy_s: float
    services: dict[str, dict[int, float]]  # CPU seconds of each service process, by pid


Hooks = dict[str, Callable[[Server], None]]
"""Called at a barrier after its reading, by barrier name (e.g. start a profiler at 'measure')."""


@dataclass(slots=True)
class Meter:
    """Readings of the server's and the load generator's processes at named moments."""

    server: Server
    loadgen: LoadGen
    hooks: Hooks | None = None
    marks: dict[str, Mark] = field(default_factory=dict)

    def mark(self, name: str) -> Mark:
        try:
            loadgen: ProcSample | None = sample_many([self.loadgen.pid])
        except (OSError, AssertionError):
            loadgen = None
        services = {name: cpu_seconds_by_pid(find()) for name, find in self.server.services.items()}
        mark = Mark(
            time.monotonic(),
            sample_many(self.server.pids),
            loadgen,
            machine_busy_seconds(),
            services,
        )
        self.marks[name] = mark
        hook = (self.hooks or {}).get(name)
        if hook is not None:
            hook(self.server)
        return mark

    def window(self, start: str, end: str) -> dict[str, float]:
        """CPU seconds of each side between two marks, and the wall time. The server's
        services (Redis, PostgreSQL) each get `<name>_cpu_s` and `<name>_cpu_pct`: a process
        that appeared between the marks counts from its start; one that ended is lost."""
        a, b = self.marks[start], self.marks[end]
        wall = b.at - a.at
        server_cpu = b.server.cpu_seconds - a.server.cpu_seconds
        figures = {
            "wall_s": wall,
            "server_cpu_s": server_cpu,
            "server_cpu_pct": 100.0 * server_cpu / wall if wall > 0 else 0.0,
        }
        loadgen_cpu = 0.0
        if a.loadgen is not None and b.loadgen is not None:
            loadgen_cpu = b.loadgen.cpu_seconds - a.loadgen.cpu_seconds
            figures["loadgen_cpu_s"] = loadgen_cpu
            figures["loadgen_cpu_pct"] = 100.0 * loadgen_cpu / wall if wall > 0 else 0.0
        services_cpu = 0.0
        for name, after in b.services.items():
            if not after:  # not found on this machine (e.g. Redis on another host)
                continue
            before = a.services.get(name, {})
            cpu = sum(max(0.0, seconds - before.get(pid, 0.0)) for pid, seconds in after.items())
            figures[f"{name}_cpu_s"] = cpu
            figures[f"{name}_cpu_pct"] = 100.0 * cpu / wall if wall > 0 else 0.0
            services_cpu += cpu
        # Everything else the machine ran meanwhile (other processes, the kernel's share of
        # loopback traffic): a shared 2-core machine is never quite idle.
        other = (b.machine_busy_s - a.machine_busy_s) - server_cpu - loadgen_cpu - services_cpu
        figures["other_cpu_pct"] = 100.0 * max(0.0, other) / wall if wall > 0 else 0.0
        return figures


def loadgen_flags(window: dict[str, float]) -> dict[str, Any]:
    pct = window.get("loadgen_cpu_pct")
    return {
        "loadgen_cpu_pct": pct,
        "loadgen_saturated": bool(pct is not None and pct > LOADGEN_SATURATED_PCT),
        "server_cpu_pct": window["server_cpu_pct"],
        "other_cpu_pct": window["other_cpu_pct"],
        **{k: v for k, v in window.items() if k in SERVICE_PCT},
    }


SERVICES = ("redis", "postgres")
SERVICE_PCT = tuple(f"{name}_cpu_pct" for name in SERVICES)


def service_costs(window: dict[str, float], per: float, unit: str, scale: float) -> dict[str, Any]:
    """Each service's CPU per unit of work (`scale` ms of CPU per `per` units), and the
    server's with Redis's added (how the replica comparison charges both sides alike)."""
    if not per:
        return {}
    figures: dict[str, Any] = {}
    for name in SERVICES:
        if f"{name}_cpu_s" in window:
            figures[f"{name}_cpu_ms_per_{unit}"] = scale * window[f"{name}_cpu_s"] / per
    if "redis_cpu_s" in window:
        both = window["server_cpu_s"] + window["redis_cpu_s"]
        figures[f"server_redis_cpu_ms_per_{unit}"] = scale * both / per
    return figures


def client_spec(
    server: Server, launcher: Launcher, p: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    """The load generator's spec: which client stack, which URLs, permessage-deflate offered
    (as browsers do) unless the parameters say `deflate: false`; with `docs_per_socket` (the
    Hocuspocus provider only), that many clients share each socket, as the panels of a tab."""
    return {
        "client": launcher.client,
        "urls": server.urls(WORKSPACE),
        "namePrefix": launcher.document_prefix.format(workspace=WORKSPACE),
        "deflate": bool(p.get("deflate", True)),
        "docsPerSocket": int(p.get("docs_per_socket", 0)) if launcher.client == "hocuspocus" else 0,
        **fields,
    }


# -- workload definitions ---------------------------------------------------------------------

Runner = Callable[[Server, Launcher, dict[str, Any], Path, Hooks | None], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    title: str
    runner: Runner
    params: dict[str, Any]
    timeout: float
    ours_only: bool = False
    replicated: bool = False  # `replicas` processes sharing state: replicable servers only
    auth: bool = False  # ours runs with JWT authentication (not --dev) for this workload
    client_only: str | None = None  # only servers measured with this client stack

    def resolved(self) -> dict[str, Any]:
        """Parameters with environment overrides: BENCH_<WORKLOAD>_<PARAM> (upper case, `_`)."""
        prefix = "BENCH_" + self.name.upper().replace("-", "_") + "_"
        params = dict(self.params)
        for key, default in self.params.items():
            raw = os.environ.get(prefix + key.upper())
            if raw is None or raw == "":
                continue
            params[key] = type(default)(json.loads(raw)) if not isinstance(default, str) else raw
        return params


def fanout(
    server: Server,
    launcher: Launcher,
    p: dict[str, Any],
    workdir: Path,
    hooks: Hooks | None = None,
) -> dict[str, Any]:
    """R rooms × C clients, each client writing U updates at a fixed rate; every update carries
    its send time and is timed at each other client of its room when its observer fires. With
    `shared_sockets`, client c of every room is a document on tab c's one socket."""
    spec = client_spec(
        server,
        launcher,
        p | ({"docs_per_socket": p["rooms"]} if p.get("shared_sockets") else {}),
        workload="fanout",
        roomPrefix=p["room_prefix"],
        rooms=p["rooms"],
        clientsPerRoom=p["clients"],
        updatesPerClient=p["updates"],
        ratePerClient=p["rate"],
        connect={"concurrency": p["connect_concurrency"], "timeoutMs": 20_000},
        warmupSeconds=p["warmup_s"],
        quiesceTimeoutMs=60_000,
        stallMs=10_000,
    )
    loadgen = LoadGen(spec, workdir / "loadgen.log")
    meter = Meter(server, loadgen, hooks)

    def on_barrier(name: str, info: dict[str, Any]) -> None:
        meter.mark(name)

    result = loadgen.run(on_barrier, timeout=p.get("timeout", 300))
    window = meter.window("measure", "done")
    end = meter.marks["done"].server
    measured = result["measuredDeliveries"]
    latency = result["latencyMs"]
    figures: dict[str, Any] = {
        "clients": result["clients"],
        "sockets": result["sockets"],
        "connect_failed": result["connect"]["failed"],
        "connect_s": result["connect"]["ms"] / 1000,
        "updates_sent": result["sent"],
        "updates_measured": result["sentMeasured"],
        "deliveries_expected": result["expectedDeliveries"],
        "deliveries": result["deliveries"],
        "lost_deliveries": result["lost"],
        "lost_by_room": result["lostByRoom"],
        "deliveries_measured": measured,
        "merged_deliveries": result["merged"],
        "stale_values": result["stale"],
        "converged": result["converged"],
        "rooms_diverged": result["roomsDiverged"],
        "rooms_wrong_size": result["roomsWrongSize"],
        "closes_during_run": result["closesDuringRun"],
        "latency_p50_ms": latency["p50"],
        "latency_p95_ms": latency["p95"],
        "latency_p99_ms": latency["p99"],
        "latency_max_ms": latency["max"],
        "latency_mean_ms": latency["mean"],
        "offered_updates_per_s": p["rooms"] * p["clients"] * p["rate"],
        "updates_per_s": (
            result["sentMeasured"] / (result["sendMs"] / 1000) if result["sendMs"] else None
        ),
        "deliveries_per_s": (
            measured / (result["deliveryWindowMs"] / 1000) if result["deliveryWindowMs"] else None
        ),
        "server_cpu_ms_per_1000_deliveries": (
            1e6 * window["server_cpu_s"] / measured if measured else None
        ),
        "server_rss_end_bytes": end.rss_bytes,
        "server_rss_peak_bytes": end.hwm_bytes,
        "loadgen_send_lag_p99_ms": result["sendLagMs"]["p99"],
        "loadgen_loop_delay_p99_ms": result["loopDelayMs"]["p99"],
        "loadgen_loop_delay_max_ms": result["loopDelayMs"]["max"],
        "latency_timeline": result["latencyTimeline"],
        **loadgen_flags(window),
        **service_costs(window, measured, "1000_deliveries", 1e6),
    }
    if isinstance(launcher, Ours):
        figures["log_versions_ok"] = _versions_logged(server, p)
    return figures


def _versions_logged(server: Server, p: dict[str, Any]) -> bool:
    """Ours logs every update: each room's version is 1 (creation) + its updates. A version is
    given at commit (on PostgreSQL, by the log), up to a group-commit window after the last
    delivery: each room gets 10 s to reach it."""
    want = 1 + p["clients"] * (p["updates"] + round(p["warmup_s"] * p["rate"]))
    for room in range(p["rooms"]):
        url = f"{server.http}/api/state/{WORKSPACE}/{p['room_prefix']}-{room}"
        deadline = time.monotonic() + 10
        while True:
            with urllib.request.urlopen(url, timeout=30) as response:
                version = json.loads(response.read())["version"]
            if version == want:
                break
            if version > want or time.monotonic() > deadline:
                return False
            time.sleep(0.05)  # polling the server's log: there is no event to wait on
    return True


def connections(
    server: Server,
    launcher: Launcher,
    p: dict[str, Any],
    workdir: Path,
    hooks: Hooks | None = None,
) -> dict[str, Any]:
    """N idle clients over M rooms: connect rate, memory per connection, idle CPU."""
    spec = client_spec(
        server,
        launcher,
        p,
        workload="connections",
        roomPrefix=p.get("room_prefix", "idle"),
        clients=p["clients"],
        rooms=p["rooms"],
        idleSeconds=p["idle_seconds"],
        connect={"concurrency": p["connect_concurrency"], "timeoutMs": 30_000},
    )
    loadgen = LoadGen(spec, workdir / "loadgen.log")
    meter = Meter(server, loadgen, hooks)

    def on_barrier(name: str, info: dict[str, Any]) -> None:
        meter.mark(name)

    result = loadgen.run(on_barrier, timeout=p.get("timeout", 300))
    connect = meter.window("baseline", "connected")
    idle = meter.window("connected", "idle")
    base, up = meter.marks["baseline"].server, meter.marks["connected"].server
    after_idle = meter.marks["idle"].server
    connected = result["connected"]
    return {
        "clients": result["clients"],
        "sockets": result["sockets"],
        "rooms": result["rooms"],
        "connected": connected,
        "connect_failed": result["failed"],
        "open_after_idle": result["openAfterIdle"],
        "closes_while_idle": result["closesWhileIdle"],
        "connect_s": result["connectMs"] / 1000,
        "connects_per_s": result["connectPerSecond"],
        "connect_p50_ms": result["perClientMs"]["p50"],
        "connect_p95_ms": result["perClientMs"]["p95"],
        "connect_max_ms": result["perClientMs"]["max"],
        "server_rss_baseline_bytes": base.rss_bytes,
        "server_rss_connected_bytes": up.rss_bytes,
        "server_rss_after_idle_bytes": after_idle.rss_bytes,
        "server_rss_peak_bytes": after_idle.hwm_bytes,
        "rss_per_connection_bytes": (up.rss_bytes - base.rss_bytes) / connected
        if connected
        else None,
        "server_cpu_ms_per_connect": 1000 * connect["server_cpu_s"] / connected
        if connected
        else None,
        "idle_server_cpu_pct": idle["server_cpu_pct"],
        **loadgen_flags(connect),
    }


def panels(
    server: Server,
    launcher: Launcher,
    p: dict[str, Any],
    workdir: Path,
    hooks: Hooks | None = None,
) -> dict[str, Any]:
    """T tabs each showing the same P panels, idle: memory and CPU per panel subscription.
    With the Hocuspocus provider the P documents of a tab share one socket; with y-websocket
    each panel is a socket of its own (what a page does today)."""
    shared = launcher.client == "hocuspocus"
    subscriptions = p["tabs"] * p["panels"]
    figures = connections(
        server,
        launcher,
        p
        | {
            "clients": subscriptions,
            "rooms": p["panels"],
            "room_prefix": "panel",
            "docs_per_socket": p["panels"] if shared else 0,
        },
        workdir,
        hooks,
    )
    connected = figures["connected"]
    return {
        "subscriptions": subscriptions,
        "shared_socket": shared,
        "rss_per_subscription_bytes": figures.pop("rss_per_connection_bytes"),
        "server_cpu_ms_per_subscription": figures.pop("server_cpu_ms_per_connect"),
        "subscriptions_per_s": figures.pop("connects_per_s"),
        "rss_per_socket_bytes": (
            (figures["server_rss_connected_bytes"] - figures["server_rss_baseline_bytes"])
            / figures["sockets"]
            if connected and figures["sockets"]
            else None
        ),
        **figures,
    }


def cold_sync(
    server: Server,
    launcher: Launcher,
    p: dict[str, Any],
    workdir: Path,
    hooks: Hooks | None = None,
) -> dict[str, Any]:
    """One client writes N updates (the panel's log), then J clients join at once from nothing.

    With `restart`, the writer leaves and the server restarts before the joiners come: the
    panel is then loaded from its log (ours only; the reference servers keep no log)."""
    restart = bool(p.get("restart"))
    spec = client_spec(
        server,
        launcher,
        p,
        workload="coldSync",
        room=p["room"],
        updates=p["updates"],
        keys=p["keys"],
        joiners=p["joiners"],
        keepWriter=not restart,
        chunk=200,
        preloadTimeoutMs=240_000,
        fullStateTimeoutMs=p.get("full_state_timeout_ms", 20_000),
        connect={"timeoutMs": 60_000},
    )
    loadgen = LoadGen(spec, workdir / "loadgen.log")
    meter = Meter(server, loadgen, hooks)
    restart_s: list[float] = []

    settle_s: list[float] = []

    def on_barrier(name: str, info: dict[str, Any]) -> dict[str, Any] | None:
        if name == "preloaded" and restart:
            began = time.monotonic()
            server.restart()
            restart_s.append(time.monotonic() - began)
            meter.mark(name)
            return {"urls": server.urls(WORKSPACE)}
        if name == "preloaded":
            # The last update was relayed; work it left behind (ours: commits, checkpoints)
            # must not be charged to the joins.
            settle_s.append(wait_idle(server))
        meter.mark(name)
        return None

    result = loadgen.run(on_barrier, timeout=p.get("timeout", 400))
    join = meter.window("preloaded", "joined")
    joined = result["joined"]
    end = meter.marks["joined"].server
    figures = {
        "updates": result["updates"],
        "joiners": result["joiners"],
        "joined": joined,
        "join_failed": result["failed"],
        "converged": result["converged"],
        "preload_s": result["preloadMs"] / 1000,
        "preload_updates_per_s": result["preloadUpdatesPerSecond"],
        "join_p50_ms": result["joinMs"]["p50"],
        "join_p95_ms": result["joinMs"]["p95"],
        "join_max_ms": result["joinMs"]["max"],
        "all_joined_ms": result["allJoinedMs"],
        # A joiner on a replica that did not hold the panel may sync before the replica has
        # it all: how many had the whole panel when their provider said synced, how many got
        # it within `full_state_timeout_ms` after the join began, and when.
        "joiners_full_at_sync": result["fullAtSync"],
        "joiners_full": result["full"],
        "full_state_p50_ms": result["fullMs"]["p50"],
        "full_state_p95_ms": result["fullMs"]["p95"],
        "all_full_ms": result["allFullMs"],
        "server_cpu_ms_per_join": 1000 * join["server_cpu_s"] / joined if joined else None,
        "bytes_per_joiner": result["bytesPerJoiner"],
        "server_rss_end_bytes": end.rss_bytes,
        "server_rss_peak_bytes": end.hwm_bytes,
        **loadgen_flags(join),
        **service_costs(join, joined, "join", 1000.0),
    }
    if restart_s:
        figures["restart_s"] = restart_s[0]
    if settle_s:
        figures["preload_settle_s"] = settle_s[0]
    return figures


def wait_idle(
    server: Server, *, below_pct: float = 5.0, every: float = 0.5, limit: float = 60.0
) -> float:
    """Wait until the server uses less than `below_pct` % of a core over `every` s; return
    how long that took (at most `limit`)."""
    began = time.monotonic()
    last = sample_many(server.pids).cpu_seconds
    while time.monotonic() - began < limit:
        time.sleep(every)
        now = sample_many(server.pids).cpu_seconds
        if 100.0 * (now - last) / every < below_pct:
            break
        last = now
    return time.monotonic() - began


REST_PHASES = ("get_hot", "patch_durable", "history_page")


def rest(
    server: Server,
    launcher: Launcher,
    p: dict[str, Any],
    workdir: Path,
    hooks: Hooks | None = None,
) -> dict[str, Any]:
    """REST under concurrency: GET of a hot panel, durable PATCH, history pages of 50."""
    assert isinstance(launcher, Ours)
    headers = {}
    if not launcher.dev:
        headers["authorization"] = "Bearer " + launcher.token({WORKSPACE: "write"})
    phases = [
        {
            "name": "get_hot",
            "kind": "get",
            "rate": p["get_rate"],
            "seconds": p["seconds"],
            "concurrency": p["concurrency"],
            "warmupSeconds": 1,
        },
        {
            "name": "patch_durable",
            "kind": "patch",
            "rate": p["patch_rate"],
            "seconds": p["seconds"],
            "concurrency": p["concurrency"],
            "warmupSeconds": 1,
        },
        {
            "name": "history_page",
            "kind": "history",
            "limit": 50,
            "rate": p["history_rate"],
            "seconds": p["seconds"],
            "concurrency": p["concurrency"],
            "warmupSeconds": 1,
        },
    ]
    spec = {
        "workload": "rest",
        "base": server.http,
        "headers": headers,
        "panelPath": f"/api/state/{WORKSPACE}/rest-panel",
        "initialState": {f"k{i}": i for i in range(20)} | {"title": "Orders by region"},
        "phases": phases,
    }
    loadgen = LoadGen(spec, workdir / "loadgen.log")
    meter = Meter(server, loadgen, hooks)

    def on_barrier(name: str, info: dict[str, Any]) -> None:
        meter.mark(name)

    result = loadgen.run(on_barrier, timeout=p.get("timeout", 300))
    figures: dict[str, Any] = {}
    for name in REST_PHASES:
        phase = result[name]
        window = meter.window(f"before:{name}", f"after:{name}")
        latency = phase["latencyMs"]
        figures |= {
            f"{name}.requests": phase["requests"],
            f"{name}.errors": phase["errors"],
            f"{name}.target_rate": phase["targetRate"],
            f"{name}.achieved_rate": phase["achievedRate"],
            f"{name}.concurrency": phase["concurrency"],
            f"{name}.latency_p50_ms": latency["p50"],
            f"{name}.latency_p95_ms": latency["p95"],
            f"{name}.latency_p99_ms": latency["p99"],
            f"{name}.latency_max_ms": latency["max"],
            f"{name}.server_cpu_ms_per_request": (
                1000 * window["server_cpu_s"] / phase["requests"] if phase["requests"] else None
            ),
            f"{name}.server_cpu_pct": window["server_cpu_pct"],
            f"{name}.loadgen_cpu_pct": window.get("loadgen_cpu_pct"),
            f"{name}.loadgen_saturated": bool(
                (window.get("loadgen_cpu_pct") or 0) > LOADGEN_SATURATED_PCT
            ),
        }
        if "historyEntries" in phase:
            figures[f"{name}.history_entries"] = phase["historyEntries"]
    figures["server_rss_peak_bytes"] = meter.marks["after:history_page"].server.hwm_bytes
    return figures


# The fan-out workload's sizes; the replica workloads run the same load.
FANOUT_PARAMS: dict[str, Any] = {
    "rooms": 50,
    "clients": 4,
    "updates": 20,
    "rate": 2.0,
    "warmup_s": 2.0,
    "connect_concurrency": 50,
    "deflate": False,
}

# The default sizes fit `make bench` and `make bench-compare` (3 repeats) in 15 minutes each on
# the 2-core machine; see docs/BENCHMARKS.md for what was scaled down. `deflate: False`: the
# load generator does not offer permessage-deflate (see ours-deflate below and the report).
WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "fanout",
            "Fan-out: many rooms, a few writers each",
            fanout,
            FANOUT_PARAMS | {"room_prefix": "fanout"},
            timeout=240,
        ),
        Workload(
            "hot-room",
            "Hot room: one room, many writers",
            fanout,
            {
                "rooms": 1,
                "clients": 50,
                "updates": 20,
                "rate": 2.0,
                "warmup_s": 2.0,
                "connect_concurrency": 50,
                "room_prefix": "hot",
                "deflate": False,
            },
            timeout=240,
        ),
        *(
            Workload(
                f"replicas-{n}",
                f"Cross-replica fan-out: {n} replica{'s' if n > 1 else ''} sharing state "
                "(ours: PostgreSQL + Redis; Hocuspocus: its Redis extension)"
                + (", the clients of each room spread over them" if n > 1 else ""),
                fanout,
                FANOUT_PARAMS | {"replicas": n, "room_prefix": f"replicas{n}"},
                timeout=240,
                replicated=True,
            )
            for n in (1, 2, 4)
        ),
        Workload(
            "connections",
            "Connections: idle clients over many rooms",
            connections,
            {
                "clients": 2000,
                "rooms": 200,
                "idle_seconds": 3.0,
                "connect_concurrency": 100,
                "deflate": False,
            },
            timeout=300,
        ),
        Workload(
            "cold-sync",
            "Cold sync: many clients join a panel of 20,000 updates at once",
            cold_sync,
            {
                "updates": 20_000,
                "keys": 10,
                "joiners": 50,
                "room": "cold",
                "restart": False,
                "deflate": False,
            },
            timeout=400,
        ),
        Workload(
            "cold-sync-log",
            "Cold sync from the log: the same, after a restart (the panel loads from SQLite)",
            cold_sync,
            {
                "updates": 20_000,
                "keys": 10,
                "joiners": 50,
                "room": "cold",
                "restart": True,
                "deflate": False,
            },
            timeout=400,
            ours_only=True,
        ),
        *(
            Workload(
                f"cold-sync-replicas-{n}",
                (
                    f"Cold sync across {n} replicas: a panel of 20,000 updates written through "
                    "the first, then the joiners at once, spread over them"
                    if n > 1
                    else "Cold sync, one replica sharing state: a panel of 20,000 updates, then "
                    "the joiners at once"
                ),
                cold_sync,
                {
                    "updates": 20_000,
                    "keys": 10,
                    "joiners": 20,
                    "room": "cold",
                    "restart": False,
                    "deflate": False,
                    "replicas": n,
                },
                timeout=400,
                replicated=True,
            )
            for n in (1, 2)
        ),
        Workload(
            "rest",
            "REST: GET hot, PATCH durable, history page of 50",
            rest,
            {
                "get_rate": 300.0,
                "patch_rate": 200.0,
                "history_rate": 50.0,
                "seconds": 8.0,
                "concurrency": 16,
            },
            timeout=300,
            ours_only=True,
            auth=True,
        ),
    )
}

# Many panels over one socket (docs/PROTOCOL.md, "/ws/hocuspocus"): what a panel subscription
# costs, 20 tabs × 50 panels, a socket per panel or one per tab; and the fan-out workload with
# each tab a document of every room over one shared socket (4 sockets × 50 documents).
WORKLOADS |= {
    w.name: w
    for w in (
        Workload(
            "panels",
            "Panels: 20 tabs × 50 panels, a socket per panel (y-websocket) or one per tab "
            "(Hocuspocus provider)",
            panels,
            {
                "tabs": 20,
                "panels": 50,
                "idle_seconds": 3.0,
                "connect_concurrency": 100,
                "deflate": False,
            },
            timeout=300,
        ),
        Workload(
            "fanout-shared",
            "Fan-out over shared sockets: the fan-out load, each tab one socket carrying a "
            "document of every room",
            fanout,
            FANOUT_PARAMS | {"room_prefix": "shared", "shared_sockets": True},
            timeout=240,
            client_only="hocuspocus",
        ),
    )
}

# Diagnostics (make bench, one run each): the same workloads with permessage-deflate offered,
# as browsers do. Our server (uvicorn's default) accepts it; the Node servers do not.
DEFLATE_DIAGNOSTICS = ("fanout", "connections")

COMPARED = ("fanout", "hot-room", "connections", "cold-sync")
