"""The REST face of Git snapshots (docs/GIT.md, "The snapshot service"):

    POST /api/state/{ws}/snapshot          take one (admin)
    GET  /api/state/{ws}/snapshot          every panel now, or ?git_commit=<sha> (read)
    GET  /api/state/{ws}/snapshot/status   head, push, automatic snapshots, recent rows (read)
    POST /api/state/{ws}/restore           panels back to a commit's state (write)

The service is `Context.snapshots` (a SnapshotService), set by the composition root.
`snapshot_routes()` must come before the panel routes: "snapshot" and "restore" are not
panel ids over REST.
"""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth import Role
from ..errors import BadRequest, MethodNotAllowed, Unavailable
from ..model import utcnow
from ..snapshot_repository import check_sha
from ..snapshots import SnapshotService
from .context import context_of
from .http import JSONResponse, attribution, authorize, once, optional_body, read_json

RESERVED_PANEL_IDS = ("snapshot", "restore")
MAX_RESTORE_PANELS = 10_000


def snapshot_routes() -> list[Route]:
    """The routes, to be listed before `/api/state/{workspace}/{panel}`."""
    base = "/api/state/{workspace}"
    return [
        Route(f"{base}/snapshot", create_snapshot, methods=["POST"]),
        Route(f"{base}/snapshot", get_snapshot, methods=["GET"]),
        Route(f"{base}/snapshot/status", snapshot_status, methods=["GET"]),
        Route(f"{base}/restore", restore, methods=["POST"]),
        Route(f"{base}/snapshot", reserved, methods=["PUT", "PATCH", "DELETE"]),
        Route(f"{base}/restore", reserved, methods=["GET", "PUT", "PATCH", "DELETE"]),
    ]


def snapshots_of(request: Request) -> SnapshotService:
    service = context_of(request).snapshots
    if service is None:
        raise Unavailable("Git snapshots are not enabled on this server.")
    return service


# --- handlers -----------------------------------------------------------------------------


async def create_snapshot(request: Request) -> Response:
    workspace = request.path_params["workspace"]
    principal = authorize(request, workspace, Role.ADMIN)
    body = await optional_body(request)
    kind = _string(body, "type", "manual")
    description = _string(body, "description", None)
    to_git = body.get("commitToGit", True)
    if not isinstance(to_git, bool):
        raise BadRequest("'commitToGit' must be true or false.", field="commitToGit")
    service = snapshots_of(request)

    async def work() -> tuple[int, Any]:
        result = await service.create(
            workspace,
            snapshot_type=kind or "manual",
            description=description,
            commit_to_git=to_git,
            subject=principal.subject,
        )
        return 201, result.to_json()

    return await once(request, principal, work, wait=math.inf)


async def get_snapshot(request: Request) -> Response:
    workspace = request.path_params["workspace"]
    authorize(request, workspace, Role.READ)
    service = snapshots_of(request)
    query = request.query_params
    sha = query.get("git_commit", query.get("gitCommit"))
    if sha is not None:
        return JSONResponse((await service.at_commit(workspace, sha)).to_json())
    panels = await service.collect(workspace)
    return JSONResponse(
        {
            "workspaceId": workspace,
            # Each panel as the design document has it: its view's roots, and its version.
            "panels": {
                p.key.panel_id: {**p.view, "version": p.version, "epoch": p.epoch} for p in panels
            },
            "totalPanels": len(panels),
            "panelCount": len(panels),
            "snapshotAt": utcnow().isoformat(),
            "gitCommit": None,  # the live state, not a commit's
        }
    )


async def snapshot_status(request: Request) -> Response:
    workspace = request.path_params["workspace"]
    authorize(request, workspace, Role.READ)
    return JSONResponse(await snapshots_of(request).status(workspace))


async def restore(request: Request) -> Response:
    workspace = request.path_params["workspace"]
    principal = authorize(request, workspace, Role.WRITE)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest('The body must be an object like {"gitCommit": "<sha>"}.')
    sha = body.get("gitCommit")
    if not isinstance(sha, str):
        raise BadRequest("'gitCommit' (a commit id) is required.", field="gitCommit")
    check_sha(sha)
    panels = panel_list(body.get("panels"))
    who = attribution({k: v for k, v in body.items() if k != "triggerSource"}, principal)
    service = snapshots_of(request)
    context_of(request).panels.writable()

    async def work() -> tuple[int, Any]:
        full_sha, restored = await service.restore(workspace, sha, panels, who)
        return 200, {
            "workspaceId": workspace,
            "gitCommit": full_sha,
            "restoredCount": len(restored),
            "panels": {panel_id: result.to_json() for panel_id, result in restored.items()},
        }

    return await once(request, principal, work, wait=math.inf)


async def reserved(request: Request) -> Response:
    raise MethodNotAllowed(
        f"{request.method} is not allowed here: '{request.url.path}' is a workspace "
        f"endpoint, and {' and '.join(RESERVED_PANEL_IDS)} are not panel ids over REST."
    )


# --- helpers ------------------------------------------------------------------------------


def panel_list(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    if (
        not isinstance(raw, list)
        or not all(isinstance(p, str) and p for p in raw)
        or not 0 < len(raw) <= MAX_RESTORE_PANELS
    ):
        raise BadRequest(
            f"'panels' must be a list of 1 to {MAX_RESTORE_PANELS} panel ids.", field="panels"
        )
    return raw


def _string(body: dict[str, Any], name: str, default: str | None) -> str | None:
    value = body.get(name, default)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a string.", field=name)
    return value
