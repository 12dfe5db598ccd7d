"""Git snapshots against real bare repositories, checked with the real `git` CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.git import GitSnapshotRepository
from crdt_state.errors import BadRequest, Unavailable
from crdt_state.snapshot_repository import (
    CommitNotFound,
    InvalidName,
    MalformedSha,
    RepositoryBusy,
    RepositoryCorrupt,
    canonical_json,
    decode_name,
    encode_name,
    format_commit_message,
    panel_file_name,
    panel_versions,
    parse_trailers,
    snapshot_message,
)

ROOT = Path(__file__).resolve().parent.parent


def git(git_dir: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", f"--git-dir={git_dir}", *args], capture_output=True, check=True, text=True
    )
    return done.stdout


def git_bytes(git_dir: Path, *args: str) -> bytes:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], capture_output=True).stdout


def init_bare(path: Path) -> None:
    subprocess.run(["git", "init", "--quiet", "--bare", str(path)], check=True)


def views(count: int, tag: str = "v") -> dict[str, Any]:
    return {f"p{i}": {"$state": {"value": i, "tag": tag}, "$computed": {}} for i in range(count)}


def encoded(panels: dict[str, Any]) -> dict[str, bytes]:
    return {panel_id: canonical_json(view) for panel_id, view in panels.items()}


async def snap(
    repo: GitSnapshotRepository, workspace: str, panels: dict[str, Any], versions: int = 1
) -> Any:
    message, trailers = snapshot_message(
        "manual", "test", dict.fromkeys(panels, versions), list(panels)
    )
    return await repo.commit(workspace, encoded(panels), message, trailers, "Tester <t@example>")


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[GitSnapshotRepository]:
    repository = GitSnapshotRepository(tmp_path / "repos")
    yield repository
    await repository.close()


# --- pure helpers --------------------------------------------------------------------------


def test_canonical_json_is_sorted_indented_utf8() -> None:
    first = canonical_json({"b": 1, "a": {"ü": "日本", "c": [1, 2]}})
    second = canonical_json({"a": {"c": [1, 2], "ü": "日本"}, "b": 1})
    assert first == second
    expected = '{\n  "a": {\n    "c": [\n      1,\n      2\n    ],\n    "ü": "日本"\n  },'
    assert first == (expected + '\n  "b": 1\n}\n').encode()


@pytest.mark.parametrize(
    "panel_id", ["filters", "a/b", ".", "..", ".git", "über chart", "%41", "x@y", "a\nb", "-_.x"]
)
def test_name_encoding_is_safe_and_reversible(panel_id: str) -> None:
    name = encode_name(panel_id)
    assert decode_name(name) == panel_id
    assert not name.startswith(".") and "/" not in name and "\n" not in name
    assert set(name) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-%")


@pytest.mark.parametrize("name", ["%2f", "%41", ".x", "%FF", "", "a%2"])
def test_decode_name_refuses_what_encode_never_writes(name: str) -> None:
    with pytest.raises(ValueError):
        decode_name(name)


def test_message_trailers_round_trip_to_panel_versions() -> None:
    versions = {"filters": 42, "a/b@c": 7, "über": 1}
    message, trailers = snapshot_message("manual", "before release", versions, ["filters"])
    text = format_commit_message(message, trailers)
    assert text.startswith("snapshot (manual): 1 panel changed\n\nbefore release\n")
    assert ("Panel-Version", "filters@42") in parse_trailers(text)
    assert panel_versions(text) == versions
    with pytest.raises(BadRequest):
        format_commit_message("x", [("Bad Key", "v")])
    with pytest.raises(BadRequest):
        format_commit_message("x", {"Key": "two\nlines"})


# --- writing -------------------------------------------------------------------------------


async def test_snapshot_tree_holds_canonical_json_per_panel(
    repo: GitSnapshotRepository, tmp_path: Path
) -> None:
    panels = {"filters": {"$state": {"q": "ünïcode"}}, "a/b": [1, 2], "..": {"x": None}}
    result = await snap(repo, "demo", panels, versions=5)
    assert result.created and result.changed_panels == sorted(panels)
    git_dir = tmp_path / "repos" / "demo.git"
    assert git(git_dir, "rev-parse", "refs/heads/main").strip() == result.sha
    files = git(git_dir, "ls-tree", "-r", "--name-only", result.sha).split()
    assert sorted(files) == sorted(f"panels/{panel_file_name(p)}" for p in panels)
    for panel_id, view in panels.items():
        shown = git_bytes(git_dir, "show", f"{result.sha}:panels/{panel_file_name(panel_id)}")
        assert shown == canonical_json(view)
    trailers = git(git_dir, "log", "-1", "--format=%(trailers:key=Panel-Version,valueonly)")
    assert sorted(trailers.split()) == sorted(f"{encode_name(p)}@5" for p in panels)
    git(git_dir, "fsck", "--strict")  # the objects are valid Git, not just readable by us
    assert git(git_dir, "config", "--get", "gc.auto").strip() == "0"
    snapshot = await repo.read("demo")
    assert snapshot.sha == result.sha and snapshot.panels == encoded(panels)
    assert snapshot.message is not None and panel_versions(snapshot.message) == dict.fromkeys(
        panels, 5
    )


async def test_a_root_that_cannot_be_made_is_unavailable(tmp_path: Path) -> None:
    """A repository folder that cannot be created (a file in the way, no permission) is a
    503 for the caller to retry, never a 500."""
    (tmp_path / "blocked").write_text("a file, not a folder")
    repository = GitSnapshotRepository(tmp_path / "blocked" / "repos")
    try:
        with pytest.raises(Unavailable):
            await snap(repository, "demo", {"p": {"$state": {}}}, versions=1)
    finally:
        await repository.close()


async def test_unchanged_state_makes_no_commit(repo: GitSnapshotRepository) -> None:
    first = await snap(repo, "demo", views(3))
    again = await snap(repo, "demo", views(3), versions=9)
    assert (again.sha, again.created, again.changed_panels) == (first.sha, False, [])
    assert len(await repo.history("demo")) == 1


async def test_one_changed_panel_writes_one_blob(
    repo: GitSnapshotRepository, tmp_path: Path
) -> None:
    git_dir = tmp_path / "repos" / "demo.git"
    first = await snap(repo, "demo", views(100))
    before = set((git_dir / "objects").rglob("*"))
    changed = views(100)
    changed["p7"]["$state"]["value"] = "new"
    second = await snap(repo, "demo", changed)
    assert second.created and second.changed_panels == ["p7"]
    new_files = [p for p in set((git_dir / "objects").rglob("*")) - before if p.is_file()]
    assert len(new_files) == 4  # the blob, panels/ tree, root tree, commit
    stat = git(git_dir, "diff", "--stat", first.sha, second.sha)
    assert "panels/p7.json" in stat and "1 file changed" in stat


async def test_removed_panel_leaves_the_tree(repo: GitSnapshotRepository, tmp_path: Path) -> None:
    first = await snap(repo, "demo", views(3))
    second = await snap(repo, "demo", {k: v for k, v in views(3).items() if k != "p1"})
    assert second.changed_panels == ["p1"]
    git_dir = tmp_path / "repos" / "demo.git"
    diff = git(git_dir, "diff", "--name-status", first.sha, second.sha).split()
    assert diff == ["D", "panels/p1.json"]
    assert sorted((await repo.read("demo")).panels) == ["p0", "p2"]
    emptied = await snap(repo, "demo", {})
    assert emptied.changed_panels == ["p0", "p2"] and (await repo.read("demo")).panels == {}


async def test_history_is_newest_first_with_versions(repo: GitSnapshotRepository) -> None:
    shas = [(await snap(repo, "demo", views(2, tag=str(n)), versions=n)).sha for n in range(3)]
    history = await repo.history("demo", limit=2)
    assert [c.sha for c in history] == shas[::-1][:2]
    assert history[0].panel_versions == {"p0": 2, "p1": 2}
    assert history[0].parents == [shas[1]] and history[0].author == "Tester <t@example>"
    assert history[0].subject == "snapshot (manual): 2 panels changed"


# --- concurrency ---------------------------------------------------------------------------


async def test_reading_an_old_commit_while_writers_commit(repo: GitSnapshotRepository) -> None:
    old_panels = views(30, tag="old")
    old = await snap(repo, "demo", old_panels)
    writing = True
    commits_seen_by_readers: list[int] = []

    async def writer() -> None:
        nonlocal writing
        for n in range(40):
            await snap(repo, "demo", views(30, tag=f"new-{n}"))
        writing = False

    async def reader(sha: str) -> None:
        while writing:
            snapshot = await repo.read("demo", sha)
            assert snapshot.sha == old.sha and snapshot.panels == encoded(old_panels)
            commits_seen_by_readers.append(len(await repo.history("demo", limit=100)))

    await asyncio.gather(writer(), reader(old.sha), reader(old.sha[:7]))
    # The reads really overlapped the writes: they happened at several different heads.
    assert len(set(commits_seen_by_readers)) > 2
    assert len(await repo.history("demo", limit=100)) == 41


WRITER_PROCESS = """
import asyncio, json, sys
from pathlib import Path
from adapters.git import GitSnapshotRepository
from crdt_state.snapshot_repository import canonical_json

