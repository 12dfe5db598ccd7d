"""The panel routes' own lane (crdt_state/faces/lane.py): it serves exactly the requests that
Starlette's router would give to `/api/state/{workspace}/{panel}`, and leaves every other one
to Starlette; what its handlers raise is answered as Starlette answers it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.routing import Match, Route

from crdt_state.app import App, create_app
from crdt_state.faces.lane import PANEL_PATH
from crdt_state.panels import PanelService

from .conftest import token
from .inprocess import client_of, running_app, settings_for

METHODS = ("GET", "HEAD", "PUT", "PATCH", "DELETE", "POST", "OPTIONS")


def _app(tmp_path: Path) -> App:
    return create_app(settings_for(tmp_path))


def _concrete(path: str, panel: str = "p1") -> str:
    return path.replace("{workspace}", "ws").replace("{panel}", panel).replace("{name}", "x.js")


def _starlettes_choice(app: App, scope: dict[str, Any]) -> Route | None:
    """The route Starlette's router serves a request with (a full match), or None."""
    for route in app.starlette.routes:
        match, _ = route.matches(dict(scope))
        if match is Match.FULL:
            return route if isinstance(route, Route) else None
    return None


def _scope(method: str, path: str, root_path: str = "") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": root_path, "headers": []}


def test_the_lane_takes_what_the_router_gives_the_panel_routes_and_nothing_else(
    tmp_path: Path,
) -> None:
    app = _app(tmp_path)
    assert app.lane is not None
    paths = {_concrete(r.path) for r in app.starlette.routes if isinstance(r, Route)}
    paths |= {
        "/api/state/ws/p1",
        "/api/state/ws/p1/",
        "/api/state/ws/",
        "/api/state//p1",
        "/api/state/ws/p1/extra/more",
        "/api/state/ws/p1/history/",
        "/api/state/ws/p1/historyx",
        "/api/state/ws/snapshot/history",
        "/api/state/ws/snapshots",  # a panel whose id only starts like a route's segment
        "/api/state/ws/caf%C3%A9",
        "/elsewhere/api/state/ws/p1",
    }
    taken: set[tuple[str, str]] = set()
    for path in sorted(paths):
        for method in METHODS:
            scope = _scope(method, path)
            chosen = _starlettes_choice(app, scope)
            found = app.lane.route(scope)
            if found is not None:  # never a route other than Starlette's, never other params
                route, params = found
                assert chosen is not None and route is chosen, (method, path)
                _, child = chosen.matches(dict(scope))
                assert params == child["path_params"], (method, path)
                taken.add((method, chosen.path))
            elif chosen is not None and chosen.path.startswith(PANEL_PATH):
                # left to Starlette only where another route's literal segment stands
                assert path.split("/")[4] in {t[0] for t in app.lane.reserved}, (method, path)
    # every method of every route at or below a panel: the panel itself, its history,
    # revert and presence
    below = [
        r for r in app.starlette.routes if isinstance(r, Route) and r.path.startswith(PANEL_PATH)
    ]
    assert taken == {(m, r.path) for r in below for m in r.methods or ()}
    assert {r.path.removeprefix(PANEL_PATH) for r in below} >= {"", "/history", "/revert"}


def test_no_other_route_under_a_workspace_is_ever_taken_by_the_lane(
    tmp_path: Path,
) -> None:
    """What the lane leaves alone is read off the routes: a route added under
    /api/state/{workspace}/ is never shadowed by the panel routes' lane, whatever its order."""
    app = _app(tmp_path)
    assert app.lane is not None
    for route in app.starlette.routes:
        if not isinstance(route, Route) or route.path.startswith(PANEL_PATH):
            continue
        if not route.path.startswith("/api/state/{workspace}/"):
            continue
        for method in METHODS:
            assert app.lane.route(_scope(method, _concrete(route.path))) is None, route.path


def test_an_app_under_a_root_path_goes_through_starlette(tmp_path: Path) -> None:
    app = _app(tmp_path)
    assert app.lane is not None
    assert app.lane.route(_scope("GET", "/api/state/ws/p1")) is not None
    assert app.lane.route(_scope("GET", "/prefix/api/state/ws/p1", root_path="/prefix")) is None


async def _drive(app: App, method: str, path: str, send: Any) -> None:
    """One request straight into the ASGI app (no client in between: what it raises, the
    caller sees)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {token()}".encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    await app(scope, receive, send)


async def test_a_server_fault_in_a_panel_handler_is_a_json_500_and_still_raised_for_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_app(tmp_path) as app:
        async with client_of(app, token()) as api:
            created = await api.put("/api/state/ws/p1", json={"state": {"$state": {"a": 1}}})
            assert created.status_code in (200, 201), created.text

        async def broken(self: PanelService, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("the disk caught fire")

        monkeypatch.setattr(PanelService, "read", broken)
        messages: list[dict[str, Any]] = []

        async def record(message: dict[str, Any]) -> None:
            messages.append(message)

        with pytest.raises(RuntimeError, match="caught fire"):  # on to uvicorn's error log
            await _drive(app, "GET", "/api/state/ws/p1", record)
        status = next(m["status"] for m in messages if m["type"] == "http.response.start")
        body = orjson.loads(b"".join(m.get("body", b"") for m in messages[1:]))
        assert status == 500
        assert body["error"] == "internal_error" and "fire" not in body["message"]


async def test_refusals_on_the_lane_are_the_same_json_as_elsewhere(tmp_path: Path) -> None:
    async with running_app(tmp_path) as app, client_of(app, token()) as api:
        missing = await api.get("/api/state/ws/nothing-here")
        assert missing.status_code == 404 and missing.json()["error"] == "panel_not_found"
        bad = await api.patch(
            "/api/state/ws/p1", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert bad.status_code == 400 and bad.json()["error"] == "bad_request"
        unauthenticated = await client_of(app).get("/api/state/ws/p1")
        assert unauthenticated.status_code == 401
        assert unauthenticated.headers["www-authenticate"] == "Bearer"
        not_allowed = await api.post("/api/state/ws/p1", json={})
        assert (
            not_allowed.status_code == 405 and not_allowed.json()["error"] == "method_not_allowed"
        )
        snapshot = await api.get("/api/state/ws/snapshot")  # not a panel called "snapshot"
        assert snapshot.status_code == 200 and "panels" in snapshot.json()
