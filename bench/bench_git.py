"""Git snapshot timings: a workspace of 1,000 panels (~1 KB of JSON each).

    .venv/bin/python -m bench.bench_git                # the adapter, against the targets
    .venv/bin/python -m bench.bench_git --compare      # also raw pygit2 / git CLI (index)

Prints one JSON document. Exits 1 when a target is missed. `--compare` measures pygit2 only
when it is importable (it is not a dependency: put it on PYTHONPATH for that run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.git import GitSnapshotRepository
from crdt_state.snapshot_repository import canonical_json, panel_file_name, snapshot_message

TARGETS = {"create_s": 2.0, "load_s": 1.0, "single_change_p50_ms": 15.0}
SMALL_WORKSPACE = 20


def panel_view(index: int, revision: int = 0) -> dict[str, Any]:
    """A dashboard panel as the server keeps it: filters, columns, sort, a computed summary."""
    return {
        "$state": {
            "title": f"Orders by region #{index}",
            "filters": {
                "region": {"op": "in", "value": ["north", "south", "east", "west"]},
                "status": {"op": "eq", "value": "shipped"},
                "date": {"op": "between", "value": ["2026-01-01", "2026-03-31"]},
                "revision": revision,
            },
            "columns": [
                {"key": key, "width": 120 + i * 8, "visible": i % 3 != 0}
                for i, key in enumerate(["id", "customer", "region", "total", "date", "status"])
            ],
            "sort": [{"key": "total", "dir": "desc"}],
            "page": {"size": 50, "index": index % 7},
        },
        "$computed": {"rows": 1200 + index, "sum": 98765.43 + index, "updated": "12:00:00Z"},
    }


def workspace(count: int, revision: int = 0) -> dict[str, bytes]:
    return {f"panel-{i}": canonical_json(panel_view(i, revision)) for i in range(count)}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def bench_adapter(root: Path, panels: int, changes: int) -> dict[str, Any]:
    encode_s, state = timed(lambda: workspace(panels))
    message, trailers = snapshot_message("bench", None, dict.fromkeys(state, 1), list(state))
    repo = GitSnapshotRepository(root)
    started = time.perf_counter()
    first = await repo.commit("bench", state, message, trailers, "bench")
    create_s = time.perf_counter() - started
    reader = GitSnapshotRepository(root)  # a fresh instance: nothing cached
    started = time.perf_counter()
    loaded = await reader.read("bench")
    load_s = time.perf_counter() - started
    assert loaded.panels == state and loaded.sha == first.sha
    samples = await single_changes(repo, "bench", state, changes)
    small = workspace(SMALL_WORKSPACE)
    await repo.commit("small", small, "create", [], "bench")
    small_samples = await single_changes(repo, "small", small, changes)
    await repo.gc("bench")
    started = time.perf_counter()
    await reader.read("bench", first.sha)
    load_packed_s = time.perf_counter() - started
    await repo.close()
    await reader.close()
    return {
        "panels": panels,
        "bytes": sum(len(v) for v in state.values()),
        "canonical_json_s": round(encode_s, 4),
        "create_s": round(create_s, 4),
        "load_s": round(load_s, 4),
        "load_after_gc_s": round(load_packed_s, 4),
        "single_change": {"commits": changes, **percentiles(samples)},
        f"single_change_{SMALL_WORKSPACE}_panels": {
            "commits": changes,
            **percentiles(small_samples),
        },
    }


async def single_changes(
    repo: GitSnapshotRepository, name: str, state: dict[str, bytes], changes: int
) -> list[float]:
    """Latency of commits that each change one panel (the full set is handed in each time,
    as the port requires; the message carries every panel's version)."""
    versions = dict.fromkeys(state, 1)
    samples = []
    for n in range(changes):
        index = n % len(state)
        panel_id = f"panel-{index}"
        state[panel_id] = canonical_json(panel_view(index, revision=n + 1))
        versions[panel_id] += 1
        message, trailers = snapshot_message("bench", None, versions, [panel_id])
        started = time.perf_counter()
        result = await repo.commit(name, state, message, trailers, "bench")
        samples.append(time.perf_counter() - started)
        assert result.changed_panels == [panel_id]
    return samples


def compare_git_cli(root: Path, state: dict[str, bytes], changes: int) -> dict[str, Any]:
    """The index/work-tree path: write files, `git add`, `git commit` (what the design's
    GitPython route does under the hood, minus Python overhead)."""
    work = root / "cli-work"
    (work / "panels").mkdir(parents=True)

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(work), *args], check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("config", "user.name", "bench")
    git("config", "user.email", "bench@example")

    def write_all() -> None:
        for panel_id, data in state.items():
            (work / "panels" / panel_file_name(panel_id)).write_bytes(data)
        git("add", "-A")
        git("commit", "-q", "-m", "create")

    create_s, _ = timed(write_all)
    samples = []
    for n in range(changes):
        name = panel_file_name(f"panel-{n % len(state)}")
        started = time.perf_counter()
        (work / "panels" / name).write_bytes(canonical_json({"n": n}))
        git("add", f"panels/{name}")
        git("commit", "-q", "-m", "change")
        samples.append(time.perf_counter() - started)
    return {"create_s": round(create_s, 4), "single_change": percentiles(samples)}


