"""Two replicas against two Hocuspocus instances on Redis (`make bench-compare`).

Each side runs the fan-out and the cold-sync load on one process and on two, in the same
repeat and with the same clients: crdt-state as replicas on PostgreSQL + Redis (`replicas-N`,
`cold-sync-replicas-N` on `crdt-state`), Hocuspocus with `@hocuspocus/extension-redis`
(`hocuspocus-redis`). Redis is the machine's one redis-server for both, its CPU read from
/proc the same way for both and added to the server's.

Every ratio is taken within a repeat (two processes ÷ one of the same side; crdt-state × 2 ÷
Hocuspocus × 2) and then summarized over the repeats: median, min, max.
"""

from __future__ import annotations

import statistics
from typing import Any

OURS = "crdt-state"
THEIRS = "hocuspocus-redis"
SIDES = (THEIRS, OURS)
TWO_REPLICA_WORKLOADS = (
    "replicas-1",
    "replicas-2",
    "cold-sync-replicas-1",
    "cold-sync-replicas-2",
)
# The load shape: (its one-process workload, its two-process workload).
SHAPES = {
    "fan-out": ("replicas-1", "replicas-2"),
    "cold sync": ("cold-sync-replicas-1", "cold-sync-replicas-2"),
}
# Per shape: (figure, label, whether ratios of it mean anything).
FIGURES: dict[str, list[tuple[str, str, bool]]] = {
    "fan-out": [
        (
            "server_redis_cpu_ms_per_1000_deliveries",
            "server + Redis CPU ms / 1,000 deliveries",
            True,
        ),
        ("server_cpu_ms_per_1000_deliveries", "… the server process(es)", True),
        ("redis_cpu_ms_per_1000_deliveries", "… Redis", True),
        ("latency_p50_ms", "latency p50 ms", True),
        ("latency_p99_ms", "latency p99 ms", True),
        ("lost_deliveries", "lost deliveries", False),
        (
            "postgres_cpu_ms_per_1000_deliveries",
            "PostgreSQL CPU ms / 1,000 deliveries (not in the sum)",
            True,
        ),
    ],
    "cold sync": [
        ("server_redis_cpu_ms_per_join", "server + Redis CPU ms per cold join", True),
        ("server_cpu_ms_per_join", "… the server process(es)", True),
        ("redis_cpu_ms_per_join", "… Redis", True),
        ("joiners_full_at_sync", "joiners with the whole panel at sync", False),
        ("joiners_full", "joiners with the whole panel in the end", False),
        ("join_p95_ms", "join (sync) p95 ms", True),
        ("all_full_ms", "until every joiner had the whole panel, ms", True),
        ("postgres_cpu_ms_per_join", "PostgreSQL CPU ms per cold join (not in the sum)", True),
    ],
}


def spread(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def per_repeat(workloads: dict[str, Any], workload: str, side: str, key: str) -> dict[int, float]:
    """The figure of each good run of `side` on `workload`, by repeat."""
    runs = workloads.get(workload, {}).get("servers", {}).get(side, {}).get("runs", [])
    out: dict[int, float] = {}
    for run in runs:
        value = run.get("figures", {}).get(key) if run.get("ok") else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[int(run["repeat"])] = float(value)
    return out


def paired(a: dict[int, float], b: dict[int, float]) -> list[float]:
    """a ÷ b for each repeat both have, both non-zero: CPU is read in clock ticks (10 ms), and
    a share under one tick reads 0, which makes no ratio."""
    return [a[r] / b[r] for r in sorted(a) if a[r] and b.get(r)]


def two_replicas(workloads: dict[str, Any]) -> dict[str, Any] | None:
    """The comparison, from a result's workloads; None when it was not run."""
    shapes: dict[str, Any] = {}
    for shape, (one, two) in SHAPES.items():
        if one not in workloads or two not in workloads:
            continue
        rows = []
        for key, label, ratios in FIGURES[shape]:
            row: dict[str, Any] = {"figure": key, "label": label, "sides": {}}
            twos: dict[str, dict[int, float]] = {}
            for side in SIDES:
                a = per_repeat(workloads, one, side, key)
                b = per_repeat(workloads, two, side, key)
                twos[side] = b
                row["sides"][side] = {
                    "1": spread(list(a.values())),
                    "2": spread(list(b.values())),
                    "2/1": spread(paired(b, a)) if ratios else None,
                }
            row["ours_2_over_theirs_2"] = (
                spread(paired(twos[OURS], twos[THEIRS])) if ratios else None
            )
            if any(v["1"] or v["2"] for v in row["sides"].values()):
                rows.append(row)
        repeats = {
            side: sorted(
                set(per_repeat(workloads, one, side, FIGURES[shape][0][0]))
                & set(per_repeat(workloads, two, side, FIGURES[shape][0][0]))
            )
            for side in SIDES
        }
        shapes[shape] = {"workloads": [one, two], "paired_repeats": repeats, "rows": rows}
    if not shapes:
        return None
    return {"ours": OURS, "theirs": THEIRS, "shapes": shapes}


def _short(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "–"
    text = f"{entry['median']:.3g}"
    if entry["n"] > 1 and entry["min"] != entry["max"]:
        text += f" [{entry['min']:.3g}–{entry['max']:.3g}]"
    return text


def print_two_replicas(comparison: dict[str, Any]) -> None:
    print("two replicas: median [min–max] over repeats; ratios paired within each repeat")
    for shape, data in comparison["shapes"].items():
        for row in data["rows"]:
            parts = []
            for side in SIDES:
                v = row["sides"][side]
                text = f"{side} ×1 {_short(v['1'])}, ×2 {_short(v['2'])}"
                if v["2/1"]:
                    text += f", 2÷1 {_short(v['2/1'])}"
                parts.append(text)
            if row["ours_2_over_theirs_2"]:
                parts.append(f"ours×2 ÷ theirs×2 {_short(row['ours_2_over_theirs_2'])}")
            print(f"{shape:9} {row['figure']}: " + "; ".join(parts))
