"""`make bench` and `make bench-compare`: run workloads against servers, record JSON results.

    python -m bench.run ours      # make bench: our server, every workload, REST, a profile
    python -m bench.run compare   # make bench-compare: the same workloads on four servers
    python -m bench.run hocuspocus  # many panels over one socket only (part of both above)

Options: --repeats N (BENCH_REPEATS; a suite may run some workloads fewer times unless the
repeats are given), --only W1,W2, --servers S1,S2, --name NAME (the result
file bench/results/NAME.json), --quick (tiny sizes, for trying the bench itself; such a result
goes to .bench/results/quick-*.json, out of the repository and of the report). Workload sizes:
BENCH_<WORKLOAD>_<PARAM>, e.g. BENCH_FANOUT_UPDATES=200 (see bench/workloads.py).

Every (repeat, workload, server) run gets a fresh server process and a fresh data folder.
Servers alternate run by run (the order rotates each repeat), so a slow spell of the shared
machine does not land on one server. Before each run the bench waits a little for the machine
to be quiet (other processes' CPU), and records how busy it was.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from .launchers import LAUNCHERS, HocuspocusRedis, Launcher, Ours, OursHocuspocus, scratch_dir
from .loadgen import check_installed
from .machine import (
    BENCH_DIR,
    CLIENT_PACKAGES,
    JS_DIR,
    ROOT,
    load_average,
    machine,
    node_package_versions,
    thread_cpu_seconds,
    wait_for_quiet,
)
from .profile import PY_SPY_VERSION, SAMPLE_RATE, Recorder, ensure_py_spy, summarize
from .two_replicas import TWO_REPLICA_WORKLOADS, print_two_replicas, two_replicas
from .workloads import COMPARED, DEFLATE_DIAGNOSTICS, REST_PHASES, WORKLOADS, Hooks, Workload

RESULTS = ROOT / "bench" / "results"
QUICK_RESULTS = BENCH_DIR / "results"
OURS = Ours.name
OURS_HP = OursHocuspocus.name  # the same server, clients on /ws/hocuspocus
HP_REDIS = HocuspocusRedis.name  # Hocuspocus instances sharing Redis (the replica comparison)
HP_WORKLOADS = ("fanout", "fanout-shared", "panels")  # many panels over one socket
QUIET_PCT = 40.0  # other processes' CPU (% of one core) under which a run starts at once
QUIET_WAIT_S = 15.0  # at most this long per run
QUIET_BUDGET_S = 150.0  # and at most this long in all
# A suite's `plan` names the servers of a workload when not all of the suite's run it.
SUITES: dict[str, dict[str, Any]] = {
    "ours": {
        "servers": [OURS, OURS_HP],
        "workloads": [
            "fanout",
            "fanout-shared",
            "panels",
            "hot-room",
            "connections",
            "cold-sync",
            "cold-sync-log",
            "rest",
            "replicas-1",
            "replicas-2",
            "replicas-4",
        ],
        "plan": {"fanout": [OURS, OURS_HP], "fanout-shared": [OURS_HP], "panels": [OURS, OURS_HP]},
        "plan_default": [OURS],
        "extras": True,
        "command": "make bench",
    },
    "compare": {
        "servers": [
            OURS,
            OURS_HP,
            "y-websocket",
            "hocuspocus",
            "pycrdt-websocket",
            "relay-floor",
            HP_REDIS,
        ],
        "workloads": [*COMPARED, "fanout-shared", "panels", *TWO_REPLICA_WORKLOADS],
        # Our Hocuspocus endpoint runs what the Hocuspocus server is compared on: fan-out
        # (a socket per client), fan-out over shared sockets, panels; the other workloads
        # measure the same server as crdt-state's (and the suite stays within its time).
        "plan": {
            "fanout": [
                OURS,
                OURS_HP,
                "y-websocket",
                "hocuspocus",
                "pycrdt-websocket",
                "relay-floor",
            ],
            "fanout-shared": [OURS_HP, "hocuspocus"],
            "panels": [OURS, OURS_HP, "hocuspocus"],
            # Two replicas against two Hocuspocus instances on Redis, each beside its own one
            # instance in the same repeat (bench/two_replicas.py).
            **{name: [OURS, HP_REDIS] for name in TWO_REPLICA_WORKLOADS},
        },
        "plan_default": [OURS, "y-websocket", "hocuspocus", "pycrdt-websocket", "relay-floor"],
        # Fewer repeats for the replica comparison (8 runs a repeat), so that the suite stays
        # within its 15 minutes; --repeats or BENCH_REPEATS sets them all.
        "repeats": {name: 2 for name in TWO_REPLICA_WORKLOADS},
        "extras": False,
        "command": "make bench-compare",
    },
    "hocuspocus": {
        "servers": [OURS, OURS_HP, "hocuspocus"],
        "workloads": list(HP_WORKLOADS),
        "plan": {"fanout-shared": [OURS_HP, "hocuspocus"]},
        "extras": False,
        "command": "make bench-hocuspocus",
    },
}
QUICK: dict[str, dict[str, Any]] = {
    "fanout": {"rooms": 5, "updates": 6, "warmup_s": 1.0},
    "hot-room": {"clients": 10, "updates": 6, "warmup_s": 1.0},
    "connections": {"clients": 200, "rooms": 20, "idle_seconds": 1.0},
    "cold-sync": {"updates": 2000, "joiners": 10},
    "cold-sync-log": {"updates": 2000, "joiners": 10},
    "rest": {"seconds": 2.0, "get_rate": 100.0, "patch_rate": 50.0, "history_rate": 50.0},
    "fanout-shared": {"rooms": 5, "updates": 6, "warmup_s": 1.0},
    "panels": {"tabs": 4, "panels": 10, "idle_seconds": 1.0},
    **{f"replicas-{n}": {"rooms": 6, "updates": 6, "warmup_s": 1.0} for n in (1, 2, 4)},
    **{f"cold-sync-replicas-{n}": {"updates": 2000, "joiners": 10} for n in (1, 2)},
}
# What the ratios (ours ÷ theirs) are computed for, per workload.
RATIO_METRICS = {
    "fanout": [
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "server_cpu_ms_per_1000_deliveries",
        "server_rss_peak_bytes",
    ],
    "hot-room": [
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "server_cpu_ms_per_1000_deliveries",
        "server_rss_peak_bytes",
    ],
    "connections": [
        "rss_per_connection_bytes",
        "connects_per_s",
        "server_cpu_ms_per_connect",
    ],
    "fanout-shared": [
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "server_cpu_ms_per_1000_deliveries",
        "server_rss_peak_bytes",
    ],
    "panels": [
        "rss_per_subscription_bytes",
        "subscriptions_per_s",
        "server_cpu_ms_per_subscription",
    ],
    "cold-sync": [
        "server_cpu_ms_per_join",
        "join_p50_ms",
        "join_p95_ms",
        "preload_updates_per_s",
        "server_rss_peak_bytes",
    ],
}
# The replica workloads: ours ÷ Hocuspocus on Redis, the same number of processes.
for _n in (1, 2, 4):
    RATIO_METRICS[f"replicas-{_n}"] = [
        "latency_p50_ms",
        "latency_p99_ms",
        "server_cpu_ms_per_1000_deliveries",
        "server_redis_cpu_ms_per_1000_deliveries",
        "server_rss_peak_bytes",
    ]
for _n in (1, 2):
    RATIO_METRICS[f"cold-sync-replicas-{_n}"] = [
        "server_cpu_ms_per_join",
        "server_redis_cpu_ms_per_join",
        "join_p50_ms",
        "join_p95_ms",
        "server_rss_peak_bytes",
    ]


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- one run ----------------------------------------------------------------------------------


class Quiet:
    """The waits for a quiet machine, within a budget for the whole suite."""

    def __init__(self) -> None:
        self.spent = 0.0

    def wait(self) -> dict[str, float]:
        allowed = max(0.0, min(QUIET_WAIT_S, QUIET_BUDGET_S - self.spent))
        result = wait_for_quiet(QUIET_PCT, allowed)
        self.spent += result["waited_s"]
        return result


def run_once(
    launcher: Launcher,
    workload: Workload,
    params: dict[str, Any],
    repeat: int,
    quiet: Quiet,
    hooks: Hooks | None = None,
) -> dict[str, Any]:
    if workload.auth and isinstance(launcher, Ours):
        launcher = type(launcher)(dev=False)
    if "replicas" in params and launcher.replicable:
        launcher = launcher.with_replicas(params["replicas"])
    workdir = scratch_dir(f"{launcher.name}-{workload.name}")
    before = quiet.wait()
    began = time.monotonic()
    record: dict[str, Any] = {
        "repeat": repeat,
        "machine_busy_pct_before": round(before["busy_pct_before"], 1),
        "waited_for_quiet_s": round(before["waited_s"], 1),
        "load_average_before": round(load_average(), 2),
    }
    server = launcher.server(workdir)
    try:
        server.start()
        bounded = {**params, "timeout": workload.timeout}  # the load generator's time limit
        record["figures"] = workload.runner(server, launcher, bounded, workdir, hooks)
        record["ok"] = True
    except Exception as exc:  # one failed run is recorded, the suite goes on
        record["ok"] = False
        record["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        record["server_log_tail"] = server.log_tail(15)
        log(f"  FAILED: {record['error'][:300]}")
    finally:
        server.stop()
        if not os.environ.get("BENCH_KEEP_WORKDIR"):
            shutil.rmtree(workdir, ignore_errors=True)
    record["duration_s"] = round(time.monotonic() - began, 2)
    return record


# -- summaries --------------------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, Any]:
    median = statistics.median(values)
    return {
        "median": median,
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
        "spread_pct": 100.0 * (max(values) - min(values)) / abs(median) if median else None,
    }


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure over the good runs: the spread of numbers; flags: all / any."""
    good = [run["figures"] for run in runs if run.get("ok")]
    summary: dict[str, Any] = {"runs_ok": len(good), "runs": len(runs)}
    if not good:
        return summary
    for key in good[0]:
        values = [figures.get(key) for figures in good]
        if all(isinstance(v, bool) for v in values):
            summary[key] = {"all": all(values), "any": any(values)}
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            summary[key] = spread([float(v) for v in values if v is not None])
    return summary