async def main():
    repo = GitSnapshotRepository(Path(sys.argv[1]))
    for n in range(int(sys.argv[2])):
        panels = {"p": canonical_json({"writer": "process", "n": n})}
        result = await repo.commit("demo", panels, "process", [], "process")
        print(result.sha, flush=True)
    await repo.close()

asyncio.run(main())
"""


async def test_concurrent_writers_lose_no_commit(tmp_path: Path) -> None:
    """Two adapters in two threads (own event loops) and one in another process, all on one
    repository: the process is held back only by the compare-and-swap on the branch."""
    root, rounds = tmp_path / "repos", 25
    shas: dict[str, list[str]] = {}

    def thread_writer(name: str) -> None:
        async def run() -> None:
            repo = GitSnapshotRepository(root)
            for n in range(rounds):
                panels = {"p": canonical_json({"writer": name, "n": n})}
                shas[name].append((await repo.commit("demo", panels, name, [], name)).sha)
            await repo.close()

        shas[name] = []
        asyncio.run(run())

    await GitSnapshotRepository(root).commit("demo", {}, "start", [], "setup")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER_PROCESS, str(root), str(rounds),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    threads = [threading.Thread(target=thread_writer, args=(n,)) for n in ("t1", "t2")]
    for thread in threads:
        thread.start()
    output, _ = await process.communicate()
    await asyncio.to_thread(lambda: [t.join() for t in threads])
    assert process.returncode == 0
    shas["process"] = output.decode().split()
    written = [sha for series in shas.values() for sha in series]
    assert len(written) == len(set(written)) == 3 * rounds
    reachable = git(root / "demo.git", "rev-list", "--first-parent", "main").split()
    assert set(written) <= set(reachable) and len(reachable) == 3 * rounds + 1


# --- push ----------------------------------------------------------------------------------


async def test_push_after_each_snapshot(tmp_path: Path) -> None:
    remote = tmp_path / "remotes" / "demo.git"
    init_bare(remote)
    template = str(tmp_path / "remotes" / "{workspace}.git")
    repo = GitSnapshotRepository(tmp_path / "repos", push_url_template=template)
    try:
        for n in range(3):
            head = (await snap(repo, "demo", views(5, tag=str(n)))).sha

        async def pushed() -> bool:
            status = await repo.push_status("demo")
            return status["state"] == "ok" and status["pushed_sha"] == head

        await until(pushed)
        assert git(remote, "rev-parse", "refs/heads/main").strip() == head
    finally:
        await repo.close()


async def test_failing_push_is_retried_and_never_blocks_the_snapshot(tmp_path: Path) -> None:
    remote = tmp_path / "remotes" / "demo.git"
    template = str(tmp_path / "remotes" / "{workspace}.git")
    repo = GitSnapshotRepository(
        tmp_path / "repos",
        push_url_template=template,
        push_retries=100,
        push_backoff=0.05,
        push_backoff_max=0.2,
    )
    try:
        started = time.monotonic()
        result = await snap(repo, "demo", views(5))
        assert result.created and time.monotonic() - started < 1.0

        async def failing() -> bool:
            status = await repo.push_status("demo")
            return status["attempts"] >= 2 and status["state"] in ("retrying", "pushing")

        await until(failing)
        assert (await repo.push_status("demo"))["last_error"]
        init_bare(remote)

        async def recovered() -> bool:
            return (await repo.push_status("demo"))["state"] == "ok"

        await until(recovered)
        assert git(remote, "rev-parse", "refs/heads/main").strip() == result.sha
        assert (await repo.push_status("demo"))["last_error"] is None
    finally:
        await repo.close()


# --- bad input and damage ------------------------------------------------------------------


async def test_bad_input_gets_the_right_error(repo: GitSnapshotRepository, tmp_path: Path) -> None:
    mine = await snap(repo, "demo", views(2))
    theirs = await snap(repo, "other", views(2, tag="other"))
    with pytest.raises(CommitNotFound) as unknown:
        await repo.read("demo", "0" * 40)
    assert unknown.value.status == 404 and unknown.value.code == "commit_not_found"
    with pytest.raises(CommitNotFound):
        await repo.read("demo", theirs.sha)  # another workspace's commit
    with pytest.raises(CommitNotFound):
        await repo.read("nowhere", mine.sha)
    tree = git(tmp_path / "repos" / "demo.git", "rev-parse", f"{mine.sha}^{{tree}}").strip()
    with pytest.raises(CommitNotFound):
        await repo.read("demo", tree)  # an object, but not a commit
    for sha in ("xyz", "abc", "g" * 40, "a" * 41, ""):
        with pytest.raises(MalformedSha) as malformed:
            await repo.read("demo", sha)
        assert malformed.value.status == 400
    for name in ("", ".", "..", "../demo", "a/b", "/etc", "a\\b"):
        with pytest.raises(InvalidName):
            await repo.read(name)
        with pytest.raises(BadRequest):
            await snap(repo, name, views(1))
    assert (await repo.read("demo", mine.sha[:6].upper())).sha == mine.sha
    assert (await repo.read("never-written")).sha is None


async def test_corrupted_repository_is_reported_not_crashing(
    repo: GitSnapshotRepository, tmp_path: Path
) -> None:
    git_dir = tmp_path / "repos" / "demo.git"
    result = await snap(repo, "demo", views(3))
    assert await repo.check("demo") is None and await repo.check("never-written") is None
    blob = git(git_dir, "rev-parse", f"{result.sha}:panels/p1.json").strip()
    (git_dir / "objects" / blob[:2] / blob[2:]).unlink()
    assert "missing" in (await repo.check("demo") or "")
    with pytest.raises(RepositoryCorrupt):
        await repo.read("demo")

    ref = git_dir / "refs" / "heads" / "main"
    ref.write_text("garbage\n")
    assert "garbage" in (await repo.check("demo") or "")
    with pytest.raises(RepositoryCorrupt):
        await repo.read("demo")
    with pytest.raises(RepositoryCorrupt):
        await snap(repo, "demo", views(3, tag="after"))

    ref.write_text(result.sha + "\n")
    (git_dir / "HEAD").write_text("nonsense\n")
    assert "HEAD" in (await repo.check("demo") or "")
    with pytest.raises(RepositoryCorrupt):
        await repo.history("demo")


async def test_a_lock_left_by_a_dead_writer_is_reported(tmp_path: Path) -> None:
    repo = GitSnapshotRepository(tmp_path / "repos", cas_attempts=3)
    try:
        await snap(repo, "demo", views(2))
        lock = tmp_path / "repos" / "demo.git" / "refs" / "heads" / "main.lock"
        lock.write_text("")
        with pytest.raises(RepositoryBusy) as busy:
            await snap(repo, "demo", views(2, tag="next"))
        assert busy.value.status == 503
        os.utime(lock, (time.time() - 3600, time.time() - 3600))
        assert "stale lock" in (await repo.check("demo") or "")
    finally:
        await repo.close()


async def test_gc_packs_and_keeps_every_snapshot(
    repo: GitSnapshotRepository, tmp_path: Path
) -> None:
    shas = [(await snap(repo, "demo", views(3, tag=str(n)))).sha for n in range(5)]
    await repo.gc("demo")
    await repo.gc("never-written")  # nothing to do, no error
    counts = git(tmp_path / "repos" / "demo.git", "count-objects", "-v")
    assert "count: 0" in counts.splitlines()  # every loose object went into a pack
    assert (await repo.read("demo", shas[0])).panels == encoded(views(3, tag="0"))
    after = await snap(repo, "demo", views(3, tag="after"))
    assert after.created and (await repo.history("demo"))[1].sha == shas[-1]
    assert json.loads((await repo.read("demo")).panels["p0"])["$state"]["tag"] == "after"
