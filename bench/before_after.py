"""The "before / after" section of docs/BENCHMARKS.md: the same workloads run on several
commits, interleaved on one machine in one sitting, recorded in bench/results/ab/.

A result file there is a `python -m bench.run ours --only ... --name <label>-<n>` run of one
commit (label: before, after...; n: the round). Rounds alternate the commits, so a slow spell
of the shared machine lands on each of them alike. Medians over the rounds, with the range.
"""

from __future__ import annotations

import json
import re
import statistics
from typing import Any

from .machine import ROOT

AB_DIR = ROOT / "bench" / "results" / "ab"
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
NOTES = AB_DIR / "NOTES.md"  # what each label is, in words (kept beside the results)
ORDER = AB_DIR / "order.json"  # the labels' order in the table (oldest first)


def load_runs() -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(AB_DIR.glob("*-[0-9]*.json")):
        result = json.loads(path.read_text())
        label = re.sub(r"-\d+$", "", result["name"])
        runs.setdefault(label, []).append(result)
    return runs


def figure(result: dict[str, Any], workload: str, key: str) -> float | None:
    entry = result["workloads"].get(workload)
    if entry is None:
        return None
    for run in entry["servers"]["crdt-state"]["runs"]:
        value = run.get("figures", {}).get(key)
        if isinstance(value, int | float):
            return float(value)
    return None


def before_after_section() -> list[str]:
    if not AB_DIR.is_dir():
        return []
    runs = load_runs()
    if not runs:
        return []
    order = json.loads(ORDER.read_text()) if ORDER.exists() else []
    labels = [label for label in order if label in runs]
    labels += [label for label in runs if label not in labels]
    commits = {
        label: runs[label][0]["servers"]["crdt-state"]["versions"]["commit"][:7] for label in labels
    }
    lines = [
        "## Before / after",
        "",
        "The same workloads on several commits, interleaved round by round on this machine in "
        "one sitting (`bench/results/ab/`, written by `bench/before_after.py`). Median over "
        "the rounds, range in brackets.",
        "",
    ]
    if NOTES.exists():
        lines += [NOTES.read_text().strip(), ""]
    header = "| figure | " + " | ".join(f"{label} (`{commits[label]}`)" for label in labels)
    lines += [header + " |", "|---|" + "---|" * len(labels)]
    for workload, key, title in FIGURES:
        cells = []
        for label in labels:
            values = [v for r in runs[label] if (v := figure(r, workload, key)) is not None]
            if not values:
                cells.append("–")
                continue
            cells.append(f"{statistics.median(values):.3g} [{min(values):.3g}–{max(values):.3g}]")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    rounds = {label: len(results) for label, results in runs.items()}
    lines += ["", "Rounds: " + ", ".join(f"{k} {v}" for k, v in rounds.items()) + ".", ""]
    return lines


def main() -> None:
    print("\n".join(before_after_section()))


if __name__ == "__main__":
    main()
