"""The Nexus design document's API section, as a client written from it alone would use it
(../shared/nexus-design/nexus-state-design.md, "API Specification" and "Redis Schema").

Every request below is the document's own example (its ids, bodies and content types); every
answer is checked for the document's status and fields, with the types its examples show.
Extra fields are allowed: the document is a floor, not a ceiling. The server runs as in
production: PostgreSQL, Redis and Git snapshots.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

from . import redis_server
from .conftest import token
from .openapi_check import check_response
from .server import ServerProcess

WS = "ws_456"
PANEL = "panel_789"
BASE = f"/api/state/{WS}"
AUTH = {"Authorization": f"Bearer {token('workspace-kernel', {WS: 'admin'})}"}
WAIT = 10.0


def timestamp(value: Any) -> datetime:
    """An ISO-8601 time with its zone, as the document's `"2025-12-19T12:30:00Z"`."""
    assert isinstance(value, str), value
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert moment.tzinfo is not None, value
    return moment


def fields(body: dict[str, Any], **types: type | tuple[type, ...]) -> None:
    """`body` has every named field, each of the given JSON type."""
    missing = [name for name in types if name not in body]
    assert not missing, f"missing {missing} in {body}"
    for name, kind in types.items():
        assert isinstance(body[name], kind) and not (
            kind is int and isinstance(body[name], bool)
        ), f"{name}: {body[name]!r} is not {kind}"


