"""`GET /api/state/{ws}/context` on a real server: the workspace's state for an LLM prompt
within a token budget, what was cut, recent changes by author kind, the versions an agent
PATCHes with, the ETag, and the cache per set of panel versions (its renderings counted
through the admin API)."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from crdt_state.auth import mint_token
from crdt_state.prompt_budget import estimate_tokens

from .conftest import token
from .server import SECRET, ServerProcess

BUDGETS = [200, 500, 1000, 2000, 5000, 10000, 20000, 50000]
AUTHORS = ["user", "ai", "system"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("ai-context")).start()
    yield process
    process.stop()


def client(server: ServerProcess, workspace: str, role: str = "write") -> httpx.Client:
    headers = {"Authorization": f"Bearer {token('agent', {workspace: role})}"}
    return httpx.Client(base_url=f"{server.http}/api/state/{workspace}", headers=headers)


def cache_stats(server: ServerProcess) -> dict[str, Any]:
    admin = mint_token(SECRET, "ops", {}, admin=True)
    response = httpx.get(
        f"{server.http}/api/admin/context-cache", headers={"Authorization": f"Bearer {admin}"}
    )
    assert response.status_code == 200, response.text
    stats: dict[str, Any] = response.json()
    return stats


def panel_state(rng: random.Random, index: int) -> dict[str, Any]:
    """Panels of a few shapes, some large (long notes, long arrays)."""
    tasks = [
        {"id": uuid.UUID(int=rng.getrandbits(128)).hex, "title": f"Task {i}", "done": i % 2 == 0}
        for i in range(rng.randint(1, 30))
    ]
    state: dict[str, Any] = {"title": f"Panel {index}", "tasks": tasks}
    if index % 5 == 0:
        state["notes"] = "Meeting notes: budget, hiring, roadmap. " * rng.randint(50, 400)
    if index % 7 == 0:
        state["series"] = [rng.randint(0, 10**6) for _ in range(rng.randint(200, 2000))]
    return {"$state": state, "$computed": {"taskCount": len(tasks)}}


def fill(api: httpx.Client, count: int, seed: int = 7) -> list[str]:
    """`count` panels, each created by one author kind in turn (user, ai, system)."""
    rng = random.Random(seed)
    ids = [f"panel-{i:02d}" for i in range(count)]
    for index, panel in enumerate(ids):
        author = AUTHORS[index % 3]
        body = {"state": panel_state(rng, index), "triggeredBy": author}
        created = api.put(f"/{panel}", json=body)
        assert created.status_code in (200, 201), created.text  # 201: the old shape
    return ids


def context(api: httpx.Client, **params: Any) -> httpx.Response:
    response = api.get("/context", params=params)
    assert response.status_code == 200, response.text
    return response


@pytest.fixture(scope="module")
def fifty(server: ServerProcess) -> Iterator[tuple[httpx.Client, list[str]]]:
    workspace = f"fifty-{uuid.uuid4().hex[:6]}"
    with client(server, workspace) as api:
        yield api, fill(api, 50)


# --- the budget ---------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["markdown", "json"])
def test_fifty_panels_fit_every_budget_and_mark_what_was_cut(
    fifty: tuple[httpx.Client, list[str]], form: str
) -> None:
    api, ids = fifty
    versions = {panel: api.get(f"/{panel}").json()["version"] for panel in ids}
    for budget in BUDGETS:
        body = context(api, maxTokens=budget, format=form, recentChanges=10).json()
        text = body["context"]
        assert body["tokenEstimate"] == estimate_tokens(text) <= budget, budget
        assert body["maxTokens"] == budget and body["format"] == form
        assert [p["panelId"] for p in body["panels"]] == ids  # every panel, in order
        assert {p["panelId"]: p["version"] for p in body["panels"]} == versions
        cut = {c["panelId"]: c for c in body["cut"] if "panelId" in c}
        shown = [p for p in body["panels"] if p["shown"] != "omitted"]
        omitted = [p for p in body["panels"] if p["shown"] == "omitted"]
        assert shown and body["panels"][: len(shown)] == shown  # omitted: the last ones
        assert body["truncated"] is True  # the notes and series never all fit
        for panel in body["panels"]:
            assert (panel["shown"] == "full") == (panel["panelId"] not in cut)
        if form == "json":
            rendering = json.loads(text)
            listed = [p["panelId"] for p in rendering["panels"]]
            assert listed == [p["panelId"] for p in shown]
            if omitted:
                assert rendering["omitted"]["count"] == len(omitted)
        else:
            for panel in shown:
                assert f'## Panel "{panel["panelId"]}" · version {panel["version"]}' in text
            if omitted:
                assert f"[Left out to fit the token budget: {len(omitted)} panels" in text
            if any(p["shown"] == "shortened" for p in shown):
                assert "· shortened" in text
    small = context(api, maxTokens=200).json()
    large = context(api, maxTokens=50000).json()
    assert len(small["cut"]) > len(large["cut"])


def test_large_values_are_summarised_with_their_size(
    fifty: tuple[httpx.Client, list[str]],
) -> None:
    api, _ = fifty
    body = context(api, panels="panel-00", maxTokens=400).json()
    text = body["context"]
    notes = api.get("/panel-00").json()["state"]["$state"]["notes"]
    assert f"({len(notes):,} chars)" in text  # the long notes, shortened, with their size
    (cut,) = body["cut"]
    assert cut["panelId"] == "panel-00" and cut["cut"] == "shortened" and cut["strings"] >= 1


# --- versions, ETag, agents' edits ---------------------------------------------------------


def test_the_answer_carries_every_version_and_an_agent_edit_merges(
    server: ServerProcess,
) -> None:
    with client(server, f"edit-{uuid.uuid4().hex[:6]}") as api:
        fill(api, 3)
        first = context(api, panels="panel-01,panel-00")
        body = first.json()
        assert [p["panelId"] for p in body["panels"]] == ["panel-01", "panel-00"]
        seen = {p["panelId"]: p["version"] for p in body["panels"]}
        assert first.headers["X-Panel-Versions"] == body["versions"]
        assert body["versions"] == f"panel-01={seen['panel-01']},panel-00={seen['panel-00']}"
        assert first.headers["ETag"].startswith('"ctx-')
        not_modified = api.get(
            "/context",
            params={"panels": "panel-01,panel-00"},
            headers={"If-None-Match": first.headers["ETag"]},
        )
        assert not_modified.status_code == 304
        assert not_modified.headers["ETag"] == first.headers["ETag"]
        # Someone edits panel-01; the agent's edit against the version it saw merges.
        other = api.patch(
            "/panel-01",
            json={"patches": [{"op": "replace", "path": "/$state/title", "value": "X"}]},
        )
        assert other.status_code == 200
        agent = api.patch(
            "/panel-01",
            json={
                "patches": [{"op": "add", "path": "/$state/agentNote", "value": "checked"}],
                "version": seen["panel-01"],
                "triggeredBy": "ai",
            },
        )
        assert agent.status_code == 200, agent.text
        assert agent.json()["merged"] is True
        after = context(api, panels="panel-01,panel-00")
        assert after.headers["ETag"] != first.headers["ETag"]
        assert after.json()["panels"][0]["version"] == agent.json()["version"]
        assert '"agentNote": "checked"' in after.json()["context"] or (
            '"agentNote":"checked"' in after.json()["context"]
        )
        again = api.get(
            "/context",
            params={"panels": "panel-01,panel-00"},
            headers={"If-None-Match": first.headers["ETag"]},
        )
        assert again.status_code == 200  # the old ETag no longer matches


def test_chosen_panels_that_do_not_exist_are_listed(server: ServerProcess) -> None:
    with client(server, f"missing-{uuid.uuid4().hex[:6]}") as api:
        fill(api, 2)
        body = context(api, panels="panel-01,nope,panel-01", panel="a,b").json()
        assert [p["panelId"] for p in body["panels"]] == ["panel-01"]
        assert body["missing"] == ["nope", "a,b"]
        assert '[Not found: 2 panels: "nope", "a,b"]' in body["context"]


# --- changes --------------------------------------------------------------------------------


def test_recent_changes_say_who_changed_what(server: ServerProcess) -> None:
    with client(server, f"changes-{uuid.uuid4().hex[:6]}") as api:
        fill(api, 3)
        patched = api.patch(
            "/panel-02",
            json={
                "patches": [{"op": "replace", "path": "/$state/title", "value": "Renamed"}],
                "triggeredBy": "ai",
                "triggerSource": "planner",
            },
        )
        assert patched.status_code == 200
        body = context(api, recentChanges=50).json()
        kinds = {change["triggeredBy"] for change in body["changes"]}
        assert kinds == {"user", "ai", "system"}
        newest = body["changes"][0]
        assert (newest["panelId"], newest["version"]) == ("panel-02", patched.json()["version"])
        assert newest["summary"] == 'replace /$state/title = "Renamed"'
        text = body["context"]
        line = next(line for line in text.split("\n") if "Renamed" in line)
        assert f'"panel-02" v{newest["version"]} by ai ("planner", subject "agent")' in line
        assert " by user " in text and " by system " in text
        assert all(change["shown"] for change in body["changes"])
        only_two = context(api, recentChanges=2).json()
        assert len(only_two["changes"]) == 2 and only_two["olderChangesNotListed"] is True


def test_changes_since_a_time_or_the_versions_an_agent_saw(server: ServerProcess) -> None:
    with client(server, f"since-{uuid.uuid4().hex[:6]}") as api:
        fill(api, 3)
        seen = context(api).json()["versions"]
        moment = datetime.now(UTC).isoformat()
        edit = {"patches": [{"op": "add", "path": "/$state/flag", "value": True}]}
        first = api.patch("/panel-00", json={**edit, "triggeredBy": "system"})
        second = api.patch("/panel-02", json=edit)
        assert first.status_code == second.status_code == 200
        by_versions = context(api, changesSince=seen).json()["changes"]
        by_time = context(api, changesSince=moment).json()["changes"]
        expected = [("panel-02", second.json()["version"]), ("panel-00", first.json()["version"])]
        assert [(c["panelId"], c["version"]) for c in by_versions] == expected
        assert [(c["panelId"], c["version"]) for c in by_time] == expected
        assert [c["triggeredBy"] for c in by_time] == ["user", "system"]
        one_panel = context(api, panels="panel-00", changesSince=first.json()["version"] - 1)
        assert [c["version"] for c in one_panel.json()["changes"]] == [first.json()["version"]]


# --- the cache ----------------------------------------------------------------------------


def test_repeated_calls_on_unchanged_panels_are_served_from_the_cache(
    server: ServerProcess,
) -> None:
    with client(server, f"cache-{uuid.uuid4().hex[:6]}") as api:
        fill(api, 5)
        before = cache_stats(server)
        first = context(api, maxTokens=1000, recentChanges=5)
        after_first = cache_stats(server)
        assert after_first["contextRenders"] == before["contextRenders"] + 1
        assert first.headers["X-Context-Cache"] == "rendered"
        for _ in range(3):
            again = context(api, maxTokens=1000, recentChanges=5)
            assert again.headers["X-Context-Cache"] == "hit"
            assert again.content == first.content
        after_hits = cache_stats(server)
        assert after_hits["contextRenders"] == after_first["contextRenders"]  # no rendering
        assert after_hits["contextCacheHits"] == after_first["contextCacheHits"] + 3
        other = context(api, maxTokens=2000, recentChanges=5)  # other options: rendered
        assert other.headers["X-Context-Cache"] == "rendered"
        edited = api.patch(
            "/panel-03", json={"patches": [{"op": "add", "path": "/$state/x", "value": 1}]}
        )
        assert edited.status_code == 200
        fresh = context(api, maxTokens=1000, recentChanges=5)
        assert fresh.headers["X-Context-Cache"] == "rendered"  # a panel changed
        assert fresh.json()["changes"][0]["version"] == edited.json()["version"]
        assert cache_stats(server)["contextRenders"] == after_hits["contextRenders"] + 2
        unchanged_panels = context(api, panels="panel-00,panel-01", maxTokens=1000)
        assert unchanged_panels.headers["X-Context-Cache"] == "rendered"
        assert (
            context(api, panels="panel-00,panel-01", maxTokens=1000).headers["X-Context-Cache"]
            == "hit"
        )


def test_the_cache_counters_need_a_server_admin(server: ServerProcess) -> None:
    response = httpx.get(
        f"{server.http}/api/admin/context-cache",
        headers={"Authorization": f"Bearer {token('agent', {'ws': 'admin'})}"},
    )
    assert response.status_code == 403


# --- what the endpoint refuses --------------------------------------------------------------


def test_a_reader_may_ask_and_others_may_not(server: ServerProcess) -> None:
    workspace = f"auth-{uuid.uuid4().hex[:6]}"
    with client(server, workspace) as api:
        fill(api, 1)
    with client(server, workspace, role="read") as reader:
        assert reader.get("/context").status_code == 200
    with client(server, "elsewhere") as stranger:
        forbidden = httpx.get(
            f"{server.http}/api/state/{workspace}/context", headers=stranger.headers
        )
        assert forbidden.status_code == 403
    assert httpx.get(f"{server.http}/api/state/{workspace}/context").status_code == 401


@pytest.mark.parametrize(
    "params",
    [
        {"format": "xml"},
        {"maxTokens": "10"},
        {"maxTokens": "2000000"},
        {"maxTokens": "many"},
        {"panels": ""},
        {"panels": "a,..,b"},
        {"changesSince": "yesterday"},
        {"changesSince": "2025-01-02T10:00:00"},  # no zone
        {"changesSince": "p1=x"},
        {"changesSince": "1", "recentChanges": "2"},
        {"recentChanges": "1000"},
    ],
)
def test_bad_queries_are_refused(server: ServerProcess, params: dict[str, str]) -> None:
    with client(server, "bad") as api:
        response = api.get("/context", params=params)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "bad_request"


def test_context_is_not_a_panel_id_over_rest(server: ServerProcess) -> None:
    with client(server, "reserved") as api:
        for method in ("PUT", "PATCH", "DELETE", "POST"):
            response = api.request(method, "/context", json={"state": {"$state": {}}})
            assert response.status_code == 405, method
            assert response.json()["error"] == "method_not_allowed"
        empty = context(api).json()
        assert empty["panels"] == [] and "0 panels" in empty["context"]
