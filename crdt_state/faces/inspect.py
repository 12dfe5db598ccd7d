"""The inspector (docs/INSPECTOR.md): a web page for people debugging panels, and the two
read endpoints it needs that the API lacked.

    GET /inspect                          the page: the built bundle's index.html
    GET /inspect/assets/{name}            its hashed scripts, styles and icon
    GET /api/state/{ws}                   the workspace's panels: version, size, last change,
                                          who is connected (read)
    GET /api/state/{ws}/{panel}/presence  who is in the panel now: its room's awareness
                                          states and connections on this replica (read)

The page is served only when the setting says so (CRDT_STATE_INSPECTOR; default: on with
--dev, off otherwise); off, both page routes answer 404 `not_found`. The bundle is built by
`make install` (inspector/, Vite) into crdt_state/inspector_dist/; not built, the page answers
503 `unavailable` saying how to build it. The page holds no data and no privilege of its own:
it calls the public API with the token its user typed, so it can do nothing they could not.

Its answers carry a strict Content-Security-Policy (scripts, styles and connections of this
origin only; no inline script; not framed) and the usual headers; the hashed assets are
cached for a year.
"""

from __future__ import annotations

import asyncio
import functools
import re
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from ..auth import Role
from ..errors import NotFound, Unavailable
from ..model import PanelKey, PanelListing, PanelState
from ..panels import PanelService
from ..snapshot_records import bounded
from .context import context_of
from .http import JSONResponse, authorize, panel_key, query_int

DIST = Path(__file__).resolve().parent.parent / "inspector_dist"
DEFAULT_PANELS_PAGE = 200
MAX_PANELS_PAGE = 1000
READ_CONCURRENCY = 8  # panels read at once for the listing
ROOM_WAIT_SECONDS = 5.0  # a busy room is listed as the store has it
MAX_SUBJECTS = 50  # subjects named per panel in the listing
MAX_PRESENCE = 1000  # as many as a room's presence holds

_ASSET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_COMMON = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
ASSET_HEADERS = {**_COMMON, "Cache-Control": "public, max-age=31536000, immutable"}


def inspect_routes() -> list[Route]:
    """The routes: always there (the setting is read per request), before the panel routes."""
    return [
        Route("/inspect", page, methods=["GET"]),
        Route("/inspect/assets/{name}", asset, methods=["GET"]),
        Route("/api/state/{workspace}", get_workspace, methods=["GET"]),
        Route("/api/state/{workspace}/{panel}/presence", get_presence, methods=["GET"]),
    ]


# --- the page -------------------------------------------------------------------------------


def content_security_policy(host: str | None) -> str:
    """Everything from this origin only, nothing inline. `'self'` covers this origin's
    WebSockets in current browsers; the host's ws:/wss: are named too for older ones."""
    connect = "'self'"
    if host and _HOST.fullmatch(host):
        connect += f" ws://{host} wss://{host}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
        "object-src 'none'; require-trusted-types-for 'script'"
    )


def page_headers(host: str | None) -> dict[str, str]:
    return {
        **_COMMON,
        "Content-Security-Policy": content_security_policy(host),
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
        "Cache-Control": "no-cache",
    }


def _bundle(request: Request) -> Path:
    """The built bundle's folder, once the setting and the build allow serving it."""
    if not context_of(request).settings.inspector_enabled:
        raise NotFound(
            "The inspector is off on this server: set CRDT_STATE_INSPECTOR=1 to serve it "
            "(it is on by default with --dev)."
        )
    if not (DIST / "index.html").is_file():
        raise Unavailable(
            "The inspector is not built: run `make install` (npm ci and vite build in "
            "inspector/), then reload."
        )
    return DIST


async def page(request: Request) -> Response:
    index = _bundle(request) / "index.html"
    headers = page_headers(request.headers.get("host"))
    return FileResponse(index, media_type="text/html; charset=utf-8", headers=headers)


async def asset(request: Request) -> Response:
    folder = _bundle(request) / "assets"
    name = request.path_params["name"]
    kind = _TYPES.get(Path(name).suffix)
    if kind is None or not _ASSET.fullmatch(name) or not (folder / name).is_file():
        raise NotFound(f"The inspector has no asset {name!r}.")
    return FileResponse(folder / name, media_type=kind, headers=ASSET_HEADERS)


