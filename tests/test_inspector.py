"""The web inspector (docs/INSPECTOR.md): served by the server itself at /inspect, driven here
in a real browser against a real server.

The browser is Debian's `chromium` package, driven by Playwright through its executable path
(Playwright downloads no browser here); without it the browser tests are skipped, and
`make test` says so. The bundle is built by `make install`; without it they are skipped too.

Screenshots of every step are kept in test-artifacts/inspector/ at the repository root (or
in $CRDT_STATE_TEST_ARTIFACTS/inspector/).

Every request the page makes is recorded: all of them go to the server's own origin, and the
token is never in a URL.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio

from crdt_state.config import Settings
from crdt_state.faces import inspect as inspect_face

from .conftest import token
from .inprocess import client_of, running_app
from .openapi_check import check_response
from .server import ServerProcess
from .yjs_client import YjsClients

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("CRDT_STATE_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "inspector"
CHROMIUM = shutil.which("chromium")
BUILT = (inspect_face.DIST / "index.html").is_file()
WAIT_MS = 10_000
SVG_NAMESPACE = b'"http://www.w3.org/2000/svg"'

needs_browser = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (apt-get install -y chromium): the inspector's "
    "browser tests are skipped",
)
needs_bundle = pytest.mark.skipif(
    not BUILT, reason="the inspector is not built: run `make install` (npm ci + vite build)"
)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def inspector_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real server with authentication on and the inspector served; its own origin may
    open WebSockets (as CRDT_STATE_ALLOWED_ORIGINS must say in production)."""
    process = ServerProcess(
        tmp_path / "data",
        env={"CRDT_STATE_INSPECTOR": "1", "CRDT_STATE_SNAPSHOT_INTERVAL_SECONDS": "0"},
    )
    process.extra_env["CRDT_STATE_ALLOWED_ORIGINS"] = process.http
    process.start()
    yield process
    process.stop()


@pytest.fixture
def api(inspector_server: ServerProcess) -> Iterator[httpx.Client]:
    """Plain HTTP to the same server, every answer checked against the OpenAPI document."""
    hooks = {"response": [check_response]}
    with httpx.Client(base_url=inspector_server.http, timeout=30, event_hooks=hooks) as client:
        yield client


@dataclass
class Page:
    """A browser page on the inspector, with what it requested and complained about."""

    page: Any
    origin: str
    requests: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    async def sign_in(self, bearer: str) -> None:
        await self.page.goto(f"{self.origin}/inspect")
        await self.page.get_by_test_id("token-input").fill(bearer)
        await self.page.get_by_test_id("sign-in").click()

    def node(self, pointer: str) -> Any:
        return self.page.locator(f'[data-testid="state-tree"] [data-path="{pointer}"]')

    def check_requests(self, secret: str) -> None:
        """Every request to this origin, every socket to its ws: twin; the token in none."""
        ws_origin = "ws" + self.origin.removeprefix("http")
        assert self.requests, "the page made no request at all?"
        assert [url for url in self.requests if not url.startswith(self.origin + "/")] == []
        assert [url for url in self.sockets if not url.startswith(ws_origin + "/")] == []
        assert [url for url in self.requests + self.sockets if secret in url] == []
        assert self.errors == []


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Any]:
    if CHROMIUM is None:
        pytest.skip(needs_browser.kwargs["reason"])
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield launched
        finally:
            await launched.close()


