"""The "before / after" sections of docs/BENCHMARKS.md: the same workloads run on several
commits, interleaved on one machine in one sitting, recorded under bench/results/.

A set is a folder of results (`ab/`: the redesign and the hostile-client work; `ab-issue15/`:
the performance issue). A result file there is a `python -m bench.run ours --only ...
--repeats 1 --name <folder>/<label>-<n>` run of one commit (label: before, after...; n: the
round). Rounds alternate the commits, so a slow spell of the shared machine lands on each of
them alike, and take them in turn first (before, after; then after, before: ABBA), so that no
commit always runs first or always follows the other. Medians over the rounds, with the range.

Running a set (the driver of this file; every commit runs with this checkout's bench and
venv, its server from a clone of the commit, BENCH_OURS_SOURCE):

    python -m bench.before_after run ab-issue15 --rounds 3 before=../before after=.

A label may carry environment for its server after its checkout, comma-separated
(`before=../before,PYTHONPATH=.bench/no-hiredis`): an older commit whose dependencies lacked
a package this venv has can be run without it (a folder whose module of that name refuses to
import, put first on the path).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .machine import ROOT

RESULTS = ROOT / "bench" / "results"
FIGURES = [
    ("fanout", "latency_p50_ms", "fan-out p50 (ms)"),
    ("fanout", "latency_p99_ms", "fan-out p99 (ms)"),
    ("fanout", "server_cpu_ms_per_1000_deliveries", "fan-out CPU / 1,000 deliveries (ms)"),
    ("hot-room", "latency_p50_ms", "hot room p50 (ms)"),
    ("hot-room", "latency_p99_ms", "hot room p99 (ms)"),
    ("hot-room", "server_cpu_ms_per_1000_deliveries", "hot room CPU / 1,000 deliveries (ms)"),
    ("rest", "get_hot.latency_p50_ms", "hot GET p50 (ms)"),
    ("rest", "get_hot.latency_p99_ms", "hot GET p99 (ms)"),
    ("rest", "get_hot.server_cpu_ms_per_request", "hot GET CPU / request (ms)"),
    ("rest", "patch_durable.latency_p50_ms", "durable PATCH p50 (ms)"),
    ("rest", "patch_durable.latency_p99_ms", "durable PATCH p99 (ms)"),
    ("rest", "patch_durable.server_cpu_ms_per_request", "durable PATCH CPU / request (ms)"),
    ("rest", "history_page.server_cpu_ms_per_request", "history page CPU / request (ms)"),
]
# Every figure `make bench`'s main suite has a before for (the issue: none may get worse).
ALL_FIGURES = [
    *FIGURES,
    ("connections", "server_cpu_ms_per_connect", "connections: CPU / connect (ms)"),
    ("connections", "rss_per_connection_bytes", "connections: RSS / connection (KiB)"),
    ("connections", "connects_per_s", "connections: connects/s (higher is better)"),
    ("cold-sync", "server_cpu_ms_per_join", "cold sync: CPU / join (ms)"),
    ("cold-sync", "join_p50_ms", "cold sync: join p50 (ms)"),
    ("cold-sync-log", "server_cpu_ms_per_join", "cold sync from the log: CPU / join (ms)"),
    ("cold-sync-log", "restart_s", "cold sync from the log: restart (s)"),
    ("replicas-1", "server_cpu_ms_per_1000_deliveries", "1 replica: CPU / 1,000 deliveries (ms)"),
    ("replicas-1", "latency_p99_ms", "1 replica: p99 (ms)"),
    ("replicas-2", "server_cpu_ms_per_1000_deliveries", "2 replicas: CPU / 1,000 deliveries (ms)"),
    ("replicas-2", "latency_p99_ms", "2 replicas: p99 (ms)"),
]
HIGHER_IS_BETTER = {"connects_per_s"}
SCALE = {"rss_per_connection_bytes": 1 / 1024}


@dataclass(frozen=True)
class AbSet:
    folder: str
    title: str
    figures: list[tuple[str, str, str]]
    verdict: bool  # a column: last label ÷ first, and whether it is worse beyond the spread

    @property
    def path(self) -> Path:
        return RESULTS / self.folder


SETS = [
    AbSet("ab", "the redesign and the hostile-client work", FIGURES, verdict=False),
    AbSet("ab-issue15", "the performance issue (15)", ALL_FIGURES, verdict=True),
]


def load_runs(folder: Path) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("*-[0-9]*.json")):
        result = json.loads(path.read_text())
        label = re.sub(r"-\d+$", "", Path(result["name"]).name)
        runs.setdefault(label, []).append(result)
    return runs


def figure(result: dict[str, Any], workload: str, key: str) -> float | None:
    entry = result["workloads"].get(workload)
    if entry is None:
        return None
    for run in entry["servers"]["crdt-state"]["runs"]:
        value = run.get("figures", {}).get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value) * SCALE.get(key, 1.0)
    return None


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{statistics.median(values):.3g} [{min(values):.3g}–{max(values):.3g}]"


def _verdict(key: str, before: list[float], after: list[float]) -> str:
    """after ÷ before of the medians; worse only when the after median lies beyond every
    before round in the bad direction (inside the spread is the machine, not the change)."""
    if not before or not after:
        return "–"
    now = statistics.median(after)
    ratio = now / statistics.median(before)
    if key.split(".")[-1] in HIGHER_IS_BETTER:
        worse, better = now < min(before), now > max(before)
    else:
        worse, better = now > max(before), now < min(before)
    if abs(ratio - 1) < 0.01:  # within 1 %: the same (and a figure counted in ticks repeats)
        worse = better = False
    word = "**worse**" if worse else "better" if better else "same (within the spread)"
    return f"{ratio:.2f}× {word}"


def set_section(ab: AbSet) -> list[str]:
    if not ab.path.is_dir():
        return []
    runs = load_runs(ab.path)
    if not runs:
        return []
    order_file = ab.path / "order.json"
    order = json.loads(order_file.read_text()) if order_file.exists() else []
    labels = [label for label in order if label in runs]
    labels += [label for label in runs if label not in labels]
    commits = {
        label: runs[label][0]["servers"]["crdt-state"]["versions"]["commit"][:7] for label in labels
    }
    lines = [f"### Before / after {ab.title}", ""]
    notes = ab.path / "NOTES.md"  # what each label is, in words (kept beside the results)
    if notes.exists():
        lines += [notes.read_text().strip(), ""]
    columns = [f"{label} (`{commits[label]}`)" for label in labels]
    if ab.verdict:
        columns.append(f"{labels[-1]} ÷ {labels[0]}")
    lines += ["| figure | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for workload, key, title in ab.figures:
        values = {
            label: [v for r in runs[label] if (v := figure(r, workload, key)) is not None]
            for label in labels
        }
        cells = [_cell(values[label]) for label in labels]
        if ab.verdict:
            cells.append(_verdict(key, values[labels[0]], values[labels[-1]]))
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    rounds = {label: len(results) for label, results in runs.items()}
    lines += ["", "Rounds: " + ", ".join(f"{k} {v}" for k, v in rounds.items()) + ".", ""]
    return lines


def before_after_section() -> list[str]:
    sections = [lines for ab in SETS if (lines := set_section(ab))]
    if not sections:
        return []
    lines = [
        "## Before / after",
        "",
        "The same workloads on several commits, interleaved round by round on this machine in "
        "one sitting (`bench/results/ab*/`, written by `bench/before_after.py`). Median over "
        "the rounds, range in brackets.",
        "",
    ]
    for section in sections:
        lines += section
    return lines


def run_set(
    folder: str, rounds: int, sources: dict[str, tuple[Path, dict[str, str]]], only: str
) -> None:
    """Rounds of `bench.run ours --only <only> --repeats 1`, each label in turn, its server
    from its source checkout; results into bench/results/<folder>/<label>-<round>.json."""
    (RESULTS / folder).mkdir(parents=True, exist_ok=True)
    (RESULTS / folder / "order.json").write_text(json.dumps(list(sources)) + "\n")
    turn = list(sources.items())
    for n in range(1, rounds + 1):
        for label, (source, extra) in turn if n % 2 else reversed(turn):
            name = f"{folder}/{label}-{n}"
            argv = [sys.executable, "-m", "bench.run", "ours", "--servers", "crdt-state"]
            argv += ["--only", only, "--repeats", "1"]
            argv += ["--name", name, "--command", "python -m bench.before_after run " + folder]
            env = {**os.environ, **extra, "BENCH_OURS_SOURCE": str(source.resolve())}
            print(f"[before_after] round {n}: {label} from {source}", flush=True)
            subprocess.run(argv, cwd=ROOT, env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the rounds of a set")
    run.add_argument("folder", help="the set's folder under bench/results/, e.g. ab-issue15")
    run.add_argument("sources", nargs="+", help="label=checkout, oldest first")
    run.add_argument("--rounds", type=int, default=3)
    run.add_argument(
        "--only",
        default="fanout,hot-room,connections,cold-sync,cold-sync-log,rest,replicas-1,replicas-2",
    )
    args = parser.parse_args()
    if args.command == "run":
        sources = {}
        for spec in args.sources:
            label, _, rest = spec.partition("=")
            path, *pairs = rest.split(",")
            extra = dict(pair.split("=", 1) for pair in pairs)
            sources[label] = (Path(path), extra)
        run_set(args.folder, args.rounds, sources, args.only)
    print("\n".join(before_after_section()))


if __name__ == "__main__":
    main()