# --- the workspace's panels -----------------------------------------------------------------


async def get_workspace(request: Request) -> Response:
    """The workspace's live panels, by id, a page at a time: each with its version, the size
    of its JSON, when it last changed and who is connected to it on this replica; and the
    caller's role (what the inspector offers follows it; the server checks it again)."""
    workspace = request.path_params["workspace"]
    principal = authorize(request, workspace, Role.READ)
    limit = query_int(request, "limit", DEFAULT_PANELS_PAGE, MAX_PANELS_PAGE)
    offset = query_int(request, "offset", 0)
    panels = context_of(request).panels
    listings = await panels.read_model.list_panels(workspace)
    chosen = listings[offset : offset + limit]
    jobs = [functools.partial(_panel_row, panels, workspace, item) for item in chosen]
    rows = [row for row in await bounded(READ_CONCURRENCY, jobs) if row is not None]
    role = principal.role_for(workspace) or Role.READ  # at least read: authorized
    return JSONResponse(
        {
            "workspaceId": workspace,
            "subject": principal.subject,
            "role": role.label,
            "panels": rows,
            "totalPanels": len(listings),
            "limit": limit,
            "offset": offset,
        }
    )


async def _panel_row(
    panels: PanelService, workspace: str, listing: PanelListing
) -> dict[str, Any] | None:
    """One panel as the listing shows it; None when it was deleted meanwhile."""
    key = PanelKey(workspace, listing.panel_id)
    room = panels.live_room(key)
    state = None
    if room is not None:
        try:
            async with asyncio.timeout(ROOM_WAIT_SECONDS):
                state = await panels.room_state(room)
        except TimeoutError:
            state = None  # still committing: the store's view will do
        if room.deleted:
            return None
    if state is None and listing.view is not None:
        state = PanelState(key, listing.view, listing.version, listing.epoch)
    if state is None:  # the stored view lags the log: replay it
        state = await panels.replayed(key)
        if state is None:
            return None
    updated = state.updated_at
    if updated is None:  # not from a live room: the newest entry of the log says when
        entries, _ = await panels.read_model.history(key, limit=1)
        updated = entries[0].occurred_at if entries else None
    connections = list(room.peers.connections) if room is not None else []
    subjects = sorted({connection.principal.subject for connection in connections})
    return {
        "panelId": listing.panel_id,
        "version": state.version,
        "epoch": state.epoch,
        "sizeBytes": len(orjson.dumps(state.view)),
        "updatedAt": updated.isoformat() if updated is not None else None,
        "connections": len(connections),
        "subjects": subjects[:MAX_SUBJECTS],
    }


# --- presence -------------------------------------------------------------------------------


async def get_presence(request: Request) -> Response:
    """Who is in the panel now, read-only: every awareness state its room holds on this
    replica (with several replicas, a room receives every replica's clients' states through
    the fan-out), and this replica's connections to it. A panel whose room is not loaded here
    answers `live: false` and empty lists."""
    key = panel_key(request)
    authorize(request, key.workspace_id, Role.READ)
    room = context_of(request).panels.live_room(key)
    clients: list[dict[str, Any]] = []
    connections: list[dict[str, Any]] = []
    live = room is not None and not room.deleted
    if room is not None and live:
        for entry in room.peers.presence.current()[:MAX_PRESENCE]:
            clients.append(
                {"clientId": entry.client_id, "clock": entry.clock, "state": _parsed(entry.state)}
            )
        connections = sorted(
            (
                {"subject": connection.principal.subject, "canWrite": connection.can_write}
                for connection in room.peers.connections
            ),
            key=lambda item: (item["subject"], not item["canWrite"]),
        )
    return JSONResponse(
        {
            "workspaceId": key.workspace_id,
            "panelId": key.panel_id,
            "live": live,
            "clients": sorted(clients, key=lambda item: item["clientId"]),
            "connections": connections,
        }
    )


def _parsed(text: str) -> Any:
    """An awareness state as JSON (clients send JSON text; anything else shows as null)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
