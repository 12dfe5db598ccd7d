"""Git snapshots of workspaces through the API of a real server, checked with the git CLI;
and the snapshot service in-process (automatic rounds, restarts, the readiness check)."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.git import GitSnapshotRepository
from adapters.local import LocalFanout
from adapters.sqlite import SqliteUpdateLog
from crdt_state.config import Settings
from crdt_state.document import PanelDoc
from crdt_state.model import Attribution, Change, ChangeType, PanelKey, TriggeredBy
from crdt_state.server import Server
from crdt_state.snapshot_repository import canonical_json, panel_file_name, panel_versions
from crdt_state.snapshots import SnapshotService

from .conftest import token
from .server import ServerProcess
from .yjs_client import YjsClients

AGENT = Attribution(TriggeredBy.AI, "test", "agent")


def git(git_dir: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", f"--git-dir={git_dir}", *args], capture_output=True, check=True, text=True
    )
    return done.stdout


def commits(git_dir: Path) -> list[str]:
    return git(git_dir, "rev-list", "--first-parent", "main").split()


def until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll a server in another process until `check()` is truthy; its value."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return value


# --- a real server ------------------------------------------------------------------------


@dataclass
class Rig:
    server: ServerProcess
    remotes: Path

    def repo(self, workspace: str) -> Path:
        return self.server.data_dir / "git" / f"{workspace}.git"

    def remote(self, workspace: str) -> Path:
        return self.remotes / f"{workspace}.git"


def start_rig(root: Path, interval: str) -> Rig:
    remotes = root / "remotes"
    remotes.mkdir(parents=True)
    env = {
        "CRDT_STATE_SNAPSHOT_INTERVAL_SECONDS": interval,
        "CRDT_STATE_GIT_PUSH_URL": str(remotes / "{workspace}.git"),
    }
    return Rig(ServerProcess(root / "data", env=env).start(), remotes)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    started = start_rig(tmp_path_factory.mktemp("snapshots"), interval="0")
    yield started
    started.server.stop()


@pytest.fixture(scope="module")
def auto_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    started = start_rig(tmp_path_factory.mktemp("auto-snapshots"), interval="1")
    yield started
    started.server.stop()


@pytest.fixture
def ws() -> str:
    return f"ws-{uuid.uuid4().hex[:10]}"


def client(server: ServerProcess, workspace: str, role: str = "admin") -> httpx.Client:
    headers = {"Authorization": f"Bearer {token('agent', {workspace: role})}"}
    return httpx.Client(base_url=f"{server.http}/api/state/{workspace}", headers=headers)


@pytest.fixture
def api(rig: Rig, ws: str) -> Iterator[httpx.Client]:
    with client(rig.server, ws) as http:
        yield http


P_VIEW = {"$state": {"filters": {"min": 1, "tags": ["a"]}}, "$computed": {"rows": 3}}


def async_client(api: httpx.Client) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=str(api.base_url), headers=dict(api.headers))


def put(api: httpx.Client, panel: str, state: dict[str, Any], computed: Any = None) -> int:
    view = {"$state": state, **({"$computed": computed} if computed is not None else {})}
    response = api.put(f"/{panel}", json={"state": view})
    assert response.is_success, response.text
    return int(response.json()["version"])


def snapshot(api: httpx.Client, **body: Any) -> dict[str, Any]:
    response = api.post("/snapshot", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def status(api: httpx.Client) -> dict[str, Any]:
    response = api.get("/snapshot/status")
    assert response.status_code == 200, response.text
    return dict(response.json())


def file_at(repo: Path, sha: str, panel: str) -> bytes:
    return subprocess.run(
        ["git", f"--git-dir={repo}", "show", f"{sha}:panels/{panel_file_name(panel)}"],
        capture_output=True,
        check=True,
    ).stdout


def test_a_snapshot_is_a_commit_of_one_file_per_panel_equal_to_its_rest_view(
    rig: Rig, api: httpx.Client, ws: str
) -> None:
    put(api, "filters", {"region": ["north", "süd"], "min": 0}, {"rows": 12})
    put(api, "über chart", {"type": "bar", "series": [{"k": "a", "v": 1.5}]})
    put(api, "gone", {"x": 1})
    assert api.delete("/gone").status_code == 200

    taken = snapshot(api, description="Before the review.")
    assert taken["created"] is True and taken["type"] == "manual"
    assert taken["panelCount"] == 2 and taken["changedPanels"] == ["filters", "über chart"]
    sha, repo = taken["gitCommitHash"], rig.repo(ws)
    assert commits(repo) == [sha]
    assert sorted(git(repo, "ls-tree", "--name-only", f"{sha}:panels").split()) == [
        "%C3%BCber%20chart.json",
        "filters.json",
    ]
    total = 0
    for panel in ("filters", "über chart"):
        view = api.get(f"/{panel}").json()
        assert file_at(repo, sha, panel) == canonical_json(view["state"])
        assert taken["panelVersions"][panel] == view["version"]
        total += len(canonical_json(view["state"]))
    assert taken["totalSizeBytes"] == total
    message = git(repo, "log", "-1", "--format=%B", sha)
    assert "Before the review." in message and panel_versions(message) == taken["panelVersions"]
    [row] = status(api)["snapshots"]
    assert row["snapshotId"] == taken["snapshotId"] and row["gitCommitHash"] == sha


def test_an_unchanged_workspace_gets_no_new_commit(rig: Rig, api: httpx.Client, ws: str) -> None:
    put(api, "a", {"n": 1})
    put(api, "b", {"n": 2})
    first = snapshot(api)
    again = snapshot(api, type="pre_ai_edit")
    assert again["created"] is False and again["gitCommitHash"] == first["gitCommitHash"]
    assert commits(rig.repo(ws)) == [first["gitCommitHash"]]
    put(api, "b", {"n": 3})
    changed = snapshot(api)
    assert changed["created"] is True and changed["changedPanels"] == ["b"]
    assert commits(rig.repo(ws)) == [changed["gitCommitHash"], first["gitCommitHash"]]
    kept = [(row["type"], row["gitCommitHash"]) for row in status(api)["snapshots"]]
    assert kept == [
        ("manual", changed["gitCommitHash"]),
        ("pre_ai_edit", first["gitCommitHash"]),  # a row for every snapshot asked for
        ("manual", first["gitCommitHash"]),
    ]


def test_a_snapshot_kept_out_of_git_is_only_a_row(rig: Rig, api: httpx.Client, ws: str) -> None:
    version = put(api, "a", {"n": 1})
    taken = snapshot(api, commitToGit=False)
    assert taken["gitCommitHash"] is None and taken["created"] is False
    assert taken["panelVersions"] == {"a": version}
    assert not rig.repo(ws).exists()
    assert status(api)["snapshots"][0]["snapshotId"] == taken["snapshotId"]


def test_the_current_state_of_every_panel(api: httpx.Client) -> None:
    put(api, "a", {"n": 1}, {"sum": 2})
    put(api, "b", {"list": [1, 2]})
    body = api.get("/snapshot").json()
    assert body["totalPanels"] == 2 and body["gitCommit"] is None
    for panel in ("a", "b"):
        view = api.get(f"/{panel}").json()
        expected = {**view["state"], "version": view["version"], "epoch": view["epoch"]}
        assert body["panels"][panel] == expected


async def test_reading_a_commit_while_new_commits_are_written(
    rig: Rig, api: httpx.Client, ws: str
) -> None:
    async with async_client(api) as http:
        for n in range(5):
            assert (await http.put(f"/p{n}", json={"state": {"$state": {"n": n}}})).is_success
        old = (await http.post("/snapshot", json={})).json()
        sha = old["gitCommitHash"]
        expected = (await http.get("/snapshot", params={"git_commit": sha})).json()
        assert expected["gitCommit"] == sha
        assert {p: v["$state"] for p, v in expected["panels"].items()} == {
            f"p{n}": {"n": n} for n in range(5)
        }
        assert {p: v["version"] for p, v in expected["panels"].items()} == old["panelVersions"]

        async def writer() -> int:
            made = 0
            for round_ in range(15):
                patch = [{"op": "replace", "path": "/$state/n", "value": 100 + round_}]
                assert (await http.patch(f"/p{round_ % 5}", json={"patches": patch})).is_success
                taken = await http.post("/snapshot", json={})
                assert taken.status_code == 201, taken.text
                made += taken.json()["created"]
            return made

        async def reader() -> int:
            reads = 0
            for _ in range(30):
                answer = await http.get("/snapshot", params={"git_commit": sha})
                assert answer.status_code == 200 and answer.json() == expected
                reads += 1
            return reads

        made, *reads = await asyncio.gather(writer(), reader(), reader())
    assert made == 15 and reads == [30, 30]
    assert len(commits(rig.repo(ws))) == 16


async def test_restore_makes_panels_equal_the_commit_and_live_clients_converge(
    rig: Rig, api: httpx.Client, ws: str
) -> None:
    async with async_client(api) as http, YjsClients() as node:
        for panel, view in (("p", P_VIEW), ("q", {"$state": {"title": "kept"}})):
            assert (await http.put(f"/{panel}", json={"state": view})).is_success
        commit = (await http.post("/snapshot", json={})).json()["gitCommitHash"]
        saved = {p: (await http.get(f"/{p}")).json() for p in ("p", "q")}

        params = {"token": token("ann", {ws: "write"})}
        ann = await node.connect("ann", rig.server.yjs_url(ws), "p", params=params)
        await ann.set(["$state", "filters", "min"], 50)
        await ann.set(["$state", "extra"], True)
        assert (await http.delete("/q")).status_code == 200
        later = {"$state": {"made": "after the commit"}}
        assert (await http.put("/later", json={"state": later})).is_success

        answer = await http.post("/restore", json={"gitCommit": commit[:10]})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["gitCommit"] == commit and set(body["panels"]) == {"p", "q"}
        await ann.wait_json_equals(P_VIEW["$state"])
        await ann.wait_json_equals(P_VIEW["$computed"], root="$computed")

        for panel in ("p", "q"):
            now = (await http.get(f"/{panel}")).json()
            assert now["state"] == saved[panel]["state"]
            assert now["version"] == body["panels"][panel]["version"] > saved[panel]["version"]
            assert file_at(rig.repo(ws), commit, panel) == canonical_json(now["state"])
            history = await http.get(f"/{panel}/history", params={"limit": 1})
            [last] = history.json()["history"]
            assert last["changeType"] == "reverted" and last["triggerSource"] == f"git:{commit}"
            assert last["subject"] == "agent"
        assert body["panels"]["q"]["created"] is True  # deleted since: created again
        assert body["panels"]["q"]["epoch"] != saved["q"]["epoch"]
        assert body["panels"]["p"]["created"] is False
        assert (await http.get("/later")).json()["state"] == {**later, "$computed": {}}


def test_restore_of_chosen_panels_leaves_the_others(api: httpx.Client) -> None:
    put(api, "a", {"n": 1})
    put(api, "b", {"n": 1})
    commit = snapshot(api)["gitCommitHash"]
    put(api, "a", {"n": 2})
    put(api, "b", {"n": 2})
    answer = api.post("/restore", json={"gitCommit": commit, "panels": ["b"]})
    assert answer.status_code == 200, answer.text
    assert list(answer.json()["panels"]) == ["b"]
    assert api.get("/a").json()["state"]["$state"] == {"n": 2}
    assert api.get("/b").json()["state"]["$state"] == {"n": 1}
    again = api.post("/restore", json={"gitCommit": commit, "panels": ["b"]}).json()
    assert again["panels"]["b"]["changed"] is False  # already equal: nothing logged


def test_snapshots_are_pushed_to_the_remote(rig: Rig, api: httpx.Client, ws: str) -> None:
    git(rig.remote(ws), "init", "--quiet", "--bare")
    for n in range(3):
        put(api, "a", {"n": n})
        head = snapshot(api)["gitCommitHash"]

    def pushed() -> bool:
        push = status(api)["push"]
        return bool(push["state"] == "ok" and push["pushed_sha"] == head)

    until(pushed)
    assert git(rig.remote(ws), "rev-parse", "refs/heads/main").strip() == head


def test_a_failing_push_is_retried_and_never_fails_the_snapshot(
    rig: Rig, api: httpx.Client, ws: str
) -> None:
    put(api, "a", {"n": 1})
    started = time.monotonic()
    first = snapshot(api)
    assert first["created"] and time.monotonic() - started < 2.0
    failing = until(lambda: (push := status(api)["push"])["attempts"] >= 1 and push)
    assert failing["last_error"] and failing["state"] in ("retrying", "pushing")
    put(api, "a", {"n": 2})
    head = snapshot(api)["gitCommitHash"]  # still fine while the remote is missing
    git(rig.remote(ws), "init", "--quiet", "--bare")

    def pushed() -> bool:
        push = status(api)["push"]
        return bool(push["state"] == "ok" and push["pushed_sha"] == head)

    until(pushed, timeout=30)  # a commit during the retries asks for one more push: "ok" twice
    assert git(rig.remote(ws), "rev-parse", "refs/heads/main").strip() == head


def test_bad_input_gets_a_clear_error(rig: Rig, api: httpx.Client, ws: str) -> None:
    put(api, "a", {"n": 1})
    mine = snapshot(api)["gitCommitHash"]
    with client(rig.server, f"{ws}-other") as other:
        put(other, "a", {"n": "another workspace"})
        theirs = snapshot(other)["gitCommitHash"]

    def error(response: httpx.Response, status: int, code: str) -> None:
        assert response.status_code == status, response.text
        assert response.json()["error"] == code

    for sha in ("xyz", "12", "g" * 40, "a" * 41, ""):
        error(api.get("/snapshot", params={"git_commit": sha}), 400, "malformed_sha")
        error(api.post("/restore", json={"gitCommit": sha}), 400, "malformed_sha")
    for sha in ("0" * 40, theirs):  # unknown here, or another workspace's commit
        error(api.get("/snapshot", params={"git_commit": sha}), 404, "commit_not_found")
        error(api.post("/restore", json={"gitCommit": sha}), 404, "commit_not_found")
    error(api.post("/restore", json={}), 400, "bad_request")
    error(api.post("/restore", json={"gitCommit": mine, "panels": "a"}), 400, "bad_request")
    error(api.post("/restore", json={"gitCommit": mine, "panels": []}), 400, "bad_request")
    missing = api.post("/restore", json={"gitCommit": mine, "panels": ["a", "nope"]})
    error(missing, 404, "panel_not_in_snapshot")
    assert missing.json()["missing"] == ["nope"]
    assert api.get("/a").json()["version"] == 2  # nothing was restored
    error(api.post("/snapshot", json={"type": "hourly"}), 400, "bad_request")
    error(api.post("/snapshot", json={"commitToGit": "yes"}), 400, "bad_request")
    error(api.post("/snapshot", json={"description": "x" * 2001}), 400, "bad_request")
    error(api.post("/snapshot", content=b"[1]"), 400, "bad_request")
    error(api.put("/snapshot", json={"state": {}}), 405, "method_not_allowed")
    error(api.get("/restore"), 405, "method_not_allowed")
    with client(rig.server, ws, role="write") as writer:
        error(writer.post("/snapshot", json={}), 403, "forbidden")  # admin only
        assert writer.get("/snapshot", params={"git_commit": mine}).status_code == 200
    with client(rig.server, ws, role="read") as reader:
        assert reader.get("/snapshot").status_code == 200
        assert reader.get("/snapshot/status").status_code == 200
        error(reader.post("/restore", json={"gitCommit": mine}), 403, "forbidden")
    with httpx.Client(base_url=f"{rig.server.http}/api/state/{ws}") as anonymous:
        error(anonymous.get("/snapshot"), 401, "unauthorized")


def test_a_corrupted_repository_is_reported_and_live_editing_goes_on(
    rig: Rig, api: httpx.Client, ws: str
) -> None:
    put(api, "a", {"n": 1})
    put(api, "b", {"n": 1})
    sha = snapshot(api)["gitCommitHash"]
    repo = rig.repo(ws)
    blob = git(repo, "rev-parse", f"{sha}:panels/a.json").strip()
    (repo / "objects" / blob[:2] / blob[2:]).unlink()

    report = status(api)["repository"]
    assert report["ok"] is False and "missing" in report["problem"]
    failed = api.post("/snapshot", json={})
    assert failed.status_code == 500 and failed.json()["error"] == "repository_corrupt"
    patch = [{"op": "replace", "path": "/$state/n", "value": 2}]
    assert api.patch("/a", json={"patches": patch}).status_code == 200
    assert api.get("/a").json()["state"]["$state"] == {"n": 2}
    assert api.get("/snapshot").json()["panels"]["a"]["$state"] == {"n": 2}
    assert httpx.get(f"{rig.server.http}/ready").status_code == 200


def test_a_patch_asking_for_a_snapshot_before_gets_a_pre_ai_edit_commit(
    rig: Rig, api: httpx.Client, ws: str
) -> None:
    put(api, "a", {"n": 1})
    before = api.get("/a").json()
    patch = [{"op": "replace", "path": "/$state/n", "value": 2}]
    answer = api.patch("/a", json={"patches": patch, "snapshotBefore": True, "triggeredBy": "ai"})
    assert answer.status_code == 200, answer.text
    row = status(api)["snapshots"][0]
    assert row["type"] == "pre_ai_edit" and row["panelVersions"] == {"a": before["version"]}
    assert file_at(rig.repo(ws), row["gitCommitHash"], "a") == canonical_json(before["state"])
    assert api.get("/a").json()["state"]["$state"] == {"n": 2}


def test_automatic_snapshots_follow_changes_and_make_no_empty_commits(
    auto_rig: Rig, ws: str
) -> None:
    def settled(previous: str | None) -> Callable[[], str | None]:
        def check() -> str | None:
            now = status(api)
            head = now["head"] and now["head"]["gitCommitHash"]
            done = head and head != previous and now["autoSnapshot"]["lastCommit"] == head
            return head if done else None

        return check

    with client(auto_rig.server, ws) as api:
        put(api, "a", {"n": 1})
        first = until(settled(None))
        repo = auto_rig.repo(ws)
        assert file_at(repo, first, "a") == canonical_json(api.get("/a").json()["state"])
        [row] = status(api)["snapshots"]
        assert row["type"] == "auto" and row["gitCommitHash"] == first
        time.sleep(2.5)  # two more rounds without a change
        assert commits(repo) == [first] and len(status(api)["snapshots"]) == 1
        put(api, "a", {"n": 2})
        second = until(settled(first))
        assert commits(repo) == [second, first]
        assert status(api)["autoSnapshot"]["lastError"] is None


# --- the service in-process ---------------------------------------------------------------


@dataclass
class Local:
    store: SqliteUpdateLog
    server: Server
    service: SnapshotService
    git_root: Path

    async def edit(self, key: PanelKey, state: dict[str, Any]) -> int:
        result = await self.server.panels.replace(key, {"$state": state}, AGENT)
        assert result.changed
        return result.version


@asynccontextmanager
async def local_service(root: Path) -> AsyncIterator[Local]:
    store = await SqliteUpdateLog.open(root / "state.db")
    repository = GitSnapshotRepository(root / "git")
    settings = Settings(room_idle_seconds=0, snapshot_interval_seconds=60)
    server = Server(store, LocalFanout(), repository, settings)
    server.snapshots.check_ttl_seconds = 0
    server.start()
    try:
        yield Local(store, server, server.snapshots, root / "git")
    finally:
        await server.close()
        await repository.close()
        await store.close()


async def test_the_check_reports_damage_and_failing_rounds_until_repaired(tmp_path: Path) -> None:
    async with local_service(tmp_path) as local:
        key = PanelKey("ws", "p")
        await local.edit(key, {"n": 1})
        first = (await local.service.run_auto_round())["ws"]
        assert first is not None and (await local.service.check())["status"] == "ok"
        assert await local.service.run_auto_round() == {}  # nothing changed since

        ref = local.git_root / "ws.git" / "refs" / "heads" / "main"
        ref.write_text("garbage\n")
        version = await local.edit(key, {"n": 2})  # editing does not depend on Git
        assert await local.service.run_auto_round() == {"ws": None}
        report = await local.service.check()
        assert report["status"] == "degraded" and "garbage" in report["corrupt"]["ws"]
        assert "ws" in report["autoSnapshotFailures"]
        assert await local.edit(key, {"n": 3}) == version + 1

        ref.write_text(first + "\n")
        second = (await local.service.run_auto_round())["ws"]  # retried: still pending
        assert second not in (None, first)
        assert await local.service.check() == {
            "status": "ok",
            "repositories": 1,
            "corrupt": {},
            "autoSnapshotFailures": {},
        }


async def test_changes_made_before_a_restart_get_their_automatic_snapshot(
    tmp_path: Path,
) -> None:
    async with local_service(tmp_path) as local:
        await local.edit(PanelKey("ws", "p"), {"n": 1})
        await local.edit(PanelKey("quiet", "p"), {"n": 1})
        assert (await local.service.run_auto_round()).keys() == {"ws", "quiet"}
        await local.edit(PanelKey("ws", "p"), {"n": 2})  # then the process stops
    async with local_service(tmp_path) as local:
        done = await local.service.run_auto_round()
        assert list(done) == ["ws"] and done["ws"] is not None
        head = await local.service.at_commit("ws", done["ws"])
        assert head.views["p"]["$state"] == {"n": 2}
        assert await local.service.run_auto_round() == {}


async def test_a_panel_without_a_current_stored_view_is_read_from_its_log(
    tmp_path: Path,
) -> None:
    async with local_service(tmp_path) as local:
        await local.edit(PanelKey("ws", "kept"), {"n": 1})
        await local.server.registry.close()  # rooms unloaded: their views are stored
        doc = PanelDoc()
        updates: list[bytes] = []
        doc.doc.observe(lambda event: updates.append(event.update))
        doc.initialize("e1", {"from": "the log"})
        key = PanelKey("ws", "logged")
        await local.store.create(Change(key, "e1", updates[0], ChangeType.CREATED))
        assert [row.view for row in await local.store.list_panels("ws")] == [
            {"$state": {"n": 1}, "$computed": {}},  # kept
            None,  # logged: no view stored
        ]
        panels = {p.key.panel_id: p for p in await local.service.collect("ws")}
        assert panels["logged"].view == {"$state": {"from": "the log"}, "$computed": {}}
        assert panels["logged"].version == 1
        assert panels["kept"].view["$state"] == {"n": 1}
