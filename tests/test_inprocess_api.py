"""The REST API in this process (tests/inprocess.py): each request a user relies on, its
status and its answer, and, for every error, that nothing changed. tests/test_rest.py drives
the same face through a real server process; this file is the fast, request-level side."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from crdt_state.app import App

from .conftest import token
from .inprocess import client_of, inprocess_client, running_app

MAX_BODY = 10_000
JSON = {"Content-Type": "application/json"}
Snapshot = tuple[dict[str, Any], int]


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(tmp_path / "data", max_body_bytes=MAX_BODY) as running:
        yield running


@pytest.fixture
async def api(app: App) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(app, token("agent", {"ws": "admin"})) as client:
        yield client


def url(panel: str, tail: str = "") -> str:
    return f"/api/state/ws/{panel}{tail}"


async def new_panel(api: httpx.AsyncClient, state: dict[str, Any]) -> str:
    panel = uuid.uuid4().hex[:12]
    response = await api.put(url(panel), json={"state": {"$state": state}})
    assert response.status_code == 200 and response.json()["created"] is True, response.text
    return panel


async def snapshot(api: httpx.AsyncClient, panel: str) -> Snapshot:
    """(the whole state, the version) as GET answers them; the ETag must agree."""
    response = await api.get(url(panel))
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["etag"] == f'"{body["version"]}"'
    return body["state"], body["version"]


async def patch(api: httpx.AsyncClient, panel: str, *ops: dict[str, Any], **extra: Any) -> Any:
    response = await api.patch(url(panel), json={"patches": list(ops), **extra})
    assert response.status_code == 200, response.text
    return response.json()


# -- the error map: status, code, details, and nothing changed ---------------------------------

Send = Callable[[App, httpx.AsyncClient, str, int], Awaitable[httpx.Response]]
SET_A = {"op": "replace", "path": "/$state/a", "value": 2}


async def malformed_json(app: App, api: httpx.AsyncClient, panel: str, v: int) -> httpx.Response:
    return await api.patch(url(panel), content=b'{"patches": [', headers=JSON)


async def no_token(app: App, api: httpx.AsyncClient, panel: str, v: int) -> httpx.Response:
    async with client_of(app) as anonymous:
        return await anonymous.patch(url(panel), json={"patches": [SET_A]})


async def read_token(app: App, api: httpx.AsyncClient, panel: str, v: int) -> httpx.Response:
    async with client_of(app, token("rita", {"ws": "read"})) as reader:
        return await reader.patch(url(panel), json={"patches": [SET_A]})


async def unknown_panel(app: App, api: httpx.AsyncClient, panel: str, v: int) -> httpx.Response:
    return await api.patch(url("no-such-panel"), json={"patches": [SET_A]})


async def stale_if_match(app: App, api: httpx.AsyncClient, panel: str, v: int) -> httpx.Response:
    return await api.patch(
        url(panel), json={"patches": [SET_A]}, headers={"If-Match": f'"{v - 1}"'}
    )


async def stale_strict(app: App, api: httpx.AsyncClient, panel: str, v: int) -> httpx.Response:
    body = {"patches": [SET_A], "version": v - 1, "strict": True}
    return await api.patch(url(panel), json=body)


async def failing_test(app: App, api: httpx.AsyncClient, panel: str, v: int) -> httpx.Response:
    ops = [SET_A, {"op": "test", "path": "/$state/a", "value": 1}]
    return await api.patch(url(panel), json={"patches": ops})


async def unknown_op(app: App, api: httpx.AsyncClient, panel: str, v: int) -> httpx.Response:
    ops = [SET_A, {"op": "frobnicate", "path": "/$state/a"}]
    return await api.patch(url(panel), json={"patches": ops})


async def too_large(app: App, api: httpx.AsyncClient, panel: str, v: int) -> httpx.Response:
    big = {"op": "add", "path": "/$state/big", "value": "x" * MAX_BODY}
    return await api.patch(url(panel), json={"patches": [big]})


async def huge_integer(app: App, api: httpx.AsyncClient, panel: str, v: int) -> httpx.Response:
    ops = [SET_A, {"op": "add", "path": "/$state/big", "value": 2**53}]
    return await api.patch(url(panel), json={"patches": ops})


async def infinity(app: App, api: httpx.AsyncClient, panel: str, v: int) -> httpx.Response:
    # JSON cannot spell it: 1e400 overflows a double, and the body is refused as JSON.
    content = b'{"patches": [{"op": "add", "path": "/$state/inf", "value": 1e400}]}'
    return await api.patch(url(panel), content=content, headers=JSON)


ERRORS = [
    pytest.param(malformed_json, 400, "bad_request", id="malformed-json"),
    pytest.param(no_token, 401, "unauthorized", id="no-token"),
    pytest.param(read_token, 403, "forbidden", id="read-token-writes"),
    pytest.param(unknown_panel, 404, "panel_not_found", id="unknown-panel"),
    pytest.param(stale_if_match, 409, "version_conflict", id="stale-if-match"),
    pytest.param(stale_strict, 409, "version_conflict", id="stale-strict"),
    pytest.param(failing_test, 409, "test_failed", id="failing-test-op"),
    pytest.param(unknown_op, 422, "invalid_patch", id="unknown-op"),
    pytest.param(too_large, 413, "too_large", id="over-max-body"),
    pytest.param(huge_integer, 422, "invalid_value", id="integer-over-2^53"),
    pytest.param(infinity, 400, "bad_request", id="non-finite-number"),
]


@pytest.mark.parametrize("send, status, code", ERRORS)
async def test_each_error_has_its_status_and_code_and_changes_nothing(
    app: App, api: httpx.AsyncClient, send: Send, status: int, code: str
) -> None:
    panel = await new_panel(api, {"a": 1, "list": [1]})
    before = await snapshot(api, panel)
    response = await send(app, api, panel, before[1])
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and body["message"], body
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    if code == "version_conflict":
        assert body["currentVersion"] == before[1]
    if code == "test_failed":
        assert (body["operation"], body["path"]) == (1, "/$state/a")
    if code == "invalid_value":
        assert body["path"] == "/$state/big"
    if code == "too_large":
        assert body["limit"] == MAX_BODY
    assert await snapshot(api, panel) == before
    assert (await api.get(url("no-such-panel"))).status_code == 404


# -- writes -------------------------------------------------------------------------------------


async def test_put_creates_then_replaces_and_patch_answers_its_inverse(
    api: httpx.AsyncClient,
) -> None:
    created = await api.put(url("p"), json={"state": {"$state": {"a": 1, "list": [1, 2]}}})
    assert created.status_code == 200, created.text
    assert created.json()["created"] is True
    assert created.headers["etag"] == f'"{created.json()["version"]}"'
    again = await api.put(url("p"), json={"state": {"$state": {"a": 1, "list": [1, 2]}}})
    assert again.status_code == 200 and again.json()["created"] is False
    before, version = await snapshot(api, "p")

    response = await api.patch(
        url("p"),
        json={
            "patches": [
                {"op": "replace", "path": "/$state/a", "value": 2},
                {"op": "add", "path": "/$state/list/-", "value": 3},
            ]
        },
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["version"] == version + 1
    assert (answer["appliedPatches"], answer["merged"]) == (2, False)
    assert response.headers["etag"] == f'"{version + 1}"'
    assert (await snapshot(api, "p"))[0]["$state"] == {"a": 2, "list": [1, 2, 3]}

    undone = await patch(api, "p", *answer["inversePatch"])
    assert undone["version"] == version + 2
    assert await snapshot(api, "p") == (before, version + 2)


async def test_one_idempotency_key_applies_once(api: httpx.AsyncClient) -> None:
    panel = await new_panel(api, {"n": []})
    body = {"patches": [{"op": "add", "path": "/$state/n/-", "value": "x"}]}
    keyed = [await api.patch(url(panel), json=body, headers={"Idempotency-Key": "k1"})]
    keyed.append(await api.patch(url(panel), json=body, headers={"Idempotency-Key": "k1"}))
    assert [r.status_code for r in keyed] == [200, 200]
    assert keyed[0].json() == keyed[1].json()
    assert (await snapshot(api, panel))[0]["$state"] == {"n": ["x"]}

    unkeyed = [await api.patch(url(panel), json=body) for _ in range(2)]
    assert [r.json()["version"] for r in unkeyed] == [
        keyed[0].json()["version"] + i for i in (1, 2)
    ]
    assert (await snapshot(api, panel))[0]["$state"] == {"n": ["x", "x", "x"]}


async def test_both_patch_media_types(api: httpx.AsyncClient) -> None:
    panel = await new_panel(api, {"a": 1})
    bare = await api.patch(
        url(panel),
        content=b'[{"op": "add", "path": "/$state/b", "value": 2}]',
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert bare.status_code == 200, bare.text
    wrapped = await patch(api, panel, {"op": "remove", "path": "/$state/a"})
    assert wrapped["version"] == bare.json()["version"] + 1
    assert (await snapshot(api, panel))[0]["$state"] == {"b": 2}


async def test_dry_run_shows_the_result_and_changes_nothing(api: httpx.AsyncClient) -> None:
    panel = await new_panel(api, {"a": 1})
    before = await snapshot(api, panel)
    response = await api.patch(url(panel), params={"dryRun": "true"}, json={"patches": [SET_A]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dryRun"] is True and body["version"] == before[1]
    assert body["state"]["$state"] == {"a": 2}
    assert await snapshot(api, panel) == before


async def test_a_stale_version_is_merged_and_the_edit_since_survives(
    api: httpx.AsyncClient,
) -> None:
    panel = await new_panel(api, {"a": 1, "b": 1})
    _, old = await snapshot(api, panel)
    await patch(api, panel, {"op": "replace", "path": "/$state/a", "value": 2})
    merged = await patch(
        api, panel, {"op": "replace", "path": "/$state/b", "value": 2}, version=old
    )
    assert (merged["merged"], merged["version"]) == (True, old + 2)
    assert await snapshot(api, panel) == ({"$state": {"a": 2, "b": 2}, "$computed": {}}, old + 2)


async def test_a_large_stale_patch_is_merged_too(api: httpx.AsyncClient) -> None:
    """A stale patch of 1,000 values or more takes the bulk path (json_edits.stale_update)."""
    panel = await new_panel(api, {"a": 1, "list": [0]})
    _, old = await snapshot(api, panel)
    await patch(api, panel, {"op": "replace", "path": "/$state/a", "value": 2})
    rows = [{"n": n} for n in range(150)] + [n % 10 for n in range(1500)]  # under 10 KB
    merged = await patch(
        api, panel, {"op": "add", "path": "/$state/list/-", "value": rows}, version=old
    )
    assert (merged["merged"], merged["version"]) == (True, old + 2)
    state = {"$state": {"a": 2, "list": [0, rows]}, "$computed": {}}
    assert await snapshot(api, panel) == (state, old + 2)


# -- history, time travel, revert, delete ------------------------------------------------------


async def test_history_time_travel_and_revert(api: httpx.AsyncClient) -> None:
    panel = await new_panel(api, {"step": 0})
    _, first = await snapshot(api, panel)
    for step in (1, 2):
        await patch(api, panel, {"op": "replace", "path": "/$state/step", "value": step})

    history = (await api.get(url(panel, "/history"))).json()
    assert history["totalChanges"] == first + 2
    entries = history["history"]
    assert [e["version"] for e in entries] == list(range(first + 2, 0, -1))
    assert entries[0]["changeType"] == "updated" and entries[-1]["changeType"] == "created"
    assert entries[0]["patch"] == [{"op": "replace", "path": "/$state/step", "value": 2}]
    assert entries[0]["previousVersion"] == first + 1 and entries[0]["subject"] == "agent"

    old = await api.get(url(panel), params={"version": first})
    assert old.status_code == 200, old.text
    assert old.json()["state"]["$state"] == {"step": 0}
    assert (old.json()["version"], old.json()["currentVersion"]) == (first, first + 2)

    reverted = await api.post(url(panel, "/revert"), json={"targetVersion": first})
    assert reverted.status_code == 200, reverted.text
    assert (reverted.json()["version"], reverted.json()["revertedTo"]) == (first + 3, first)
    assert await snapshot(api, panel) == ({"$state": {"step": 0}, "$computed": {}}, first + 3)
    last = (await api.get(url(panel, "/history"), params={"limit": 1})).json()["history"]
    assert last[0]["changeType"] == "reverted"


async def test_delete_then_get_is_404_and_a_new_put_starts_a_new_epoch(
    api: httpx.AsyncClient,
) -> None:
    panel = await new_panel(api, {"a": 1})
    epoch = (await api.get(url(panel))).json()["epoch"]
    deleted = await api.delete(url(panel))
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted"] is True
    gone = await api.get(url(panel))
    assert (gone.status_code, gone.json()["error"]) == (404, "panel_not_found")
    again = await api.put(url(panel), json={"state": {"$state": {"b": 2}}})
    assert again.status_code == 200 and again.json()["created"] is True
    body = (await api.get(url(panel))).json()
    assert body["epoch"] != epoch
    assert body["state"]["$state"] == {"b": 2}


# -- operations and numbers ---------------------------------------------------------------------


async def test_health_ready_and_metrics(tmp_path: Path) -> None:
    async with inprocess_client(tmp_path / "ops", token=token("agent")) as api:
        health = await api.get("/health")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        ready = await api.get("/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
        assert ready.json()["checks"] == {"database": "ok", "logWrites": "ok"}
        await new_panel(api, {})
        metrics = await api.get("/metrics")
        assert metrics.status_code == 200
        assert "\ncrdt_state_rooms 1.0\n" in metrics.text  # prometheus-client writes floats


async def test_integral_floats_read_back_as_integers(api: httpx.AsyncClient) -> None:
    panel = await new_panel(api, {})
    await patch(
        api,
        panel,
        {"op": "add", "path": "/$state/one", "value": 1.0},
        {"op": "add", "path": "/$state/half", "value": 2.5},
    )
    state = (await api.get(url(panel))).json()["state"]["$state"]
    assert state == {"one": 1, "half": 2.5}
    assert (type(state["one"]), type(state["half"])) == (int, float)  # 1 == 1.0 in Python