def ratios(workload: str, per_server: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Ours ÷ each other server (ours: crdt-state, or its Hocuspocus endpoint where the
    workload is for the Hocuspocus provider only)."""
    base = OURS if OURS in per_server else OURS_HP
    ours = per_server.get(base, {}).get("summary", {})
    table: dict[str, dict[str, float | None]] = {}
    for name, entry in per_server.items():
        if name == base:
            continue
        theirs = entry.get("summary", {})
        row: dict[str, float | None] = {}
        for metric in RATIO_METRICS.get(workload, []):
            a, b = ours.get(metric, {}).get("median"), theirs.get(metric, {}).get("median")
            row[metric] = a / b if isinstance(a, float) and isinstance(b, float) and b else None
        table[name] = row
    return table


# -- the extras of `make bench`: profile, deflate diagnostics ---------------------------------


PROFILES = BENCH_DIR / "profiles"  # raw stacks of the last profile runs (not committed)


def profile_run(
    workload: str, params: dict[str, Any], windows: dict[str, tuple[str, str]], quiet: Quiet
) -> dict[str, Any]:
    """One run of `workload` with py-spy attached to our server over each named window
    (a pair of barriers), and the per-thread CPU of the server over the same window."""
    ensure_py_spy()
    PROFILES.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {}
    hooks: Hooks = {}
    for label, (begin, end) in windows.items():
        raw = PROFILES / f"{workload}-{label}.raw"
        raw.unlink(missing_ok=True)

        def start(server: Any, label: str = label, raw: Path = raw) -> None:
            recorder = Recorder(server.pids[0], raw)
            state[label] = {
                "recorder": recorder,
                "threads_before": thread_cpu_seconds(server.pids[0]),
                "began": time.monotonic(),
                "raw": raw,
                "pid": server.pids[0],
            }
            recorder.start()

        def stop(server: Any, label: str = label) -> None:
            entry = state[label]
            entry["recorder"].stop()
            entry["wall_s"] = time.monotonic() - entry["began"]
            entry["threads_after"] = thread_cpu_seconds(server.pids[0])

        hooks[begin] = start
        hooks[end] = stop
    work = WORKLOADS[workload]
    launcher = Ours(dev=not work.auth)
    run = run_once(launcher, work, params, 1, quiet, hooks=hooks)
    result: dict[str, Any] = {
        "workload": workload,
        "params": params,
        "tool": f"py-spy {PY_SPY_VERSION} record --nonblocking --rate {SAMPLE_RATE}",
        "run": run,
        "windows": {},
    }
    for label, entry in state.items():
        window: dict[str, Any] = {}
        if entry["raw"].exists():
            window["summary"] = summarize(entry["raw"])
        if "threads_after" in entry:
            pid, before, after = entry["pid"], entry["threads_before"], entry["threads_after"]
            main = after.get(pid, 0.0) - before.get(pid, 0.0)
            others = sum(cpu - before.get(tid, 0.0) for tid, cpu in after.items() if tid != pid)
            wall = entry["wall_s"]
            window["thread_cpu"] = {
                "wall_s": wall,
                "main_thread_pct": 100.0 * main / wall,
                "other_threads_pct": 100.0 * others / wall,
                "threads": len(after),
            }
        result["windows"][label] = window
    return result


def deflate_diagnostics(
    sizes: dict[str, dict[str, Any]], quiet: Quiet, repeats: int
) -> dict[str, Any]:
    """Our server with permessage-deflate on (CRDT_STATE_WS_DEFLATE=1) and offered by the
    clients (as browsers do): what turning it on costs."""
    out: dict[str, Any] = {}
    for name in DEFLATE_DIAGNOSTICS:
        params = sizes[name] | {"deflate": True}
        log(f"diagnostic {name} with permessage-deflate")
        launcher = Ours(env={"CRDT_STATE_WS_DEFLATE": "1"})
        work = WORKLOADS[name]
        runs = [run_once(launcher, work, params, r, quiet) for r in range(1, repeats + 1)]
        out[name] = {"params": params, "runs": runs, "summary": summarize_runs(runs)}
    return out


# -- the suite --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--repeats", type=int, default=None, help="default: BENCH_REPEATS or 3")
    parser.add_argument("--only", help="comma-separated workloads")
    parser.add_argument("--servers", help="comma-separated servers (compare)")
    parser.add_argument("--name", help="result file name (default: the suite's)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to try the bench")
    parser.add_argument("--command", help="how this was started, for the record")
    args = parser.parse_args(argv)
    # Repeats given (--repeats, BENCH_REPEATS) apply to every workload; otherwise the suite's
    # own counts (`repeats`) cap some of them.
    repeats_given = args.repeats is not None or bool(os.environ.get("BENCH_REPEATS"))
    if args.repeats is None:
        args.repeats = int(os.environ.get("BENCH_REPEATS") or "3")
    caps: dict[str, int] = {} if repeats_given else SUITES[args.suite].get("repeats", {})

    suite = SUITES[args.suite]
    check_installed()
    names = args.only.split(",") if args.only else suite["workloads"]
    servers = args.servers.split(",") if args.servers else suite["servers"]
    unknown = [n for n in names if n not in WORKLOADS] + [s for s in servers if s not in LAUNCHERS]
    if unknown:
        parser.error(f"unknown workload or server: {', '.join(unknown)}")
    launchers = [LAUNCHERS[name]() for name in servers]
    name = args.name or (f"quick-{args.suite}" if args.quick else args.suite)
    # Quick results are for trying the bench: they stay out of the repository.
    out_path = (QUICK_RESULTS if args.quick else RESULTS) / f"{name}.json"
    started = time.monotonic()
    log(f"suite {args.suite}: servers {servers}, workloads {names}, {args.repeats} repeat(s)")

    for launcher in launchers:
        launcher.install()
    sizes = {
        n: WORKLOADS[n].resolved() | (QUICK.get(n, {}) if args.quick else {}) for n in WORKLOADS
    }
    env_overrides = {k: v for k, v in sorted(os.environ.items()) if k.startswith("BENCH_")}
    if "BENCH_OURS_SOURCE" in env_overrides:  # a path of this machine: the commit names it
        env_overrides["BENCH_OURS_SOURCE"] = "<a checkout of the commit in versions>"
    result: dict[str, Any] = {
        "schema": 1,
        "name": name,
        "suite": args.suite,
        "quick": args.quick,
        "command": args.command or suite["command"],
        "argv": "python -m bench.run " + shlex.join(sys.argv[1:] if argv is None else argv),
        "env_overrides": env_overrides,
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_at_start": round(load_average(), 2),
        "client_packages": node_package_versions(JS_DIR, CLIENT_PACKAGES),
        "servers": {launcher.name: launcher.describe() for launcher in launchers},
        "repeats": args.repeats,
        "method": {
            "order": "every repeat runs each workload on every server, servers rotating",
            "fresh_server_per_run": True,
            "quiet_wait": {
                "limit_pct": QUIET_PCT,
                "max_s": QUIET_WAIT_S,
                "budget_s": QUIET_BUDGET_S,
            },
            "loadgen_saturated_above_pct": 90.0,
        },
        "workloads": {},
    }
    quiet = Quiet()
    plan: dict[str, list[str]] = suite.get("plan", {})
    default_plan: list[str] | None = suite.get("plan_default")
    for n in names:
        workload = WORKLOADS[n]
        result["workloads"][n] = {
            "title": workload.title,
            "params": sizes[n],
            "repeats": min(args.repeats, caps.get(n, args.repeats)),
            "servers": {
                launcher.name: {"runs": []}
                for launcher in launchers
                if (not workload.ours_only or launcher.name == OURS)
                and (not workload.replicated or launcher.replicable)
                and n not in launcher.skips
                and workload.client_only in (None, launcher.client)
                and launcher.name in plan.get(n, default_plan or [launcher.name])
            },
        }

    def save() -> None:
        result["duration_s"] = round(time.monotonic() - started, 1)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")

    for repeat in range(1, args.repeats + 1):
        for n in names:
            workload = WORKLOADS[n]
            entry = result["workloads"][n]
            order = [lnch for lnch in launchers if lnch.name in entry["servers"]]
            if not order or repeat > entry["repeats"]:
                continue
            shift = (repeat - 1) % len(order)
            order = order[shift:] + order[:shift]
            for launcher in order:
                elapsed = time.monotonic() - started
                log(f"[{elapsed:6.0f}s] repeat {repeat}/{args.repeats} {n} on {launcher.name}")
                record = run_once(launcher, workload, sizes[n], repeat, quiet)
                entry["servers"][launcher.name]["runs"].append(record)
                save()

    for n in names:
        entry = result["workloads"][n]
        for per in entry["servers"].values():
            per["summary"] = summarize_runs(per["runs"])
        if len(entry["servers"]) > 1:
            entry["ratios"] = ratios(n, entry["servers"])
    comparison = two_replicas(result["workloads"])
    if comparison:
        result["two_replicas"] = comparison
    save()

    if suite["extras"] and not args.only:
        log("profile: one fan-out run with py-spy")
        result["profile"] = profile_run(
            "fanout", sizes["fanout"], {"fanout": ("measure", "done")}, quiet
        )
        save()
        log("profile: one REST run with py-spy")
        result["rest_profile"] = profile_run(
            "rest",
            sizes["rest"],
            {phase: (f"before:{phase}", f"after:{phase}") for phase in REST_PHASES},
            quiet,
        )
        save()
        result["diagnostics"] = {
            "deflate": deflate_diagnostics(sizes, quiet, 1 if args.quick else 2)
        }
    result["quiet_waits_s"] = round(quiet.spent, 1)
    result["finished_at"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    save()
    log(f"done in {result['duration_s']:.0f} s: {out_path.relative_to(ROOT)}")
    print_summary(result)
    return 0


def print_summary(result: dict[str, Any]) -> None:
    for name, entry in result["workloads"].items():
        for server, per in entry["servers"].items():
            summary = per.get("summary", {})
            keys = RATIO_METRICS.get(name) or [k for k in summary if k.endswith("_p50_ms")]
            shown = ", ".join(
                f"{k}={summary[k]['median']:.4g}"
                for k in keys
                if isinstance(summary.get(k), dict) and "median" in summary[k]
            )
            print(
                f"{name:14} {server:18} ok {summary.get('runs_ok')}/{summary.get('runs')} {shown}"
            )
        for server, row in entry.get("ratios", {}).items():
            shown = ", ".join(f"{k}={v:.2f}" for k, v in row.items() if v is not None)
            print(f"{name:14} ours ÷ {server:11} {shown}")
    if result.get("two_replicas"):
        print_two_replicas(result["two_replicas"])


if __name__ == "__main__":
    sys.exit(main())