async def open_page(browser: Any, server: ServerProcess) -> Page:
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    seen = Page(page, server.http)
    page.on("request", lambda request: seen.requests.append(request.url))
    page.on("websocket", lambda socket: seen.sockets.append(socket.url))
    page.on("pageerror", lambda error: seen.errors.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            seen.errors.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    return seen


def expect(target: Any) -> Any:
    from playwright.async_api import expect as playwright_expect

    playwright_expect.set_options(timeout=WAIT_MS)
    return playwright_expect(target)


# --- the acceptance walk-through --------------------------------------------------------------


@needs_browser
@needs_bundle
async def test_a_writer_sees_a_live_edit_steps_back_reverts_and_sees_the_revert_arrive(
    inspector_server: ServerProcess, browser: Any
) -> None:
    writer = token("wendy", {"ws": "write"})
    async with YjsClients() as node:
        yjs = await node.connect(
            "yuki",
            inspector_server.yjs_url("ws"),
            "board",
            params={"token": writer},
            awareness={"user": {"name": "Yuki", "color": "#e91e63"}},
        )
        await yjs.set(["$state", "title"], "first")
        await yjs.set(["$state", "tags"], ["a", "b"])

        seen = await open_page(browser, inspector_server)
        page = seen.page
        await seen.sign_in(writer)  # one workspace in the token: it opens by itself
        await page.locator('[data-panel="board"]').click()
        await expect(seen.node("/$state/title")).to_contain_text('"first"')
        await expect(page.get_by_test_id("live-status")).to_have_text("live")
        await expect(page.get_by_test_id("presence")).to_contain_text("Yuki")
        await expect(page.get_by_test_id("presence")).to_contain_text("wendy")
        await seen.shot("01-panel.png")

        # A Yjs client edits: the tree changes live, and the value flashes.
        await yjs.set(["$state", "title"], "second")
        title = seen.node("/$state/title")
        await expect(title).to_contain_text('"second"')
        await expect(title).to_have_class(re.compile(r"\bflash\b"))
        live_version = int(
            (await page.get_by_test_id("panel-version").inner_text()).removeprefix("version ")
        )
        await expect(page.locator(f'[data-testid="entry-{live_version}"]')).to_be_visible()
        await seen.shot("02-live-edit.png")

        # One version back: the state before the edit, not live.
        await page.get_by_test_id("step-back").click()
        await expect(page.get_by_test_id("travel-banner")).to_be_visible()
        await expect(page.get_by_test_id("version-label")).to_have_text(
            f"version {live_version - 1} of {live_version}"
        )
        await expect(title).to_contain_text('"first"')
        # Its version's patch as a readable diff (the value before it, then after).
        await page.get_by_test_id(f"entry-{live_version}").click()
        await expect(page.get_by_test_id(f"diff-{live_version}")).to_contain_text(
            '/$state/title: "first" → "second"'
        )
        await page.get_by_test_id("step-back").click()  # the diff's click went live again
        await expect(title).to_contain_text('"first"')
        await seen.shot("03-history.png")

        # Revert to it, after a confirmation.
        await page.get_by_test_id("revert").click()
        dialog = page.get_by_test_id("confirm-dialog")
        await expect(dialog).to_contain_text(f"Revert board to version {live_version - 1}?")
        await seen.shot("04-confirm-revert.png")
        await page.get_by_test_id("confirm-ok").click()
        await expect(dialog).to_have_count(0)

        # The revert arrives: live again, the old value back (flashing), a new version made
        # by a revert on top of the timeline; and the Yjs client has it too.
        await expect(page.get_by_test_id("travel-banner")).to_be_hidden()
        await expect(title).to_contain_text('"first"')
        await expect(title).to_have_class(re.compile(r"\bflash\b"))
        newest = page.locator('[data-testid="timeline"] > li').first
        await expect(newest).to_have_attribute("data-change", "reverted")
        await expect(newest).to_have_attribute("data-version", str(live_version + 1))
        await expect(page.get_by_test_id("panel-version")).to_have_text(
            f"version {live_version + 1}"
        )
        await yjs.wait_for(["$state", "title"], "first")
        await seen.shot("05-reverted.png")
    seen.check_requests(writer)


@needs_browser
@needs_bundle
async def test_a_reader_sees_everything_and_is_offered_no_revert_or_restore(
    inspector_server: ServerProcess, api: httpx.Client, browser: Any
) -> None:
    admin = {"Authorization": f"Bearer {token('ada', {'ws': 'admin'})}"}
    body = {"state": {"$state": {"title": "kept", "n": 1}}}
    assert api.put("/api/state/ws/board", headers=admin, json=body).status_code == 200
    snapshot = api.post("/api/state/ws/snapshot", headers=admin, json={"description": "one"})
    assert snapshot.status_code == 201, snapshot.text
    sha = snapshot.json()["gitCommitHash"]
    patch = [{"op": "replace", "path": "/$state/n", "value": 2}]
    assert api.patch("/api/state/ws/board", headers=admin, json=patch).status_code == 200

    reader = token("rita", {"ws": "read"})
    seen = await open_page(browser, inspector_server)
    page = seen.page
    await seen.sign_in(reader)
    await expect(page.get_by_test_id("role")).to_have_text("rita · read")
    await page.locator('[data-panel="board"]').click()
    await expect(seen.node("/$state/n")).to_contain_text("2")
    await expect(page.locator('[data-testid="timeline"] > li')).to_have_count(3)
    await page.get_by_test_id("step-back").click()
    await expect(page.get_by_test_id("travel-banner")).to_be_visible()
    await expect(seen.node("/$state/n")).to_contain_text("1")
    await expect(page.get_by_test_id("go-live")).to_be_visible()
    await expect(page.get_by_test_id("revert")).to_have_count(0)
    await seen.shot("reader-1-history.png")

    await page.get_by_test_id("tab-snapshots").click()
    commit = page.locator(f'[data-commit="{sha}"]')
    await expect(commit).to_contain_text("board")  # the panels it changed
    await commit.get_by_test_id("commit-show").click()
    await expect(page.get_by_test_id("commit-detail")).to_contain_text(sha[:10])
    await expect(page.get_by_test_id("restore")).to_have_count(0)
    await seen.shot("reader-2-snapshots.png")
    seen.check_requests(reader)

    # The server refuses them whatever the page offers.
    as_reader = {"Authorization": f"Bearer {reader}"}
    revert = api.post("/api/state/ws/board/revert", headers=as_reader, json={"targetVersion": 2})
    assert revert.status_code == 403 and revert.json()["error"] == "forbidden"
    restore = api.post("/api/state/ws/restore", headers=as_reader, json={"gitCommit": sha})
    assert restore.status_code == 403 and restore.json()["error"] == "forbidden"
    assert api.patch("/api/state/ws/board", headers=as_reader, json=patch).status_code == 403
    assert api.get("/api/state/ws/board", headers=as_reader).json()["state"]["$state"]["n"] == 2


@needs_browser
@needs_bundle
async def test_an_admin_restores_a_snapshot_after_a_confirmation(
    inspector_server: ServerProcess, api: httpx.Client, browser: Any
) -> None:
    admin = token("ada", {"ws": "admin"})
    headers = {"Authorization": f"Bearer {admin}"}
    body = {"state": {"$state": {"title": "snapshotted"}}}
    assert api.put("/api/state/ws/board", headers=headers, json=body).status_code == 200
    sha = api.post("/api/state/ws/snapshot", headers=headers, json={}).json()["gitCommitHash"]
    patch = [{"op": "replace", "path": "/$state/title", "value": "changed"}]
    assert api.patch("/api/state/ws/board", headers=headers, json=patch).status_code == 200

    seen = await open_page(browser, inspector_server)
    page = seen.page
    await seen.sign_in(admin)
    await page.locator('[data-panel="board"]').click()
    await expect(seen.node("/$state/title")).to_contain_text('"changed"')
    await page.get_by_test_id("tab-snapshots").click()
    await page.locator(f'[data-commit="{sha}"]').get_by_test_id("restore").click()
    await expect(page.get_by_test_id("confirm-dialog")).to_contain_text(sha[:10])
    await seen.shot("admin-1-confirm-restore.png")
    await page.get_by_test_id("confirm-ok").click()
    await expect(page.get_by_test_id("toast")).to_contain_text("Restored 1 panel")
    await page.get_by_test_id("tab-panel").click()
    await expect(seen.node("/$state/title")).to_contain_text('"snapshotted"')
    await seen.shot("admin-2-restored.png")
    seen.check_requests(admin)


# --- the page's answers -----------------------------------------------------------------------


@needs_bundle
def test_the_page_and_its_assets_carry_strict_headers(api: httpx.Client) -> None:
    answer = api.get("/inspect")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    policy = answer.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    host = api.base_url.netloc.decode()
    assert directives["connect-src"] == f"'self' ws://{host} wss://{host}"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "unsafe" not in policy
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["cache-control"] == "no-cache"

    page = answer.text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), "an inline script"
    assert "style=" not in page and "<style" not in page
    references = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert references and all(ref.startswith("/inspect/assets/") for ref in references)
    kinds = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for reference in references:
        asset = api.get(reference)
        assert asset.status_code == 200, reference
        assert asset.headers["content-type"].startswith(kinds[Path(reference).suffix])
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert asset.headers["x-content-type-options"] == "nosniff"
        content = asset.content.replace(SVG_NAMESPACE, b"")  # a name, never fetched
        assert not re.search(rb"""["'(]\s*(https?:)?//[a-z0-9]""", content), reference

    for missing in ("/inspect/assets/nope.js", "/inspect/assets/..%2F..%2Fapp.py"):
        refused = api.get(missing)
        assert refused.status_code == 404 and refused.json()["error"] == "not_found"