def compare_dulwich(root: Path, state: dict[str, bytes], changes: int) -> dict[str, Any]:
    """The same raw steps as compare_pygit2, with dulwich: the library's own cost, without
    the adapter's (full panel set, trailers, locks)."""
    from dulwich.objects import Blob, Commit
    from dulwich.refs import Ref
    from dulwich.repo import Repo

    from adapters.git import _trees

    repo = Repo.init_bare(str(root / "dulwich.git"), mkdir=True)
    branch = Ref(b"refs/heads/main")

    def commit(entries: dict[bytes, Any], parent: Any) -> Any:
        trees = _trees(entries)
        new = Commit()
        new.tree, new.parents = trees[-1].id, [parent] if parent else []
        new.author = new.committer = b"bench <bench@example>"
        new.author_time = new.commit_time = int(time.time())
        new.author_timezone = new.commit_timezone = 0
        new.message = b"m"
        for obj in [*trees, new]:
            repo.object_store.add_object(obj)
        if parent is None:
            repo.refs.add_if_new(branch, new.id)
        else:
            repo.refs.set_if_equals(branch, parent, new.id, committer=b"b <>", message=b"m")
        return new.id

    def create() -> tuple[dict[bytes, Any], Any]:
        blobs = {panel_file_name(p).encode(): Blob.from_string(d) for p, d in state.items()}
        repo.object_store.add_objects([(blob, None) for blob in blobs.values()])
        entries = {name: blob.id for name, blob in blobs.items()}
        return entries, commit(entries, None)

    create_s, (entries, head) = timed(create)
    samples = []
    for n in range(changes):
        started = time.perf_counter()
        blob = Blob.from_string(canonical_json({"n": n}))
        repo.object_store.add_object(blob)
        entries[panel_file_name(f"panel-{n % len(state)}").encode()] = blob.id
        head = commit(entries, head)
        samples.append(time.perf_counter() - started)
    repo.close()
    return {"create_s": round(create_s, 4), "single_change": percentiles(samples)}


def compare_pygit2(root: Path, state: dict[str, bytes], changes: int) -> dict[str, Any]:
    try:
        import pygit2
    except ImportError:
        return {"skipped": "pygit2 is not importable"}
    repo = pygit2.init_repository(str(root / "pygit2.git"), bare=True)
    who = pygit2.Signature("bench", "bench@example")
    blob_mode = pygit2.enums.FileMode.BLOB
    tree_mode = pygit2.enums.FileMode.TREE

    def commit(panels_tree: Any, parents: list[Any]) -> Any:
        root_builder = repo.TreeBuilder()
        root_builder.insert("panels", panels_tree, tree_mode)
        return repo.create_commit("refs/heads/main", who, who, "m", root_builder.write(), parents)

    def create() -> tuple[Any, Any]:
        builder = repo.TreeBuilder()
        for panel_id, data in state.items():
            builder.insert(panel_file_name(panel_id), repo.create_blob(data), blob_mode)
        panels_tree = builder.write()
        return panels_tree, commit(panels_tree, [])

    create_s, (panels_tree, head) = timed(create)
    samples = []
    for n in range(changes):
        started = time.perf_counter()
        builder = repo.TreeBuilder(repo[panels_tree])
        blob = repo.create_blob(canonical_json({"n": n}))
        builder.insert(panel_file_name(f"panel-{n % len(state)}"), blob, blob_mode)
        panels_tree = builder.write()
        head = commit(panels_tree, [head])
        samples.append(time.perf_counter() - started)

    def load() -> int:
        tree = repo[repo[head].tree_id]["panels"]
        return sum(len(repo[entry.id].data) for entry in repo[tree.id])

    load_s, _ = timed(load)
    return {
        "version": pygit2.__version__,
        "create_s": round(create_s, 4),
        "load_s": round(load_s, 4),
        "single_change": percentiles(samples),
    }


