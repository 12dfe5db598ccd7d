"""Backup and move (docs/OPERATIONS.md, "Backup and move"): `crdt-state export` and `import` as
real processes.

A workspace written through a real server (PUT, PATCH by a user and by an agent, a stale patch
merged, a revert, live Yjs updates, a panel deleted and re-created, one deleted for good, a
checkpoint every 5 versions) moves from SQLite to PostgreSQL and from PostgreSQL to SQLite, and
a real server on the target answers every read as the source's did: the state, every version
`?version=N` (errors included), history pages, the workspace snapshot, a Yjs client's sync. A
compacted workspace moves with its fold point. A damaged file is refused and leaves the target
as it was, an existing workspace is replaced only when asked, piped runs stay quiet and
machine-readable, a terminal gets progress, and an import drops the hot cache's entries.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis

from adapters.sqlite import SqliteUpdateLog
from crdt_state.compaction import Compactor, maintenance_of
from crdt_state.document import STATE, PanelDoc
from crdt_state.model import Change, ChangeType, JSONPatch, PanelKey, TriggeredBy
from crdt_state.patch_events import PatchRecorder
from crdt_state.replay import write_checkpoint
from crdt_state.retention import RetentionPolicy

from .conftest import token
from .redis_server import url as redis_url
from .server import ServerProcess
from .yjs_client import YjsClients

WS = "ws"
ADMIN = {"Authorization": f"Bearer {token('alice', {WS: 'admin'})}"}
PANELS = ("board", "gone", "live", "notes")  # "gone" is deleted
SERVER_ENV = {"CRDT_STATE_CHECKPOINT_EVERY": "5"}

STORE_SETTINGS = ("DATABASE_URL", "REDIS_URL", "REDIS_HOST", "CRDT_STATE_DATA_DIR")

Env = dict[str, str]


def crdt_state(
    env: Env, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """`crdt-state ARGS` with the settings `env` (nothing of this process's store settings)."""
    base = {k: v for k, v in os.environ.items() if k not in STORE_SETTINGS}
    feed: dict[str, Any] = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run(
        [sys.executable, "-m", "crdt_state", *args],
        env={**base, **env},
        capture_output=True,
        timeout=300,
        check=False,
        **feed,
    )


async def run(
    env: Env, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return await asyncio.to_thread(crdt_state, env, *args, stdin=stdin)


def summary_of(done: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    """The one JSON object a piped run prints; nothing on stderr."""
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b"", done.stderr.decode()
    summary: dict[str, Any] = orjson.loads(done.stdout)
    return summary


def records(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.splitlines()]


def rows_of(data: bytes) -> list[dict[str, Any]]:
    """An export's records but its header and end (when and where it was made)."""
    return [r for r in records(data) if r["type"] not in ("header", "end")]


@pytest.fixture
async def node() -> AsyncIterator[YjsClients]:
    async with YjsClients() as clients:
        yield clients


def env_of(backend: str, folder: Path, dsn: str) -> Env:
    env = {"CRDT_STATE_DATA_DIR": str(folder)}
    return env | {"DATABASE_URL": dsn} if backend == "postgres" else env


# -- a workspace written through a real server -------------------------------------------------


async def write_workspace(server: ServerProcess, node: YjsClients) -> None:
    async with httpx.AsyncClient(
        base_url=f"{server.http}/api/state/{WS}", headers=ADMIN, timeout=30
    ) as api:

        async def ok(answer: Any) -> dict[str, Any]:
            response = await answer
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        def add(path: str, value: Any, **extra: Any) -> dict[str, Any]:
            return {"patches": [{"op": "add", "path": path, "value": value}], **extra}

        start = {"$state": {"title": "Board ✓", "items": []}, "$computed": {"total": 0}}
        await ok(api.put("/board", json={"state": start}))
        for i in range(24):
            agent = {"triggeredBy": "ai", "triggerSource": "planner"} if i % 3 == 0 else {}
            item = {"n": i, "label": f"item {i} — ü", "ratio": i / 7, "tags": ["a", {"b": i}]}
            await ok(api.patch("/board", json=add("/$state/items/-", item, **agent)))
        stale = add("/$state/stale", {"from": "an old version"}, version=5)
        assert (await ok(api.patch("/board", json=stale)))["merged"] is True
        await ok(api.post("/board/revert", json={"targetVersion": 12}))
        await ok(api.patch("/board", json=add("/$computed/total", 3)))

        await ok(api.put("/notes", json={"state": {"$state": {"text": "first life"}}}))
        for i in range(7):
            await ok(api.patch("/notes", json=add(f"/$state/line{i}", i)))
        await ok(api.delete("/notes"))
        await ok(api.put("/notes", json={"state": {"$state": {"text": "second life"}}}))
        for i in range(6):
            await ok(api.patch("/notes", json=add(f"/$state/again{i}", [i, i * 1.5])))

        await ok(api.put("/gone", json={"state": {"$state": {"short": "lived"}}}))
        await ok(api.patch("/gone", json=add("/$state/more", True)))
        await ok(api.delete("/gone"))

    url, params = server.yjs_url(WS), {"token": token("alice", {WS: "write"})}
    writer = await node.connect("writer", url, "live", params=params, within=20)
    watcher = await node.connect("watcher", url, "live", params=params, within=20)
    for step in range(12):
        await writer.set(["$state", "step"], step)
        await writer.set(["$state", f"k{step}"], {"at": step, "word": "ünïcode"})
        # Once another client has it, the server has applied it (and logs it).
        await watcher.wait_for(["$state", f"k{step}"], {"at": step, "word": "ünïcode"})
    await writer.destroy()
    await watcher.destroy()


async def observe(
    server: ServerProcess, node: YjsClients, panels: tuple[str, ...] = PANELS
) -> dict[str, Any]:
    """Every read a client can make of the workspace: each panel's state, every version (and
    one past the newest), every history page (7 a page, all of it, a time window), the
    workspace snapshot, and what a Yjs client syncs."""
    seen: dict[str, Any] = {}
    async with httpx.AsyncClient(
        base_url=f"{server.http}/api/state/{WS}", headers=ADMIN, timeout=30
    ) as api:

        async def get(path: str, **params: Any) -> tuple[int, Any]:
            answer = await api.get(path, params=params)
            return answer.status_code, answer.json()

        for panel in panels:
            status, everything = await get(f"/{panel}/history", limit=1000)
            newest = everything["history"][0]["version"] if status == 200 else 0
            middle = everything["history"][len(everything["history"]) // 2] if newest else None
            window = (
                await get(f"/{panel}/history", since=middle["occurredAt"], limit=1000)
                if middle
                else None
            )
            seen[panel] = {
                "state": await get(f"/{panel}"),
                "withHistory": await get(f"/{panel}", includeHistory="true"),
                "history": (status, everything),
                "window": window,
                "pages": [
                    await get(f"/{panel}/history", limit=7, offset=offset)
                    for offset in range(0, newest + 7, 7)
                ],
                "versions": [await get(f"/{panel}", version=v) for v in range(newest + 2)],
            }
        status, snapshot = await get("/snapshot")
        assert status == 200, snapshot
        snapshot.pop("snapshotAt")  # when it was asked
        seen["snapshot"] = snapshot
    if "live" in panels:
        client = await node.connect(
            "reader", server.yjs_url(WS), "live", params={"token": token("bob")}, within=20
        )
        seen["yjs"] = await client.json()
        await client.destroy()
    return seen


@pytest.mark.parametrize("source, target", [("sqlite", "postgres"), ("postgres", "sqlite")])
async def test_a_workspace_moves_between_stores_and_reads_the_same_version_for_version(
    source: str, target: str, clean_pg: str, tmp_path: Path, node: YjsClients
) -> None:
    file = tmp_path / "ws.jsonl"
    source_env = env_of(source, tmp_path / "source", clean_pg)
    target_env = env_of(target, tmp_path / "target", clean_pg)
    server = ServerProcess(tmp_path / "source", env=source_env | SERVER_ENV).start()
    try:
        await write_workspace(server, node)
    finally:
        server.stop()  # every write flushed
    server.start()  # cold: every panel loads from the log, as on the target
    try:
        before = await observe(server, node)
        # Exported beside the running server (one snapshot; it writes nothing).
        exported = await run(source_env, "export", "--workspace", WS, "--output", str(file))
    finally:
        server.stop()
    assert exported.returncode == 0, exported.stderr.decode()

    board = before["board"]["versions"]
    assert board[12][1]["state"] == board[-3][1]["state"]  # the revert (then one more patch)
    assert board[-1][0] == 404  # one past the newest
    assert before["notes"]["versions"][2][0] == 404  # the first life is another epoch
    assert before["gone"]["state"][0] == 404 and before["gone"]["history"][0] == 200

    export = summary_of(exported)
    assert (export["panels"], export["deletedPanels"]) == (4, 1)
    assert export["checkpoints"] > 0 and export["entries"] == sum(
        before[p]["history"][1]["totalChanges"] for p in PANELS
    )
    data = file.read_bytes()
    assert hashlib.sha256(data.rsplit(b"\n", 2)[0] + b"\n").hexdigest() == export["sha256"]

    imported = summary_of(await run(target_env, "import", "--input", str(file)))
    assert (imported["panels"], imported["entries"], imported["checkpoints"]) == (
        4,
        export["entries"],
        export["checkpoints"],
    )
    assert imported["verifiedViews"] == 3 and imported["sourceStore"] == source

    server = ServerProcess(tmp_path / "target", env=target_env | SERVER_ENV).start()
    try:
        after = await observe(server, node)
    finally:
        server.stop()
    for panel in PANELS:
        assert after[panel] == before[panel], panel
    assert after["snapshot"] == before["snapshot"]
    assert after["yjs"] == before["yjs"]

    # Row for row: the target exports what the source did (times, change ids, checkpoints).
    again = await run(target_env, "export", "--workspace", WS)
    assert again.returncode == 0 and again.stderr == b""
    assert rows_of(again.stdout) == rows_of(data)


# -- a workspace written straight into a store -------------------------------------------------

Timeline = Callable[[int], datetime]


def recently(now: datetime | None = None) -> Timeline:
    base = (now or datetime.now(UTC)) - timedelta(minutes=10)
    return lambda version: base + timedelta(milliseconds=version)


def panel_changes(key: PanelKey, epoch: str, count: int, when: Timeline) -> list[Change]:
    """A panel's first `count` changes as a server logs them: $state.counter = v at version v,
    every 10th version also sets one of 4 objects."""
    panel = PanelDoc()
    updates: list[bytes] = []
    panel.doc.observe(lambda event: updates.append(event.update))
    panel.initialize(epoch)
    patches: list[JSONPatch] = [[]]
    with PatchRecorder(panel) as recorder:
        for version in range(2, count + 1):
            with panel.doc.transaction():
                panel.roots[STATE]["counter"] = version
                if version % 10 == 0:
                    panel.roots[STATE][f"k{version // 10 % 4}"] = {"at": version}
            patches.append(recorder.take())
    return [
        Change(
            key=key,
            epoch=epoch,
            update=updates[v - 1],
            change_type=ChangeType.CREATED if v == 1 else ChangeType.UPDATED,
            triggered_by=TriggeredBy.AI if v % 3 == 0 else TriggeredBy.USER,
            trigger_source="test",
            subject=f"user-{v % 5}",
            patch=patches[v - 1],
            occurred_at=when(v),
        )
        for v in range(1, count + 1)
    ]


async def write_panel(
    store: SqliteUpdateLog, changes: list[Change], every: int, *, delete: bool = False
) -> None:
    """Log the changes in batches with a checkpoint every `every` versions; then a delete."""
    key = changes[0].key
    assert await store.create(changes[0]) is not None
    for start in range(0, len(changes), every):  # versions start+1 .. start+every
        batch = changes[max(start, 1) : start + every]
        await store.append(batch)
        if start + every <= len(changes):
            checkpoint = await write_checkpoint(store, key)
            assert checkpoint is not None and checkpoint.version == start + every
    if delete:
        last = changes[-1]
        gone = Change(key, last.epoch, b"", ChangeType.DELETED, occurred_at=last.occurred_at)
        await store.append([gone])


async def small_workspace(folder: Path, workspace: str = WS) -> None:
    """SQLite: panel a (40 versions, checkpoints at 20 and 40), panel b (3 then deleted)."""
    store = await SqliteUpdateLog.open(folder / "crdt-state.sqlite3")
    try:
        when = recently()
        await write_panel(store, panel_changes(PanelKey(workspace, "a"), "ea", 40, when), 20)
        b = panel_changes(PanelKey(workspace, "b"), "eb", 3, when)
        await write_panel(store, b, 20, delete=True)
    finally:
        await store.close()


# -- a compacted workspace ---------------------------------------------------------------------


async def test_a_compacted_workspace_moves_with_its_fold_point_and_what_it_kept(
    clean_pg: str, tmp_path: Path, node: YjsClients
) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    now = datetime.now(UTC)

    def when(version: int) -> datetime:  # 1-100: 3 days ago; 101-200: 30 hours; then 2 hours
        hours = 72 if version <= 100 else 30 if version <= 200 else 2
        return now - timedelta(hours=hours) + timedelta(seconds=version)

    store = await SqliteUpdateLog.open(source / "crdt-state.sqlite3")
    try:
        await write_panel(store, panel_changes(PanelKey(WS, "big"), "e1", 300, when), 50)
        old = panel_changes(PanelKey(WS, "old"), "e2", 30, lambda v: when(1) + timedelta(seconds=v))
        await write_panel(store, old, 50, delete=True)
        maintenance = maintenance_of(store)
        assert maintenance is not None
        # History kept 2 days, time travel 1: versions up to 100 go, the updates up to the
        # checkpoint at 200 are folded into it; all of the long-deleted panel goes.
        policy = RetentionPolicy.of_days(2, 1)
        report = await Compactor(maintenance, store, policy).run(workspace_id=WS)
        assert report.to_json()["folded"] == 100 and report.to_json()["failed"] == 0
    finally:
        await store.close()

    server = ServerProcess(source, env=SERVER_ENV).start()
    try:
        before = await observe(server, node, ("big", "old"))
    finally:
        server.stop()
    versions = before["big"]["versions"]
    assert versions[199][0] == 410 and versions[199][1]["availableFrom"] == 200
    assert versions[200][0] == 200 and versions[200][1]["state"]["$state"]["counter"] == 200
    assert before["big"]["history"][1]["totalChanges"] == 200
    assert before["old"]["history"][0] == 404  # nothing kept of it but its row

    file = tmp_path / "compacted.jsonl"
    exported = summary_of(
        await run(
            {"CRDT_STATE_DATA_DIR": str(source)}, "export", "--workspace", WS, "--output", str(file)
        )
    )
    assert exported["entries"] == 200 and exported["checkpoints"] == 3  # at 200, 250, 300
    pg = env_of("postgres", target, clean_pg)
    assert summary_of(await run(pg, "import", "--input", str(file)))["panels"] == 2
    server = ServerProcess(target, env=pg | SERVER_ENV).start()
    try:
        after = await observe(server, node, ("big", "old"))
    finally:
        server.stop()
    assert after == before


# -- what an import refuses --------------------------------------------------------------------


def dump(backend: str, folder: Path, dsn: str) -> list[Any]:
    """Every row of the target's log tables, in order."""
    tables = {
        "sqlite": ("panels", "state_history", "state_checkpoints"),
        "postgres": ("panel_states", "state_history", "state_checkpoints"),
    }[backend]
    if backend == "sqlite":
        with sqlite3.connect(folder / "crdt-state.sqlite3") as db:
            return [db.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3").fetchall() for t in tables]

    async def read() -> list[Any]:
        conn = await asyncpg.connect(dsn)
        try:
            return [
                [tuple(r) for r in await conn.fetch(f"SELECT * FROM {t} ORDER BY 2, 3, 4")]
                for t in tables
            ]
        finally:
            await conn.close()

    return asyncio.run(read())


def resealed(lines: list[bytes]) -> bytes:
    """The lines with an end record whose checksum and counts match them again."""
    body = [line for line in lines if orjson.loads(line)["type"] != "end"]
    kinds = [orjson.loads(line)["type"] for line in body]
    panels = [orjson.loads(line) for line in body if b'"type":"panel"' in line]
    end = {
        "type": "end",
        "panels": kinds.count("panel"),
        "deletedPanels": sum(1 for p in panels if p["deletedAt"] is not None),
        "entries": kinds.count("entry"),
        "checkpoints": kinds.count("checkpoint"),
        "sha256": hashlib.sha256(b"".join(body)).hexdigest(),
    }
    return b"".join(body) + orjson.dumps(end) + b"\n"


def damaged(data: bytes) -> dict[str, tuple[bytes, str]]:
    """Damaged copies of an export, with what the refusal says."""
    lines = data.splitlines(keepends=True)
    entry = next(i for i, line in enumerate(lines) if b'"version":7,' in line and b"entry" in line)
    view = next(i for i, line in enumerate(lines) if b'"type":"view"' in line)
    changed = lines.copy()
    changed[entry] = changed[entry].replace(b'"subject":"user-2"', b'"subject":"user-9"')
    assert changed[entry] != lines[entry]
    other_view = lines.copy()
    other_view[view] = other_view[view].replace(b'"counter":40', b'"counter":41')
    assert other_view[view] != lines[view]
    header = orjson.loads(lines[0]) | {"formatVersion": 2}
    return {
        "truncated": (b"".join(lines[:-1]), "truncated"),
        "cut mid-line": (data[: len(data) // 2], "truncated"),
        "a byte changed": (b"".join(changed), "checksum does not match"),
        "another view": (resealed(other_view), "differs from the exported view"),
        "a version missing": (resealed(lines[:entry] + lines[entry + 1 :]), "out of order"),
        "a newer format": (orjson.dumps(header) + b"\n" + b"".join(lines[1:]), "format version 2"),
        "no export": (b"name,value\nx,1\n", "not JSON"),
        "more after the end": (data + lines[-1], "lines follow the end record"),
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_damaged_file_is_refused_and_leaves_the_target_as_it_was(
    backend: str, clean_pg: str, tmp_path: Path
) -> None:
    await small_workspace(tmp_path / "source")
    exported = await run(
        {"CRDT_STATE_DATA_DIR": str(tmp_path / "source")}, "export", "--workspace", WS
    )
    assert exported.returncode == 0, exported.stderr.decode()
    env = env_of(backend, tmp_path / "target", clean_pg)
    summary_of(await run(env, "import", stdin=exported.stdout))  # the workspace is there
    stored = await asyncio.to_thread(dump, backend, tmp_path / "target", clean_pg)
    assert [len(rows) for rows in stored] == [2, 44, 2]

    for name, (data, says) in damaged(exported.stdout).items():
        for args in (("--replace",), ("--workspace", "fresh")):
            refused = await run(env, "import", *args, stdin=data)
            message = refused.stderr.decode()
            assert refused.returncode == 1, (name, message)
            assert says in message and "nothing was imported" in message, (name, message)
            assert refused.stdout == b"", name
            assert await asyncio.to_thread(dump, backend, tmp_path / "target", clean_pg) == stored

    # The same rows as another workspace: the change ids they carry are in the store already.
    lines = exported.stdout.splitlines(keepends=True)
    twin = orjson.dumps(orjson.loads(lines[0]) | {"workspaceId": "twin"}) + b"\n"
    refused = await run(env, "import", stdin=resealed([twin, *lines[1:]]))
    assert refused.returncode == 1 and "the store refused a row" in refused.stderr.decode()
    assert await asyncio.to_thread(dump, backend, tmp_path / "target", clean_pg) == stored


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_workspace_with_panels_is_replaced_only_when_asked(
    backend: str, clean_pg: str, tmp_path: Path
) -> None:
    await small_workspace(tmp_path / "source")
    source = {"CRDT_STATE_DATA_DIR": str(tmp_path / "source")}
    exported = (await run(source, "export", "--workspace", WS)).stdout
    env = env_of(backend, tmp_path / "target", clean_pg)
    await small_workspace(tmp_path / "other", "ws")  # another workspace of the same id...
    other = (
        await run({"CRDT_STATE_DATA_DIR": str(tmp_path / "other")}, "export", "--workspace", WS)
    ).stdout
    summary_of(await run(env, "import", stdin=other))  # ...is in the target
    stored = await asyncio.to_thread(dump, backend, tmp_path / "target", clean_pg)

    refused = await run(env, "import", stdin=exported)
    assert refused.returncode == 1 and "--replace" in refused.stderr.decode()
    assert "has 2 panels" in refused.stderr.decode()
    assert await asyncio.to_thread(dump, backend, tmp_path / "target", clean_pg) == stored

    replaced = summary_of(await run(env, "import", "--replace", stdin=exported))
    assert replaced["replacedPanels"] == 2 and replaced["panels"] == 2
    assert rows_of((await run(env, "export", "--workspace", WS)).stdout) == rows_of(exported)

    # A copy under another id, beside the original in one store: change ids of its own.
    copied = summary_of(await run(env, "import", "--workspace", "copy", stdin=exported))
    assert copied["workspaceId"] == "copy" and copied["sourceWorkspaceId"] == WS
    copy = rows_of((await run(env, "export", "--workspace", "copy")).stdout)
    original = rows_of(exported)
    ids = [
        (a.pop("changeId", None), b.pop("changeId", None))
        for a, b in zip(copy, original, strict=True)
    ]
    assert copy == original
    assert all(mine and theirs and mine != theirs for mine, theirs in ids if theirs)


# -- the commands, piped and on a terminal -----------------------------------------------------


def on_a_terminal(args: list[str], env: Env) -> tuple[int, str]:
    """Run a command with stdout and stderr on a pseudo-terminal; its exit code and output."""
    primary, secondary = os.openpty()
    with subprocess.Popen(
        args, env=env, stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary
    ) as process:
        os.close(secondary)
        output = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the command closed the terminal
                break
            if not chunk:
                break
            output += chunk
        os.close(primary)
        return process.wait(timeout=60), output.decode(errors="replace")


def test_piped_runs_are_quiet_and_terminals_get_progress(tmp_path: Path) -> None:
    asyncio.run(small_workspace(tmp_path / "source"))
    source = {"CRDT_STATE_DATA_DIR": str(tmp_path / "source")}
    target = {"CRDT_STATE_DATA_DIR": str(tmp_path / "target")}

    piped = crdt_state(source, "export", "--workspace", WS)  # to stdout: the data, nothing else
    assert piped.returncode == 0 and piped.stderr == b""
    kinds = [r["type"] for r in records(piped.stdout)]
    assert kinds[0] == "header" and kinds[-1] == "end" and kinds.count("panel") == 2
    asked = crdt_state(source, "export", "--workspace", WS, "--output", "-", "--json")
    assert rows_of(asked.stdout) == rows_of(piped.stdout)
    assert orjson.loads(asked.stderr)["entries"] == 44  # --json: the summary on stderr
    file = tmp_path / "out.jsonl"
    written = summary_of(crdt_state(source, "export", "--workspace", WS, "--output", str(file)))
    assert written["file"] == str(file) and written["bytes"] == file.stat().st_size
    assert not (tmp_path / "out.jsonl.partial").exists()

    missing = crdt_state(source, "export", "--workspace", "nobody", "--output", str(tmp_path / "x"))
    assert missing.returncode == 1 and b"has no panels" in missing.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()
    nowhere = crdt_state(
        {"CRDT_STATE_DATA_DIR": str(tmp_path / "none")}, "export", "--workspace", WS
    )
    assert nowhere.returncode == 2 and b"no database at" in nowhere.stderr
    assert not (tmp_path / "none").exists()

    env = {k: v for k, v in os.environ.items() if k not in STORE_SETTINGS} | target
    command = [sys.executable, "-m", "crdt_state"]
    code, text = on_a_terminal([*command, "import", "--input", str(file)], env)
    assert code == 0, text
    assert "importing ws/a (panel 1/2" in text and "\x1b[2K" in text  # the progress line
    assert "imported workspace ws (sqlite) as ws (sqlite)" in text and "every view verified" in text
    code, text = on_a_terminal([*command, "export", "--workspace", WS, "--output", str(file)], env)
    assert code == 0 and "exporting ws/a (panel 1/2" in text and "exported workspace ws" in text
    code, text = on_a_terminal([*command, "export", "--workspace", WS], env)
    assert code == 2 and "--output" in text  # no export onto a terminal


def test_an_import_drops_the_hot_cache_entries_of_the_workspace(tmp_path: Path) -> None:
    asyncio.run(small_workspace(tmp_path / "source"))
    data = crdt_state(
        {"CRDT_STATE_DATA_DIR": str(tmp_path / "source")}, "export", "--workspace", WS
    ).stdout
    cache = redis.Redis.from_url(redis_url())
    try:
        stale = orjson.dumps({"$state": {"stale": True}, "_meta": {"version": 99, "epoch": "x"}})
        keys = [f"state:{WS}:a", f"state:{WS}:b", f"state:{WS}:elsewhere", "state:other:a"]
        for key in keys:
            cache.set(key, stale)
        env = {"CRDT_STATE_DATA_DIR": str(tmp_path / "target"), "REDIS_URL": redis_url()}
        assert summary_of(crdt_state(env, "import", stdin=data))["panels"] == 2
        # The workspace's panels are gone from the cache; what is not the workspace's stays.
        assert [cache.exists(key) for key in keys] == [0, 0, 1, 1]
    finally:
        cache.delete(*keys)
        cache.close()
