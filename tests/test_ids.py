"""One rule for workspace and panel ids on every face: REST panel routes, snapshot routes, the
Yjs socket and the JSON socket refuse `.`, `..`, blank ids, control and bidi characters and
invalid UTF-8 in the raw path (400 `bad_request` / close 4400). `/ready` reports counts, never
workspace names."""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from crdt_state.auth import mint_token
from crdt_state.ids import check_id, check_workspace_id, decode_path
from crdt_state.model import PanelKey

from .inprocess import client_of, running_app
from .server import SECRET, ServerProcess

TOKEN = mint_token(SECRET, "root", {"*": "admin"})

# (raw path segment, what the refusal says)
BAD_IDS = [
    ("%2E", "'.' or '..'"),
    ("%2E%2E", "'.' or '..'"),
    ("..", "'.' or '..'"),
    ("%20%20", "blank"),
    ("a%09b", "control characters"),
    ("a%00b", "control characters"),
    ("a%7Fb", "control characters"),
    ("a%C2%9Bb", "control characters"),  # U+009B, a C1 control
    ("a%E2%80%AEb", "bidi"),  # U+202E right-to-left override
    ("a%E2%80%AAb", "bidi"),  # U+202A
    ("a%E2%81%A6b", "bidi"),  # U+2066 left-to-right isolate
    ("a%E2%81%A9b", "bidi"),  # U+2069
    ("%FF%FE", "not valid UTF-8"),
    ("a%C3", "not valid UTF-8"),  # a truncated sequence
    ("a" * 201, "1 to 200 characters"),
]


# --- the rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [".", "..", "", " ", "\u3000", "a\nb", "a\x85b", "a\u202eb", "a\u2067b", "\ud800"]
)
def test_the_rule_refuses(value: str) -> None:
    with pytest.raises(ValueError):
        check_id("panel", value)
    with pytest.raises(ValueError):
        PanelKey("ws", value).check()
    with pytest.raises(ValueError):
        PanelKey(value, "p").check()


@pytest.mark.parametrize("value", ["p", "...", ".hidden", "a b", "émoji-🙂", "a.b", "x" * 200])
def test_the_rule_accepts(value: str) -> None:
    check_id("panel", value)
    check_workspace_id(value)


def test_a_workspace_id_has_no_colon() -> None:
    with pytest.raises(ValueError, match="':'"):
        PanelKey("a:b", "p").check()
    PanelKey("ws", "a:b").check()


def test_the_raw_path_is_decoded_strictly() -> None:
    assert decode_path({"raw_path": b"/api/state/caf%C3%A9/p", "path": "x"}) == "/api/state/café/p"
    with pytest.raises(ValueError, match="UTF-8"):
        decode_path({"raw_path": b"/api/state/%FF%FE/p", "path": "/api/state/\ufffd\ufffd/p"})
    assert decode_path({"path": "/no/raw"}) == "/no/raw"


# --- every face of a real server ----------------------------------------------------------------


def request(server: ServerProcess, method: str, path: str, body: object = None) -> tuple[int, dict]:
    """Send `path` byte for byte (no client-side normalisation of `..` or escapes)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    payload = None if body is None else json.dumps(body)
    try:
        connection.request(method, path, body=payload, headers=headers)
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read() or b"{}")
    finally:
        connection.close()


async def socket_close(url: str) -> tuple[int | None, str]:
    try:
        async with connect(url) as ws, asyncio.timeout(5):
            while True:
                await ws.recv()
    except ConnectionClosed as closed:
        received = closed.rcvd
        return (received.code, received.reason) if received else (None, "")
    raise AssertionError("unreachable")


ROUTES = [
    ("GET", "/api/state/{ws}/p", None),
    ("PUT", "/api/state/{ws}/p", {"state": {"$state": {}}}),
    ("PATCH", "/api/state/{ws}/p", {"patches": []}),
    ("DELETE", "/api/state/{ws}/p", None),
    ("GET", "/api/state/{ws}/p/history", None),
    ("POST", "/api/state/{ws}/p/revert", {"version": 1}),
    ("GET", "/api/state/ws/{panel}", None),
    ("PUT", "/api/state/ws/{panel}", {"state": {"$state": {}}}),
    ("PATCH", "/api/state/ws/{panel}", {"patches": []}),
    ("GET", "/api/state/ws/{panel}/history", None),
    ("POST", "/api/state/{ws}/snapshot", {}),
    ("GET", "/api/state/{ws}/snapshot", None),
    ("GET", "/api/state/{ws}/snapshot/status", None),
    ("POST", "/api/state/{ws}/restore", {"gitCommit": "abcd"}),
]


def test_every_rest_route_refuses_bad_ids(server: ServerProcess) -> None:
    for method, template, body in ROUTES:
        for bad, why in BAD_IDS:
            path = template.format(ws=bad, panel=bad)
            status, answer = request(server, method, path, body)
            assert status == 400, (method, path, answer)
            assert answer["error"] == "bad_request" and why in answer["message"], answer
    # Nothing was created under any of them.
    status, answer = request(server, "GET", "/api/state/ws/p")
    assert status == 404


async def test_both_sockets_refuse_bad_ids_with_4400(server: ServerProcess) -> None:
    for bad, why in BAD_IDS:
        for path in (f"/ws/yjs/{bad}/p", f"/ws/yjs/ws/{bad}", f"/ws/state/{bad}"):
            code, reason = await socket_close(f"{server.ws}{path}?token={TOKEN}")
            assert code == 4400 and why in reason, (path, code, reason)


def test_two_invalid_utf8_paths_no_longer_name_one_panel(server: ServerProcess) -> None:
    assert request(server, "PUT", "/api/state/ws/%FF%FE", {"state": {"$state": {}}})[0] == 400
    assert request(server, "PUT", "/api/state/ws/%FE%FF", {"state": {"$state": {}}})[0] == 400
    # A real U+FFFD, sent as UTF-8, is an ordinary id.
    status, _ = request(server, "PUT", "/api/state/ws/%EF%BF%BD", {"state": {"$state": {"a": 1}}})
    assert status in (200, 201)


# --- /ready --------------------------------------------------------------------------------------


async def test_ready_reports_counts_not_workspace_names(tmp_path: Path) -> None:
    async with running_app(tmp_path) as app, client_of(app, TOKEN) as api:
        for workspace in ("secret-project", "acquisition-target"):
            answer = await api.put(
                f"/api/state/{workspace}/p", json={"state": {"$state": {"a": 1}}}
            )
            assert answer.status_code in (200, 201)
            assert (await api.post(f"/api/state/{workspace}/snapshot", json={})).status_code == 201
        damaged = next(p for p in (tmp_path / "git").iterdir() if "acquisition" in p.name)
        await asyncio.to_thread(shutil.rmtree, damaged / "objects")
        answer = await api.get("/ready")
    body = answer.json()
    assert "secret-project" not in answer.text and "acquisition" not in answer.text
    snapshots = body["gitSnapshots"]
    assert snapshots["status"] == "degraded"
    assert snapshots["repositories"] == 2 and snapshots["corrupt"] == 1
    assert snapshots["autoSnapshotFailures"] == 0
    assert body["revocations"]["status"] == "ok"