def compare_pygit2_full_set(
    root: Path, state: dict[str, bytes], changes: int, fsync: bool
) -> dict[str, Any]:
    """pygit2 doing what the adapter does per commit: take the FULL panel set, find the
    changed panels (bytes compared with the last commit's), patch the previous tree with a
    TreeBuilder, a message with every panel's version, compare-and-swap of the branch.

    libgit2 fsyncs nothing by default (dulwich fsyncs ref updates); `fsync` turns on its
    process-wide ENABLE_FSYNC_GITDIR, which covers objects and refs."""
    try:
        import pygit2
    except ImportError:
        return {"skipped": "pygit2 is not importable"}
    from pygit2.enums import FileMode

    from adapters.git import _panel_files
    from crdt_state.snapshot_repository import format_commit_message

    pygit2.option(pygit2.enums.Option.ENABLE_FSYNC_GITDIR, fsync)
    path = str(root / f"pygit2-full-{fsync}.git")
    pygit2.init_repository(path, bare=True)
    who = pygit2.Signature("bench", "bench@example", 0, 0)
    last: dict[str, Any] = {}  # head, panels tree, entries, the bytes they came from

    def commit(panels: dict[str, bytes], message: str) -> None:
        repo = pygit2.Repository(path)
        files = {name.decode(): data for name, data in _panel_files(panels).items()}
        text = format_commit_message(message, [])
        ref = repo.references.get("refs/heads/main")
        sources = last.get("sources", {})
        builder = repo.TreeBuilder(repo[last["tree"]]) if ref else repo.TreeBuilder()
        for name, data in files.items():
            if sources.get(name) != data:
                builder.insert(name, repo.create_blob(data), FileMode.BLOB)
        for name in sources.keys() - files.keys():
            builder.remove(name)
        panels_tree = builder.write()
        top = repo.TreeBuilder()
        top.insert("panels", panels_tree, FileMode.TREE)
        parents = [ref.target] if ref else []
        new = repo.create_commit(None, who, who, text, top.write(), parents)
        if ref:
            ref.set_target(new)  # compare-and-swap: fails if the ref moved since it was read
        else:
            repo.references.create("refs/heads/main", new)
        last.update(tree=panels_tree, sources=files)
        repo.free()

    versions = dict.fromkeys(state, 1)
    message, trailers = snapshot_message("bench", None, versions, list(state))
    create_s, _ = timed(lambda: commit(dict(state), format_commit_message(message, trailers)))
    panels, samples = dict(state), []
    for n in range(changes):
        index = n % len(panels)
        panel_id = f"panel-{index}"
        panels[panel_id] = canonical_json(panel_view(index, revision=n + 1))
        versions[panel_id] += 1
        message, trailers = snapshot_message("bench", None, versions, [panel_id])
        started = time.perf_counter()
        commit(panels, format_commit_message(message, trailers))
        samples.append(time.perf_counter() - started)
    return {"create_s": round(create_s, 4), "single_change": percentiles(samples)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--panels", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--compare", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        report: dict[str, Any] = {
            "dulwich_adapter": asyncio.run(bench_adapter(root / "repos", args.panels, args.changes))
        }
        if args.compare:
            state = workspace(args.panels)
            report["git_cli_index"] = compare_git_cli(root, state, args.changes)
            report["dulwich_object_db"] = compare_dulwich(root, state, args.changes)
            report["pygit2_object_db"] = compare_pygit2(root, state, args.changes)
            for fsync in (False, True):
                report[f"pygit2_full_set_fsync_{str(fsync).lower()}"] = compare_pygit2_full_set(
                    root, state, args.changes, fsync
                )
    adapter = report["dulwich_adapter"]
    measured = {
        "create_s": adapter["create_s"],
        "load_s": adapter["load_s"],
        "single_change_p50_ms": adapter["single_change"]["p50_ms"],
    }
    report["targets"] = {
        key: {"target": TARGETS[key], "measured": value, "met": value < TARGETS[key]}
        for key, value in measured.items()
    }
    print(json.dumps(report, indent=2))
    return 0 if all(t["met"] for t in report["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
