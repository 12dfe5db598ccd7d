"""The REST face of panels: `/api/state/{workspace}/{panel}`, its history and revert.

Handlers parse, authorize and answer; the panel service (crdt_state/panels.py) decides and
acts. Errors are raised, and turned into answers once (http.state_error).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth import Role
from ..errors import BadRequest, InvalidPatch
from ..json_edits import check_view
from ..jsonpatch import parse_patch
from ..model import Attribution, LogEntry, PanelKey, TriggeredBy
from ..panels import WriteResult
from ..values import natural
from .context import context_of
from .http import (
    JSONResponse,
    attribution,
    authorize,
    flag,
    once,
    optional_int,
    panel_key,
    query_int,
    query_time,
    query_value,
    read_json,
)

MAX_HISTORY_PAGE = 1000
RECENT_HISTORY = 20


def panel_routes() -> list[Route]:
    base = "/api/state/{workspace}/{panel}"
    return [
        Route(base, get_state, methods=["GET"]),
        Route(base, put_state, methods=["PUT"]),
        Route(base, patch_state, methods=["PATCH"]),
        Route(base, delete_state, methods=["DELETE"]),
        Route(f"{base}/history", get_history, methods=["GET"]),
        Route(f"{base}/revert", revert_state, methods=["POST"]),
    ]


def entry_json(entry: LogEntry) -> dict[str, Any]:
    return {
        # The entry's id: its version, which no other entry of the panel has (a panel
        # re-created after a delete goes on counting).
        "id": entry.version,
        "version": entry.version,
        "previousVersion": entry.version - 1,
        "epoch": entry.epoch,
        "changeType": entry.change_type.value,
        "patch": entry.patch,
        "triggeredBy": entry.triggered_by.value,
        "triggerSource": entry.trigger_source,
        "subject": entry.subject,
        "sizeBytes": len(entry.update),
        "occurredAt": entry.occurred_at.isoformat(),
    }


def write_answer(result: WriteResult) -> dict[str, Any]:
    """The answer every write shares (the design document's `success`, `version`,
    `updatedAt`; our extras)."""
    return {
        "success": True,
        "workspaceId": result.key.workspace_id,
        "panelId": result.key.panel_id,
        "version": result.version,
        "previousVersion": result.version - 1 if result.changed else result.version,
        "epoch": result.epoch,
        "updatedAt": result.updated_at.isoformat() if result.updated_at else None,
        "changed": result.changed,
        "merged": result.merged,
        "inversePatch": result.inverse,
    }


# -- reads ------------------------------------------------------------------------------------


async def get_state(request: Request) -> Response:
    panels = context_of(request).panels
    key = panel_key(request)
    authorize(request, key.workspace_id, Role.READ)
    if query_value(request, "version") is not None:
        version = query_int(request, "version", 0)
        state, current = await panels.read_at(key, version)
        body: dict[str, Any] = {**state.to_json(), "currentVersion": current}
        return JSONResponse(body, headers={"ETag": f'"{version}"'})
    state = await panels.read(key)
    body = state.to_json()
    if flag(request, "include_history", "includeHistory"):
        entries, total = await panels.history(key, limit=RECENT_HISTORY)
        body["history"] = [entry_json(e) for e in entries]
        body["totalChanges"] = total
    return JSONResponse(body, headers={"ETag": f'"{state.version}"'})


async def get_history(request: Request) -> Response:
    key = panel_key(request)
    authorize(request, key.workspace_id, Role.READ)
    limit = query_int(request, "limit", 50, MAX_HISTORY_PAGE)
    offset = query_int(request, "offset", 0)
    since, until = query_time(request, "since"), query_time(request, "until")
    entries, total = await context_of(request).panels.history(
        key, limit=limit, offset=offset, since=since, until=until
    )
    return JSONResponse(
        {
            "workspaceId": key.workspace_id,
            "panelId": key.panel_id,
            "history": [entry_json(e) for e in entries],
            "totalChanges": total,
            "limit": limit,
            "offset": offset,
        }
    )


# -- writes -----------------------------------------------------------------------------------


def patch_request(request: Request, raw: Any) -> tuple[Any, dict[str, Any], int | None, bool]:
    """(patch, body, version, strict): a bare JSON Patch array, or the design document's
    object `{patches, version, triggeredBy, triggerSource}`, under either content type
    (`application/json-patch+json` or `application/json`)."""
    if isinstance(raw, list):
        body: dict[str, Any] = {}
        patch = raw
    elif isinstance(raw, dict):
        body = raw
        if "patches" not in body:
            raise InvalidPatch("The body needs 'patches': a JSON Patch (an array of operations).")
        patch = body["patches"]
    else:
        raise InvalidPatch('The body must be a JSON Patch array or {"patches": [...]}.')
    version = optional_int(body.get("version"), "version")
    strict = body.get("strict") is True
    if_match = request.headers.get("if-match")
    if if_match is not None:
        tag = if_match.strip().removeprefix("W/").strip('"')
        tag_version = natural(tag)
        if tag_version is None:
            raise BadRequest('If-Match must be a version in quotes, e.g. "42".')
        version, strict = tag_version, True
    return patch, body, version, strict


async def patch_state(request: Request) -> Response:
    context = context_of(request)
    panels = context.panels
    key = panel_key(request)
    principal = authorize(request, key.workspace_id, Role.WRITE)
    settings = context.settings
    raw = await read_json(request, min(settings.max_patch_body_bytes, settings.max_body_bytes))
    patch, body, version, strict = patch_request(request, raw)
    ops = parse_patch(patch, context.settings.max_patch_operations)
    who = attribution(body, principal)
    dry_run = flag(request, "dryRun", "dry_run")
    if not dry_run:
        panels.writable()
    if not isinstance(body.get("snapshotBefore", False), bool):
        raise BadRequest("'snapshotBefore' must be true or false.", field="snapshotBefore")
    snapshot_before = body.get("snapshotBefore") is True and not dry_run

    async def work() -> tuple[int, Any]:
        snapshot = None
        if snapshot_before and context.snapshots is not None:
            await panels.exists(key)
            snapshot = await context.snapshots.snapshot_before_edit(
                key.workspace_id, principal.subject
            )
        result = await panels.patch(key, ops, who, version=version, strict=strict, dry_run=dry_run)
        answer = {**write_answer(result), "appliedPatches": len(ops)}
        if dry_run:
            return 200, {**answer, "dryRun": True, "state": result.after}
        if snapshot is not None:
            answer["snapshot"] = snapshot.to_json()
        return 200, answer

    if dry_run:
        status, answer = await work()
        return JSONResponse(answer, status_code=status)
    return await once(request, principal, work)


async def put_state(request: Request) -> Response:
    panels = context_of(request).panels
    key = panel_key(request)
    principal = authorize(request, key.workspace_id, Role.WRITE)
    body = await read_json(request)
    if not isinstance(body, dict) or "state" not in body:
        raise BadRequest('The body needs \'state\': {"$state": {...}, "$computed": {...}}.')
    panels.check_values(body["state"])  # first: it stops counting at the limit
    view = check_view(body["state"])
    version = optional_int(body.get("version"), "version")
    who = attribution(body, principal)
    panels.writable()

    async def work() -> tuple[int, Any]:
        result = await panels.replace(key, view, who, version=version)
        answer = {**write_answer(result), "created": result.created}
        return 200, answer  # the design document: 200, created or not (`created` says)

    return await once(request, principal, work)


async def delete_state(request: Request) -> Response:
    panels = context_of(request).panels
    key = panel_key(request)
    principal = authorize(request, key.workspace_id, Role.ADMIN)
    panels.writable()
    who = Attribution(TriggeredBy.USER, request.headers.get("x-trigger-source"), principal.subject)
    version = await panels.delete(key, who)
    return JSONResponse(_deleted(key, version), headers={"ETag": f'"{version}"'})


def _deleted(key: PanelKey, version: int) -> dict[str, Any]:
    return {
        "success": True,
        "workspaceId": key.workspace_id,
        "panelId": key.panel_id,
        "version": version,
        "deleted": True,
    }


async def revert_state(request: Request) -> Response:
    context = context_of(request)
    key = panel_key(request)
    principal = authorize(request, key.workspace_id, Role.WRITE)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("The body must be an object with 'targetVersion'.")
    target = optional_int(body.get("targetVersion"), "targetVersion")
    if target is None or target < 1:
        raise BadRequest("'targetVersion' must be a version (1 or more).", field="targetVersion")
    who = attribution({"triggeredBy": "user", **body}, principal)
    context.panels.writable()
    create_snapshot = body.get("createSnapshot") is True

    async def work() -> tuple[int, Any]:
        snapshot = None
        if create_snapshot and context.snapshots is not None:
            await context.panels.read_at(key, target)  # a bad target changes nothing
            snapshot = await context.snapshots.create(
                key.workspace_id,
                description=f"Before reverting {key.panel_id} to version {target}.",
                subject=principal.subject,
            )
        result = await context.panels.revert(key, target, who)
        answer = {
            **write_answer(result),
            "revertedTo": target,
            "snapshotId": snapshot.snapshot_id if snapshot is not None else None,
        }
        if snapshot is not None:
            answer["snapshot"] = snapshot.to_json()
        return 200, answer

    return await once(request, principal, work)