async def test_the_page_is_off_unless_the_setting_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings.from_env({}).inspector_enabled is False
    assert Settings.from_env({"CRDT_STATE_INSPECTOR": "1"}).inspector_enabled is True
    off_in_dev = Settings.from_env({"CRDT_STATE_INSPECTOR": "off"})
    off_in_dev.dev = True
    assert off_in_dev.inspector_enabled is False
    on_in_dev = Settings.from_env({})
    on_in_dev.dev = True
    assert on_in_dev.inspector_enabled is True

    async def checked(answer: httpx.Response) -> None:
        await answer.aread()
        check_response(answer)

    async with running_app(tmp_path / "off") as app, client_of(app) as client:
        client.event_hooks["response"] = [checked]
        for path in ("/inspect", "/inspect/assets/index.js"):
            answer = await client.get(path)
            assert answer.status_code == 404 and answer.json()["error"] == "not_found"
            assert "CRDT_STATE_INSPECTOR=1" in answer.json()["message"]

    monkeypatch.setattr(inspect_face, "DIST", tmp_path / "never-built")
    async with running_app(tmp_path / "on", inspector=True) as app, client_of(app) as client:
        client.event_hooks["response"] = [checked]
        answer = await client.get("/inspect")
        assert answer.status_code == 503 and answer.json()["error"] == "unavailable"
        assert "make install" in answer.json()["message"]