def error(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The document's error shape: `{"error": code, "message": ..., ...}`."""
    assert answer.status_code == status, answer.text
    body = answer.json()
    fields(body, error=str, message=str)
    assert body["error"] == code, body
    return body


@pytest.fixture(scope="module")
def nexus_state(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str) -> Iterator[ServerProcess]:
    """One server as the document deploys it (its Phase 3 Deployment's variables):
    PostgreSQL, Redis by host and port, Git snapshots under GIT_WORKSPACE_ROOT."""
    root = tmp_path_factory.mktemp("contract")
    redis = urlsplit(redis_server.url())
    assert redis.path in ("", "/", "/0"), "the design names no Redis database: it is 0"
    env = {
        "DATABASE_URL": pg_dsn,
        "REDIS_URL": "",
        "REDIS_HOST": redis.hostname or "127.0.0.1",
        "REDIS_PORT": str(redis.port or 6379),
        "GIT_WORKSPACE_ROOT": str(root / "state-snapshots"),
    }
    server = ServerProcess(Path(root / "data"), env=env).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(nexus_state: ServerProcess) -> Iterator[httpx.Client]:
    """Every answer is also checked against the OpenAPI document (its status listed, its body
    of the operation's schema, no field the document lacks): tests/openapi_check.py."""
    hooks = {"response": [check_response]}
    with httpx.Client(
        base_url=nexus_state.http, headers=AUTH, timeout=30, event_hooks=hooks
    ) as http:
        yield http


@pytest.fixture(scope="module")
def panel(api: httpx.Client) -> dict[str, Any]:
    """panel_789 as the document's examples have it: a counter, todos, a computed count.
    Answers the PUT that made it (the document's request 2)."""
    api.delete(f"{BASE}/{PANEL}")  # a rerun against the same database starts clean
    answer = api.put(
        f"{BASE}/{PANEL}",
        json={
            "state": {"$state": {"counter": 43, "todos": ["Task 1", "Task 2"]}},
            "triggeredBy": "user",
            "triggerSource": "increment_handler",
        },
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


# -- 1. Get Panel State -------------------------------------------------------------------------


def test_get_panel_state(api: httpx.Client, panel: dict[str, Any]) -> None:
    answer = api.get(f"{BASE}/{PANEL}")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    fields(body, panelId=str, workspaceId=str, state=dict, version=int, updatedAt=str)
    assert (body["panelId"], body["workspaceId"]) == (PANEL, WS)
    assert body["state"]["$state"]["counter"] == 43
    assert "$computed" in body["state"]
    assert body["version"] >= panel["version"]
    timestamp(body["updatedAt"])
    assert "history" not in body


def test_get_panel_state_at_a_version_and_with_history(
    api: httpx.Client, panel: dict[str, Any]
) -> None:
    version = panel["version"]
    later = api.patch(
        f"{BASE}/{PANEL}",
        json={"patches": [{"op": "replace", "path": "/$state/counter", "value": 50}]},
    )
    assert later.status_code == 200, later.text
    old = api.get(f"{BASE}/{PANEL}", params={"version": version})
    assert old.status_code == 200, old.text
    body = old.json()
    fields(body, panelId=str, workspaceId=str, state=dict, version=int, updatedAt=str)
    assert body["version"] == version and body["state"]["$state"]["counter"] == 43

    with_history = api.get(f"{BASE}/{PANEL}", params={"include_history": "true"}).json()
    fields(with_history, state=dict, version=int, history=list)
    assert with_history["history"], with_history
    newest = with_history["history"][0]
    fields(newest, id=int, changeType=str, patch=list, version=int, triggeredBy=str)
    timestamp(newest["occurredAt"])
    assert newest["version"] == with_history["version"]
    assert newest["patch"] == [{"op": "replace", "path": "/$state/counter", "value": 50}]


def test_get_an_unknown_panel(api: httpx.Client) -> None:
    error(api.get(f"{BASE}/panel_that_was_never_made"), 404, "panel_not_found")


# -- 2. Update Panel State (full replace) --------------------------------------------------------


def test_update_panel_state(api: httpx.Client, panel: dict[str, Any]) -> None:
    current = api.get(f"{BASE}/{PANEL}").json()["version"]
    answer = api.put(
        f"{BASE}/{PANEL}",
        headers={"Content-Type": "application/json"},
        json={
            "state": {"$state": {"counter": 44}, "$computed": {"todoCount": 2}},
            "version": current,
            "triggeredBy": "user",
            "triggerSource": "increment_handler",
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    fields(body, success=bool, version=int, updatedAt=str)
    assert body["success"] is True and body["version"] == current + 1
    timestamp(body["updatedAt"])
    state = api.get(f"{BASE}/{PANEL}").json()
    assert state["state"] == {"$state": {"counter": 44}, "$computed": {"todoCount": 2}}
    assert state["version"] == body["version"]


def test_update_with_an_old_version_is_a_conflict(api: httpx.Client, panel: dict[str, Any]) -> None:
    current = api.get(f"{BASE}/{PANEL}").json()
    answer = api.put(
        f"{BASE}/{PANEL}",
        json={
            "state": {"$state": {"counter": 0}},
            "version": current["version"] - 1,
            "triggeredBy": "user",
        },
    )
    body = error(answer, 409, "version_conflict")
    fields(body, currentVersion=int)
    assert body["currentVersion"] == current["version"]
    assert api.get(f"{BASE}/{PANEL}").json() == current  # nothing changed


def test_the_workspace_kernel_state_client(api: httpx.Client, panel: dict[str, Any]) -> None:
    """The document's `StateClient.update_state` body, exactly: state, version, triggeredBy."""
    version = api.get(f"{BASE}/{PANEL}").json()["version"]
    answer = api.put(
        f"{BASE}/{PANEL}",
        json={"state": {"$state": {"counter": 45}}, "version": version, "triggeredBy": "user"},
    )
    answer.raise_for_status()
    assert answer.json()["version"] == version + 1


# -- 3. Patch Panel State ----------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/json-patch+json", "application/json"])
def test_patch_panel_state(api: httpx.Client, panel: dict[str, Any], content_type: str) -> None:
    api.put(f"{BASE}/{PANEL}", json={"state": {"$state": {"counter": 43, "todos": ["Task 1"]}}})
    version = api.get(f"{BASE}/{PANEL}").json()["version"]
    answer = api.patch(
        f"{BASE}/{PANEL}",
        headers={"Content-Type": content_type},
        content=orjson.dumps(
            {
                "patches": [
                    {"op": "replace", "path": "/$state/counter", "value": 44},
                    {"op": "add", "path": "/$state/todos/-", "value": "Task 3"},
                ],
                "version": version,
                "triggeredBy": "ai",
                "triggerSource": "ai_suggestion_apply",
            }
        ),
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    fields(body, success=bool, version=int, appliedPatches=int, updatedAt=str)
    assert (body["success"], body["version"], body["appliedPatches"]) == (True, version + 1, 2)
    timestamp(body["updatedAt"])
    state = api.get(f"{BASE}/{PANEL}").json()["state"]["$state"]
    assert state == {"counter": 44, "todos": ["Task 1", "Task 3"]}
    [entry] = api.get(f"{BASE}/{PANEL}/history", params={"limit": 1}).json()["history"]
    assert (entry["version"], entry["triggeredBy"]) == (version + 1, "ai")


def test_a_bare_json_patch_array_is_accepted_too(api: httpx.Client, panel: dict[str, Any]) -> None:
    answer = api.patch(
        f"{BASE}/{PANEL}",
        headers={"Content-Type": "application/json-patch+json"},
        content=b'[{"op": "replace", "path": "/$state/counter", "value": 7}]',
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["appliedPatches"] == 1
    assert api.get(f"{BASE}/{PANEL}").json()["state"]["$state"]["counter"] == 7


def test_a_failing_patch_changes_nothing(api: httpx.Client, panel: dict[str, Any]) -> None:
    before = api.get(f"{BASE}/{PANEL}").json()
    answer = api.patch(
        f"{BASE}/{PANEL}",
        headers={"Content-Type": "application/json-patch+json"},
        content=orjson.dumps(
            {
                "patches": [
                    {"op": "replace", "path": "/$state/counter", "value": 1},
                    {"op": "test", "path": "/$state/counter", "value": "not it"},
                ]
            }
        ),
    )
    error(answer, 409, "test_failed")
    assert api.get(f"{BASE}/{PANEL}").json() == before


# -- 4. Get State History ----------------------------------------------------------------------


def test_get_state_history(api: httpx.Client, panel: dict[str, Any]) -> None:
    answer = api.get(f"{BASE}/{PANEL}/history")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    fields(body, panelId=str, totalChanges=int, history=list)
    assert body["panelId"] == PANEL and body["totalChanges"] >= len(body["history"]) > 1
    ids = []
    for entry in body["history"]:
        fields(entry, id=int, changeType=str, patch=list, version=int, triggeredBy=str)
        assert entry["changeType"] in ("created", "updated", "deleted", "reverted")
        assert entry["triggeredBy"] in ("user", "ai", "system")
        timestamp(entry["occurredAt"])
        ids.append(entry["id"])
    assert len(set(ids)) == len(ids)
    versions = [entry["version"] for entry in body["history"]]
    assert versions == sorted(versions, reverse=True)  # newest first


def test_history_pages_and_time_window(api: httpx.Client, panel: dict[str, Any]) -> None:
    everything = api.get(f"{BASE}/{PANEL}/history", params={"limit": 1000}).json()["history"]
    page = api.get(f"{BASE}/{PANEL}/history", params={"limit": 2, "offset": 1}).json()
    assert page["history"] == everything[1:3]
    middle = everything[len(everything) // 2]
    since = api.get(
        f"{BASE}/{PANEL}/history", params={"since": middle["occurredAt"], "limit": 1000}
    ).json()["history"]
    assert since and all(
        timestamp(e["occurredAt"]) >= timestamp(middle["occurredAt"]) for e in since
    )
    until = api.get(
        f"{BASE}/{PANEL}/history", params={"until": middle["occurredAt"], "limit": 1000}
    ).json()["history"]
    assert until and all(
        timestamp(e["occurredAt"]) <= timestamp(middle["occurredAt"]) for e in until
    )
    error(api.get(f"{BASE}/{PANEL}/history", params={"limit": 1001}), 400, "bad_request")


# -- 5. Revert State to Version ----------------------------------------------------------------


def test_revert_state_to_version(api: httpx.Client, panel: dict[str, Any]) -> None:
    target = panel["version"]
    expected = api.get(f"{BASE}/{PANEL}", params={"version": target}).json()["state"]
    current = api.get(f"{BASE}/{PANEL}").json()["version"]
    answer = api.post(
        f"{BASE}/{PANEL}/revert",
        headers={"Content-Type": "application/json"},
        json={"targetVersion": target, "createSnapshot": True},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    fields(body, success=bool, version=int, revertedTo=int, snapshotId=str, updatedAt=str)
    assert (body["success"], body["revertedTo"], body["version"]) == (True, target, current + 1)
    timestamp(body["updatedAt"])
    assert api.get(f"{BASE}/{PANEL}").json()["state"] == expected
    [entry] = api.get(f"{BASE}/{PANEL}/history", params={"limit": 1}).json()["history"]
    assert entry["changeType"] == "reverted"


# -- 6. and 7. Workspace snapshots -------------------------------------------------------------


def test_create_state_snapshot(api: httpx.Client, panel: dict[str, Any]) -> None:
    api.put(f"{BASE}/panel_790", json={"state": {"$state": {"message": "Hello"}}})
    answer = api.post(
        f"{BASE}/snapshot",
        headers={"Content-Type": "application/json"},
        json={"type": "manual", "description": "Before major AI refactor", "commitToGit": True},
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    fields(
        body,
        snapshotId=str,
        panelCount=int,
        totalSizeBytes=int,
        gitCommitHash=str,
        createdAt=str,
    )
    assert body["panelCount"] >= 2 and body["totalSizeBytes"] > 0
    timestamp(body["createdAt"])


def test_get_workspace_state_snapshot(api: httpx.Client, panel: dict[str, Any]) -> None:
    api.put(f"{BASE}/panel_790", json={"state": {"$state": {"message": "Hello"}}})
    answer = api.get(f"{BASE}/snapshot")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    fields(body, workspaceId=str, panels=dict, totalPanels=int, snapshotAt=str)
    assert "gitCommit" in body
    timestamp(body["snapshotAt"])
    assert body["workspaceId"] == WS and body["totalPanels"] == len(body["panels"]) >= 2
    message = body["panels"]["panel_790"]
    fields(message, version=int)
    assert message["$state"] == {"message": "Hello"}
    live = api.get(f"{BASE}/{PANEL}").json()
    assert body["panels"][PANEL]["$state"] == live["state"]["$state"]
    assert body["panels"][PANEL]["version"] == live["version"]


def test_get_a_snapshot_at_a_git_commit(api: httpx.Client, panel: dict[str, Any]) -> None:
    api.put(f"{BASE}/panel_790", json={"state": {"$state": {"message": "At the commit"}}})
    taken = api.post(f"{BASE}/snapshot", json={"type": "manual", "commitToGit": True}).json()
    api.put(f"{BASE}/panel_790", json={"state": {"$state": {"message": "Later"}}})
    answer = api.get(f"{BASE}/snapshot", params={"git_commit": taken["gitCommitHash"]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    fields(body, workspaceId=str, panels=dict, totalPanels=int, snapshotAt=str, gitCommit=str)
    assert body["gitCommit"] == taken["gitCommitHash"]
    assert body["panels"]["panel_790"]["$state"] == {"message": "At the commit"}
    assert isinstance(body["panels"]["panel_790"]["version"], int)


# -- WebSocket API -----------------------------------------------------------------------------


class Socket:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(orjson.dumps(message).decode())

    async def next(self, kind: str) -> dict[str, Any]:
        while True:
            message = orjson.loads(await asyncio.wait_for(self.connection.recv(), WAIT))
            if message.get("type") == kind:
                return dict(message)


@pytest.fixture
async def socket(nexus_state: ServerProcess) -> AsyncIterator[Socket]:
    url = f"{nexus_state.ws}/ws/state/{WS}?token={token('graphstudio', {WS: 'read'})}"
    async with connect(url) as connection:
        yield Socket(connection)


async def test_websocket_subscribe_sync_update_unsubscribe(
    api: httpx.Client, panel: dict[str, Any], socket: Socket
) -> None:
    await socket.send({"type": "subscribe", "panelId": PANEL})
    sync = await socket.next("state_sync")
    fields(sync, type=str, panelId=str, state=dict, version=int, timestamp=str)
    timestamp(sync["timestamp"])
    assert sync["panelId"] == PANEL and "$state" in sync["state"]
    assert sync["state"] == api.get(f"{BASE}/{PANEL}").json()["state"]

    await socket.send({"type": "ping"})
    await socket.next("pong")

    answer = await asyncio.to_thread(
        api.patch,
        f"{BASE}/{PANEL}",
        json={"patches": [{"op": "replace", "path": "/$state/counter", "value": 99}]},
    )
    update = await socket.next("state_update")
    fields(update, type=str, panelId=str, patch=list, version=int, triggeredBy=str, timestamp=str)
    timestamp(update["timestamp"])
    assert update["version"] == answer.json()["version"] == sync["version"] + 1
    assert update["patch"] == [{"op": "replace", "path": "/$state/counter", "value": 99}]
    assert (update["panelId"], update["triggeredBy"]) == (PANEL, "user")

    # Unsubscribed, the panel's changes stop; another panel's, written after, still come.
    await asyncio.to_thread(
        api.put, f"{BASE}/panel_790", json={"state": {"$state": {"message": "Hello"}}}
    )
    await socket.send({"type": "unsubscribe", "panelId": PANEL})
    await socket.next("unsubscribed")
    await socket.send({"type": "subscribe", "panelId": "panel_790"})
    await socket.next("state_sync")
    for path, panel_id in (("/$state/counter", PANEL), ("/$state/message", "panel_790")):
        await asyncio.to_thread(
            api.patch,
            f"{BASE}/{panel_id}",
            json={"patches": [{"op": "replace", "path": path, "value": 100}]},
        )
    other = await socket.next("state_update")
    assert other["panelId"] == "panel_790", other  # nothing of panel_789 came first


async def test_websocket_error_names_the_panel(socket: Socket) -> None:
    await socket.send({"type": "subscribe", "panelId": "panel_that_was_never_made"})
    message = await socket.next("error")
    fields(message, type=str, code=str, message=str, panelId=str)
    assert (message["code"], message["panelId"]) == (
        "panel_not_found",
        "panel_that_was_never_made",
    )


# -- Redis Schema ------------------------------------------------------------------------------


async def test_redis_key_and_channel(api: httpx.Client, panel: dict[str, Any]) -> None:
    """Another service reads `state:{ws}:{panel}` and listens on `state-updates:{ws}`."""
    redis = Redis.from_url(redis_server.url())
    listener = redis.pubsub()
    try:
        await listener.subscribe(f"state-updates:{WS}")
        assert (await listener.get_message(timeout=WAIT) or {}).get("type") == "subscribe"
        answer = await asyncio.to_thread(
            api.patch,
            f"{BASE}/{PANEL}",
            json={"patches": [{"op": "replace", "path": "/$state/counter", "value": 43}]},
        )
        version = answer.json()["version"]
        message = None
        while message is None or message.get("type") != "message":
            message = await listener.get_message(timeout=WAIT)
            assert message is not None, "no message on state-updates"
        published = orjson.loads(message["data"])
        fields(published, panel_id=str, patch=list, version=int, timestamp=str)
        assert (published["panel_id"], published["version"]) == (PANEL, version)
        assert published["patch"] == [{"op": "replace", "path": "/$state/counter", "value": 43}]

        await asyncio.to_thread(api.get, f"{BASE}/{PANEL}")  # a read leaves the hot copy
        cached = await redis.get(f"state:{WS}:{PANEL}")
        assert cached is not None
        entry = orjson.loads(cached)
        assert entry["$state"]["counter"] == 43 and "$computed" in entry
        fields(entry["_meta"], version=int, updated_at=str)
        assert entry["_meta"]["version"] == version
        timestamp(entry["_meta"]["updated_at"])
        assert 0 < await redis.ttl(f"state:{WS}:{PANEL}") <= 1800
    finally:
        await listener.aclose()
        await redis.aclose()
