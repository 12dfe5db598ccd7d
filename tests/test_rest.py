"""The JSON face over HTTP: JSON Patch (with the public conformance suite), PUT, DELETE,
history, time travel, revert, and what bad input gets."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from crdt_state.jsonpatch import parse_patch
from crdt_state.patch_plan import apply_to_json

from .conftest import token
from .server import ServerProcess

SUITE = Path(__file__).parent / "conformance" / "json-patch-tests"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path_factory.mktemp("rest"), env={"CRDT_STATE_MAX_BODY_BYTES": "200000"}
    ).start()
    yield process
    process.stop()


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {token('agent', {'ws': 'admin'})}"}
    with httpx.Client(base_url=f"{server.http}/api/state/ws", headers=headers) as client:
        yield client


def new_panel(api: httpx.Client, state: dict[str, Any]) -> str:
    panel = uuid.uuid4().hex[:12]
    response = api.put(f"/{panel}", json={"state": {"$state": state}})
    assert response.status_code == 200 and response.json()["created"] is True, response.text
    return panel


def state_of(api: httpx.Client, panel: str) -> tuple[dict[str, Any], int]:
    response = api.get(f"/{panel}")
    assert response.status_code == 200, response.text
    body = response.json()
    return body["state"]["$state"], body["version"]


def prefixed(operations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for operation in operations:
        operation = dict(operation)
        for member in ("path", "from"):
            if isinstance(operation.get(member), str):
                operation[member] = "/$state/doc" + operation[member]
        out.append(operation)
    return out


def conformance_cases() -> list[Any]:
    cases = []
    for name in ("tests.json", "spec_tests.json"):
        for number, record in enumerate(json.loads((SUITE / name).read_text())):
            if record.get("disabled") or "patch" not in record:
                continue
            if record.get("comment") == "invalid JSON Pointer token":
                continue  # the prefix would make its bad pointer valid
            label = f"{name}#{number}: {record.get('comment', '')}"
            cases.append(pytest.param(record, id=label[:80]))
    return cases


@pytest.mark.parametrize("record", conformance_cases())
def test_conformance_suite_through_the_api(api, record):
    panel = new_panel(api, {"doc": record["doc"]})
    before, version = state_of(api, panel)
    response = api.patch(f"/{panel}", json={"patches": prefixed(record["patch"])})
    if "expected" in record:
        assert response.status_code == 200, response.text
        after, new_version = state_of(api, panel)
        assert after == {"doc": record["expected"]}
        assert response.json()["version"] == new_version
    else:
        assert response.status_code in (409, 422), response.text
        assert response.json()["error"] in (
            "invalid_patch",
            "path_not_found",
            "test_failed",
            "invalid_value",
        )
        assert state_of(api, panel) == (before, version)  # nothing half-applied


def test_a_patch_is_one_version_and_answers_with_its_inverse(api):
    panel = new_panel(api, {"a": 1, "list": [1, 2]})
    _, version = state_of(api, panel)
    patch = [
        {"op": "replace", "path": "/$state/a", "value": 2},
        {"op": "add", "path": "/$state/list/-", "value": 3},
        {"op": "add", "path": "/$computed/total", "value": 6},
    ]
    answer = api.patch(
        f"/{panel}",
        json={
            "patches": patch,
            "version": version,
            "triggeredBy": "ai",
            "triggerSource": "planner",
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["version"] == version + 1
    assert body["appliedPatches"] == 3 and body["merged"] is False
    full = api.get(f"/{panel}").json()["state"]
    assert full == {"$state": {"a": 2, "list": [1, 2, 3]}, "$computed": {"total": 6}}
    undone = api.patch(f"/{panel}", json={"patches": body["inversePatch"]})
    assert undone.status_code == 200
    assert api.get(f"/{panel}").json()["state"] == {
        "$state": {"a": 1, "list": [1, 2]},
        "$computed": {},
    }
    entry = api.get(f"/{panel}/history", params={"limit": 2}).json()["history"][1]
    assert (entry["triggeredBy"], entry["triggerSource"], entry["subject"]) == (
        "ai",
        "planner",
        "agent",
    )


def test_the_raw_json_patch_media_type_is_accepted(api):
    panel = new_panel(api, {"a": 1})
    response = api.patch(
        f"/{panel}",
        content=b'[{"op":"remove","path":"/$state/a"}]',
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 200, response.text
    assert state_of(api, panel)[0] == {}


def test_dry_run_shows_the_result_and_changes_nothing(api):
    panel = new_panel(api, {"a": 1})
    before = state_of(api, panel)
    response = api.patch(
        f"/{panel}",
        params={"dryRun": "true"},
        json={"patches": [{"op": "replace", "path": "/$state/a", "value": 9}]},
    )
    assert response.status_code == 200
    assert response.json()["state"]["$state"] == {"a": 9}
    assert state_of(api, panel) == before


def test_an_idempotency_key_makes_a_retry_return_the_first_answer(api):
    panel = new_panel(api, {"n": []})
    patch = {"patches": [{"op": "add", "path": "/$state/n/-", "value": "once"}]}
    headers = {"Idempotency-Key": "retry-1"}
    first = api.patch(f"/{panel}", json=patch, headers=headers)
    second = api.patch(f"/{panel}", json=patch, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert state_of(api, panel)[0] == {"n": ["once"]}


def test_a_stale_version_is_merged_unless_the_caller_asks_for_strictness(api):
    panel = new_panel(api, {"obj": {"a": 1, "b": 1}, "list": ["x", "y"]})
    _, old = state_of(api, panel)
    api.patch(
        f"/{panel}",
        json={
            "patches": [
                {"op": "replace", "path": "/$state/obj/a", "value": 2},
                {"op": "add", "path": "/$state/list/0", "value": "w"},
            ]
        },
    )
    # Computed against `old`: index 1 meant "y" then.
    stale = [
        {"op": "replace", "path": "/$state/obj/b", "value": 2},
        {"op": "remove", "path": "/$state/list/1"},
    ]
    strict = api.patch(
        f"/{panel}", json={"patches": stale, "version": old}, headers={"If-Match": f'"{old}"'}
    )
    assert strict.status_code == 409 and strict.json()["error"] == "version_conflict"
    assert strict.json()["currentVersion"] == old + 1
    merged = api.patch(f"/{panel}", json={"patches": stale, "version": old})
    assert merged.status_code == 200, merged.text
    assert merged.json()["merged"] is True
    assert state_of(api, panel)[0] == {"obj": {"a": 2, "b": 2}, "list": ["w", "x"]}


def test_a_stale_patch_into_a_container_deleted_since_is_a_conflict(api):
    panel = new_panel(api, {"obj": {"a": 1}})
    _, old = state_of(api, panel)
    api.patch(f"/{panel}", json={"patches": [{"op": "remove", "path": "/$state/obj"}]})
    before = state_of(api, panel)
    stale = api.patch(
        f"/{panel}",
        json={"version": old, "patches": [{"op": "replace", "path": "/$state/obj/a", "value": 2}]},
    )
    assert stale.status_code == 409 and stale.json()["error"] == "path_not_found"
    assert state_of(api, panel) == before


def test_put_replaces_the_state_and_a_stale_version_conflicts(api):
    panel = new_panel(api, {"keep": {"x": 1}, "drop": True})
    _, version = state_of(api, panel)
    replaced = api.put(
        f"/{panel}", json={"state": {"$state": {"keep": {"x": 1}, "new": 2}}, "version": version}
    )
    assert replaced.status_code == 200, replaced.text
    assert state_of(api, panel)[0] == {"keep": {"x": 1}, "new": 2}
    conflict = api.put(f"/{panel}", json={"state": {"$state": {}}, "version": version})
    assert conflict.status_code == 409
    assert conflict.json() | {"message": ""} == {
        "error": "version_conflict",
        "message": "",
        "currentVersion": version + 1,
    }


def test_time_travel_and_revert(api):
    panel = new_panel(api, {"step": 0})
    seen = {}
    for step in range(1, 4):
        answer = api.patch(
            f"/{panel}",
            json={"patches": [{"op": "replace", "path": "/$state/step", "value": step}]},
        ).json()
        seen[answer["version"]] = {"step": step}
    for version, state in seen.items():
        assert api.get(f"/{panel}", params={"version": version}).json()["state"]["$state"] == state
    target = min(seen)
    reverted = api.post(f"/{panel}/revert", json={"targetVersion": target})
    assert reverted.status_code == 200, reverted.text
    assert state_of(api, panel)[0] == seen[target]
    last = api.get(f"/{panel}/history", params={"limit": 1}).json()["history"][0]
    assert last["changeType"] == "reverted" and last["version"] == reverted.json()["version"]


def test_history_pages_and_replays_to_the_current_state(api):
    panel = new_panel(api, {"items": []})
    for i in range(12):
        api.patch(
            f"/{panel}",
            json={"patches": [{"op": "add", "path": "/$state/items/0", "value": {"i": i}}]},
        )
    page = api.get(f"/{panel}/history", params={"limit": 5, "offset": 5}).json()
    assert page["totalChanges"] == 14  # created, the PUT, 12 patches
    assert [e["version"] for e in page["history"]] == [9, 8, 7, 6, 5]
    everything = api.get(f"/{panel}/history", params={"limit": 1000}).json()["history"]
    view: Any = {"$state": {}, "$computed": {}}
    for entry in reversed(everything):
        view = apply_to_json(view, parse_patch(entry["patch"]))
    assert view == api.get(f"/{panel}").json()["state"]


def test_delete_then_recreate_starts_a_new_epoch(api):
    panel = new_panel(api, {"a": 1})
    epoch = api.get(f"/{panel}").json()["epoch"]
    deleted = api.delete(f"/{panel}")
    assert deleted.status_code == 200, deleted.text
    assert api.get(f"/{panel}").status_code == 404
    assert api.get(f"/{panel}/history").json()["totalChanges"] == 3  # history is kept
    again = api.put(f"/{panel}", json={"state": {"$state": {"b": 2}}})
    assert again.status_code == 200 and again.json()["created"] is True
    body = api.get(f"/{panel}").json()
    assert body["epoch"] != epoch and body["state"]["$state"] == {"b": 2}


# -- bad input: the documented status and code, and nothing changed ------------------------


BAD_PATCHES = [
    (b"{not json", "application/json", 400, "bad_request"),
    (
        b'{"patches": [{"op": "frobnicate", "path": "/$state/a"}]}',
        "application/json",
        422,
        "invalid_patch",
    ),
    (
        b'{"patches": [{"op": "add", "path": "$state/a", "value": 1}]}',
        "application/json",
        422,
        "invalid_patch",
    ),
    (
        b'{"patches": [{"op": "add", "path": "/$state/a~2", "value": 1}]}',
        "application/json",
        422,
        "invalid_patch",
    ),
    (
        b'{"patches": [{"op": "add", "path": "/$meta/epoch", "value": "x"}]}',
        "application/json",
        422,
        "invalid_patch",
    ),
    (
        b'{"patches": [{"op": "add", "path": "/$state/a", "value": 9007199254740993}]}',
        "application/json",
        422,
        "invalid_value",
    ),
    (
        b'{"patches": [{"op": "remove", "path": "/$state/missing"}]}',
        "application/json",
        409,
        "path_not_found",
    ),
    (
        b'{"patches": [{"op": "replace", "path": "/$state/a", "value": 5},'
        b' {"op": "test", "path": "/$state/a", "value": 1}]}',
        "application/json",
        409,
        "test_failed",
    ),
    (b'{"patches": {"op": "add"}}', "application/json", 422, "invalid_patch"),
    (b'{"version": "3", "patches": []}', "application/json", 400, "bad_request"),
    (b'{"patches": [], "triggeredBy": "robot"}', "application/json", 400, "bad_request"),
]


@pytest.mark.parametrize("body, content_type, status, code", BAD_PATCHES)
def test_bad_patches_get_their_code_and_change_nothing(api, body, content_type, status, code):
    panel = new_panel(api, {"a": 1})
    before = state_of(api, panel)
    response = api.patch(f"/{panel}", content=body, headers={"Content-Type": content_type})
    assert (response.status_code, response.json()["error"]) == (status, code), response.text
    assert response.json()["message"]
    assert state_of(api, panel) == before


def test_an_oversized_body_is_refused_with_413(api):
    panel = new_panel(api, {"a": 1})
    before = state_of(api, panel)
    huge = {"patches": [{"op": "add", "path": "/$state/big", "value": "x" * 300_000}]}
    response = api.patch(f"/{panel}", json=huge)
    assert response.status_code == 413 and response.json()["error"] == "too_large"
    assert state_of(api, panel) == before


def test_an_unknown_panel_is_404_and_a_reader_cannot_write(api, server):
    assert api.get("/nope").status_code == 404
    patch = {"patches": [{"op": "add", "path": "/$state/a", "value": 1}]}
    assert api.patch("/nope", json=patch).json()["error"] == "panel_not_found"
    panel = new_panel(api, {"a": 1})
    reader = {"Authorization": f"Bearer {token('rita', {'ws': 'read'})}"}
    response = httpx.patch(f"{server.http}/api/state/ws/{panel}", json=patch, headers=reader)
    assert response.status_code == 403
    writer = {"Authorization": f"Bearer {token('wes', {'ws': 'write'})}"}
    assert httpx.delete(f"{server.http}/api/state/ws/{panel}", headers=writer).status_code == 403


def test_bad_put_bodies_change_nothing(api):
    panel = new_panel(api, {"a": 1})
    before = state_of(api, panel)
    for body, status in [
        ({"state": {"$meta": {}}}, 422),
        ({"state": {"$state": [1]}}, 422),
        ({"nostate": 1}, 400),
        ({"state": {"$state": {"x": float("inf")}}}, 400),
    ]:
        try:
            response = api.put(f"/{panel}", json=body)
        except ValueError:  # httpx itself refuses to encode inf: send it raw
            response = api.put(
                f"/{panel}",
                content=b'{"state":{"$state":{"x":Infinity}}}',
                headers={"Content-Type": "application/json"},
            )
        assert response.status_code == status, (body, response.text)
    assert state_of(api, panel) == before


def test_ids_that_stores_and_channels_cannot_keep_apart_are_refused(server):
    headers = {"Authorization": f"Bearer {token('agent', {'*': 'admin'})}"}
    for path in ("/api/state/a:b/p", "/api/state/ws/" + "x" * 201):
        response = httpx.put(
            f"{server.http}{path}", headers=headers, json={"state": {"$state": {}}}
        )
        assert response.status_code == 400, path
        assert response.json()["error"] == "bad_request"


def test_unknown_paths_and_methods_answer_json_errors(server: ServerProcess) -> None:
    nowhere = httpx.get(f"{server.http}/api/nothing/here")
    assert nowhere.status_code == 404
    assert nowhere.json()["error"] == "not_found" and "/api/nothing/here" in nowhere.text
    wrong = httpx.post(f"{server.http}/health")
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"
    assert "GET" in wrong.headers["allow"]


def test_delete_answers_like_every_write(api: httpx.Client) -> None:
    panel = new_panel(api, {"a": 1})
    answer = api.delete(f"/{panel}")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["success"] is True and body["deleted"] is True
    assert answer.headers["etag"] == f'"{body["version"]}"'