# --- the two read endpoints it added --------------------------------------------------------


async def test_the_workspace_listing_and_presence_show_who_is_connected(
    server: ServerProcess,
) -> None:
    writer = token("wendy", {"ws": "write"})
    hooks = {"response": [check_response]}
    with httpx.Client(base_url=server.http, timeout=30, event_hooks=hooks) as api:
        reader = {"Authorization": f"Bearer {token('rita', {'ws': 'read'})}"}
        body = {"state": {"$state": {"quiet": True}}}
        as_writer = {"Authorization": f"Bearer {writer}"}
        assert api.put("/api/state/ws/idle", headers=as_writer, json=body).status_code == 200
        async with YjsClients() as node:
            yjs = await node.connect(
                "yuki",
                server.yjs_url("ws"),
                "board",
                params={"token": writer},
                awareness={"user": {"name": "Yuki"}},
            )
            await yjs.set(["$state", "title"], "hello")
            for _ in range(100):  # the update reaches the server's room
                board_state = api.get("/api/state/ws/board", headers=reader).json()
                if board_state["state"]["$state"].get("title") == "hello":
                    break
                await asyncio.sleep(0.05)
            idle_state = api.get("/api/state/ws/idle", headers=reader).json()
            listing = api.get("/api/state/ws", headers=reader).json()
            assert listing["role"] == "read" and listing["subject"] == "rita"
            assert [p["panelId"] for p in listing["panels"]] == ["board", "idle"]
            assert listing["totalPanels"] == 2
            board, idle = listing["panels"]
            assert board["connections"] == 1 and board["subjects"] == ["wendy"]
            for row, state in ((board, board_state), (idle, idle_state)):
                assert row["version"] == state["version"] and row["epoch"] == state["epoch"]
                assert row["sizeBytes"] == len(orjson.dumps(state["state"]))
                assert row["updatedAt"] == state["updatedAt"]
            assert idle["connections"] == 0 and idle["subjects"] == []

            presence = api.get("/api/state/ws/board/presence", headers=reader).json()
            assert presence["live"] is True
            assert [c["state"] for c in presence["clients"]] == [{"user": {"name": "Yuki"}}]
            assert presence["clients"][0]["clientId"] == yjs.client_id
            assert presence["connections"] == [{"subject": "wendy", "canWrite": True}]
        paged = api.get("/api/state/ws", headers=reader, params={"limit": 1, "offset": 1})
        assert [p["panelId"] for p in paged.json()["panels"]] == ["idle"]
        nobody = api.get("/api/state/ws/ghost/presence", headers=reader).json()
        assert nobody == {
            "workspaceId": "ws",
            "panelId": "ghost",
            "live": False,
            "clients": [],
            "connections": [],
        }
        assert api.get("/api/state/ws").status_code == 401
        assert api.get("/api/state/other", headers=reader).status_code == 403
        assert api.get("/api/state/ws/board/presence").status_code == 401
        assert api.get("/api/state/ws", params={"limit": 5000}, headers=reader).status_code == 400
