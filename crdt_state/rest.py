"""The REST face: `/api/state/{workspace}/{panel}` and its history, `/health`, `/ready`."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from . import edits
from .auth import Principal, Role, bearer_token
from .document import PanelDoc
from .edits import Attribution, EditResult
from .errors import (
    BadRequest,
    CommitPending,
    InvalidPatch,
    PanelNotFound,
    StateError,
    TooLarge,
    Unauthorized,
    Unavailable,
    VersionConflict,
)
from .history import fill_patches
from .jsonpatch import parse_patch
from .ports import ChangeType, LogEntry, PanelKey, TriggeredBy
from .replay import rebuild
from .room import Room
from .services import JSONResponse, Services, services_of

MAX_HISTORY_PAGE = 1000
RECENT_HISTORY = 20
COMMIT_WAIT_SECONDS = 10.0


# -- plumbing ---------------------------------------------------------------------------------


async def state_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StateError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else {}
    retry_after = exc.details.get("retryAfter")
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(exc.to_json(), status_code=exc.status, headers=headers)


def authorize(request: Request, workspace: str, needed: Role) -> Principal:
    services = services_of(request)
    principal = services.auth.authenticate(bearer_token(request.headers.get("authorization")))
    services.auth.authorize(principal, workspace, needed)
    return principal


def panel_key(request: Request) -> PanelKey:
    key = PanelKey(request.path_params["workspace"], request.path_params["panel"])
    try:
        return key.check()
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


async def read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"The body is larger than {limit} bytes.", limit=limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"The body is larger than {limit} bytes.", limit=limit)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}.") from None


def attribution(body: dict[str, Any], principal: Principal) -> Attribution:
    raw = body.get("triggeredBy", TriggeredBy.USER.value)
    try:
        triggered_by = TriggeredBy(raw)
    except ValueError:
        raise BadRequest(
            f"'triggeredBy' must be one of user, ai, system; got {raw!r}.", field="triggeredBy"
        ) from None
    source = body.get("triggerSource")
    if source is not None and not isinstance(source, str):
        raise BadRequest("'triggerSource' must be a string.", field="triggerSource")
    return Attribution(triggered_by, source, principal.subject)


def optional_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"'{name}' must be a non-negative integer.", field=name)
    return value


def query_int(request: Request, name: str, default: int, maximum: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise BadRequest(f"'{name}' must be a non-negative integer.", field=name)
    value = int(raw)
    if maximum is not None and value > maximum:
        raise BadRequest(f"'{name}' is at most {maximum}.", field=name)
    return value


def query_time(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"'{name}' must be an ISO-8601 time.", field=name) from None
    if moment.tzinfo is None:
        raise BadRequest(f"'{name}' needs a time zone (e.g. Z).", field=name)
    return moment


def flag(request: Request, *names: str) -> bool:
    return any(request.query_params.get(n, "").lower() in ("1", "true", "yes") for n in names)


def entry_json(entry: LogEntry) -> dict[str, Any]:
    return {
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


async def writable(services: Services) -> None:
    """Refuse a write up front while the log cannot commit: nothing gets applied."""
    if not services.committer.healthy:
        raise Unavailable(
            "The database is unreachable; nothing was changed. Retry shortly.", retryAfter=2
        )


async def committed(future: asyncio.Future[int] | None, room: Room) -> int:
    """The version a change was committed as (the current one if it changed nothing).

    The hot cache is refreshed before the answer goes out, so a read on any replica after
    the acknowledgement sees at least this version."""
    if future is None:
        await room.settle()
        return room.version
    version = await future
    if room.cache is not None:
        view, _, _ = await room.call(room.view)
        await room.put_cache(view, max(version, room.version))
    return version


async def once(request: Request, principal: Principal, work: Any) -> Response:
    """Run a write once per Idempotency-Key; answer 503 (still committing) after a while."""
    services = services_of(request)
    idem = request.headers.get("idempotency-key")
    key = (principal.subject, request.method, request.url.path, idem or uuid.uuid4().hex)
    running = asyncio.ensure_future(services.idempotency.run(key, work))
    try:
        status, body = await asyncio.wait_for(asyncio.shield(running), COMMIT_WAIT_SECONDS)
    except TimeoutError:
        raise CommitPending(
            "The change was applied but its commit is still pending (database slow or down). "
            "Retry with the same Idempotency-Key to get its version.",
            retryAfter=5,
        ) from None
    return JSONResponse(body, status_code=status, headers={"ETag": f'"{body["version"]}"'})


# -- health -----------------------------------------------------------------------------------


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    """Readiness: the log answers and its pending writes are going through."""
    services = services_of(request)
    checks: dict[str, object] = {}
    try:
        await services.log.ping()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {exc}"
    checks["logWrites"] = (
        "ok" if services.committer.healthy else f"retrying ({services.committer.pending} pending)"
    )
    is_ready = all(value == "ok" for value in checks.values())
    body: dict[str, Any] = {"status": "ready" if is_ready else "not_ready", "checks": checks}
    if services.snapshots is not None:
        # Reported, never part of readiness: a damaged repository must not stop live editing.
        body["gitSnapshots"] = await services.snapshots.check()
    return JSONResponse(body, status_code=200 if is_ready else 503)


# -- reads ------------------------------------------------------------------------------------


async def view_at(services: Services, key: PanelKey, version: int) -> tuple[dict[str, Any], Any]:
    """The JSON view as it was at `version` (checkpoint + replay of the log)."""
    loaded = await services.log.load(key, until=version)
    if loaded is None:
        raise PanelNotFound(f"Panel '{key}' does not exist.")
    last = (
        loaded.tail[-1].version
        if loaded.tail
        else (loaded.checkpoint.version if loaded.checkpoint else 0)
    )
    if last != version:
        raise PanelNotFound(
            f"Panel '{key}' has no version {version} in its current epoch "
            f"(versions up to {loaded.info.version}).",
            currentVersion=loaded.info.version,
        )
    panel = PanelDoc(rebuild(loaded))
    return panel.render(), loaded


async def get_state(request: Request) -> Response:
    services = services_of(request)
    key = panel_key(request)
    authorize(request, key.workspace_id, Role.READ)
    version_param = request.query_params.get("version")
    if version_param is not None:
        version = query_int(request, "version", 0)
        view, loaded = await view_at(services, key, version)
        body: dict[str, Any] = {
            "workspaceId": key.workspace_id,
            "panelId": key.panel_id,
            "state": view,
            "version": version,
            "epoch": loaded.info.epoch,
            "currentVersion": loaded.info.version,
        }
        return JSONResponse(body, headers={"ETag": f'"{body["version"]}"'})
    body = await current_state(services, key)
    if flag(request, "include_history", "includeHistory"):
        entries, total = await services.log.history(key, limit=RECENT_HISTORY)
        await fill_patches(services.log, key, entries)
        body["history"] = [entry_json(e) for e in entries]
        body["totalChanges"] = total
    return JSONResponse(body, headers={"ETag": f'"{body["version"]}"'})


async def current_state(services: Services, key: PanelKey) -> dict[str, Any]:
    """The panel's JSON view. With several replicas, the hot cache answers for panels this
    replica does not hold, and for held ones when it is newer (a change acknowledged by
    another replica whose fan-out has not arrived yet)."""
    cache = services.cache
    cached = await cache.get(key) if cache is not None else None
    room = services.registry.rooms.get(key)
    held = room is not None and not room.closed and bool(room.connections)
    if cached is not None and not held:
        services.cache_hits += 1
        return {"workspaceId": key.workspace_id, "panelId": key.panel_id, **cached}
    room = await services.registry.open(key, create=False)
    await room.settle()
    view, version, updated_at = await room.call(room.view)
    if cached is not None and cached.get("epoch") == room.epoch and cached["version"] > version:
        services.cache_hits += 1
        return {"workspaceId": key.workspace_id, "panelId": key.panel_id, **cached}
    if cache is not None and not held:
        services.cache_misses += 1
        await room.put_cache(view, version)
    return {
        "workspaceId": key.workspace_id,
        "panelId": key.panel_id,
        "state": view,
        "version": version,
        "epoch": room.epoch,
        "updatedAt": updated_at.isoformat(),
    }


async def metrics(request: Request) -> Response:
    """A few Prometheus counters and gauges (text exposition format)."""
    services = services_of(request)
    rooms = list(services.registry.rooms.values())
    lines = [
        ("crdt_state_rooms", "gauge", "live rooms (panels with a doc in memory)", len(rooms)),
        (
            "crdt_state_connections",
            "gauge",
            "Yjs WebSocket clients",
            sum(len(room.connections) for room in rooms),
        ),
        (
            "crdt_state_committed_changes_total",
            "counter",
            "changes committed to the log",
            services.committer.committed,
        ),
        (
            "crdt_state_commit_batches_total",
            "counter",
            "group-commit transactions",
            services.committer.batches,
        ),
        (
            "crdt_state_pending_changes",
            "gauge",
            "changes waiting for the log",
            services.committer.pending,
        ),
        (
            "crdt_state_cache_hits_total",
            "counter",
            "REST reads served from the hot cache",
            services.cache_hits,
        ),
        (
            "crdt_state_cache_misses_total",
            "counter",
            "REST reads that missed the hot cache",
            services.cache_misses,
        ),
    ]
    text = "".join(
        f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n{name} {value}\n"
        for name, kind, help_text, value in lines
    )
    return Response(text, media_type="text/plain; version=0.0.4")


async def get_history(request: Request) -> Response:
    services = services_of(request)
    key = panel_key(request)
    authorize(request, key.workspace_id, Role.READ)
    limit = query_int(request, "limit", 50, MAX_HISTORY_PAGE)
    offset = query_int(request, "offset", 0)
    since, until = query_time(request, "since"), query_time(request, "until")
    entries, total = await services.log.history(
        key, limit=limit, offset=offset, since=since, until=until
    )
    await fill_patches(services.log, key, entries)
    if total == 0 and key not in services.registry.rooms:
        if await services.log.load(key) is None:
            raise PanelNotFound(f"Panel '{key}' has no history.")
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


def edit_answer(key: PanelKey, version: int, result: EditResult, applied: int) -> dict[str, Any]:
    return {
        "workspaceId": key.workspace_id,
        "panelId": key.panel_id,
        "version": version,
        "appliedOperations": applied,
        "merged": result.merged,
        "inversePatch": result.inverse,
    }


def patch_request(request: Request, raw: Any) -> tuple[Any, dict[str, Any], int | None, bool]:
    """(patch, body, version, strict) from either content type."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json-patch+json" or isinstance(raw, list):
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
        if not tag.isdigit():
            raise BadRequest('If-Match must be a version in quotes, e.g. "42".')
        version, strict = int(tag), True
    return patch, body, version, strict


async def patch_state(request: Request) -> Response:
    services = services_of(request)
    key = panel_key(request)
    principal = authorize(request, key.workspace_id, Role.WRITE)
    raw = await read_json(request, services.settings.max_body_bytes)
    patch, body, version, strict = patch_request(request, raw)
    ops = parse_patch(patch)
    who = attribution(body, principal)
    dry_run = flag(request, "dryRun", "dry_run")
    if not dry_run:
        await writable(services)
    if not isinstance(body.get("snapshotBefore", False), bool):
        raise BadRequest("'snapshotBefore' must be true or false.", field="snapshotBefore")
    snapshot_before = body.get("snapshotBefore") is True and not dry_run

    async def work() -> tuple[int, Any]:
        room = await services.registry.open(key, create=False)
        snapshot = None
        if snapshot_before and services.snapshots is not None:
            snapshot = await services.snapshots.snapshot_before_edit(
                key.workspace_id, principal.subject
            )
        await room.settle()
        current = room.version
        if version is not None and version > current:
            raise VersionConflict(
                f"Version {version} is newer than the panel's ({current}).",
                currentVersion=current,
            )
        if strict and version is not None and version != current:
            raise VersionConflict(
                f"The panel is at version {current}, not {version}.", currentVersion=current
            )
        if version is None or version == current:
            result = await room.call(edits.patch, room, ops, who, dry_run=dry_run)
        else:
            base, _ = await base_doc(services, key, version)
            result = await room.call(edits.patch_at, room, ops, base, version, who, dry_run=dry_run)
        if dry_run:
            answer = edit_answer(key, current, result, len(ops))
            return 200, {**answer, "dryRun": True, "state": result.after}
        answer = edit_answer(key, await committed(result.future, room), result, len(ops))
        if snapshot is not None:
            answer["snapshot"] = snapshot.to_json()
        return 200, answer

    if dry_run:
        status, answer = await work()
        return JSONResponse(answer, status_code=status)
    return await once(request, principal, work)


async def base_doc(services: Services, key: PanelKey, version: int) -> tuple[PanelDoc, Any]:
    loaded = await services.log.load(key, until=version)
    if loaded is None:
        raise PanelNotFound(f"Panel '{key}' does not exist.")
    return PanelDoc(rebuild(loaded)), loaded


async def put_state(request: Request) -> Response:
    services = services_of(request)
    key = panel_key(request)
    principal = authorize(request, key.workspace_id, Role.WRITE)
    body = await read_json(request, services.settings.max_body_bytes)
    if not isinstance(body, dict) or "state" not in body:
        raise BadRequest('The body needs \'state\': {"$state": {...}, "$computed": {...}}.')
    view = edits.check_view(body["state"])
    version = optional_int(body.get("version"), "version")
    who = attribution(body, principal)
    await writable(services)

    async def work() -> tuple[int, Any]:
        room, created = await services.registry.open_or_create(key, principal.subject)
        await room.settle()
        if version is not None and version != room.version and not created:
            raise VersionConflict(
                f"The panel is at version {room.version}, not {version}.",
                currentVersion=room.version,
            )
        result = await room.call(edits.replace, room, view, who)
        answer = edit_answer(key, await committed(result.future, room), result, 0)
        answer["created"] = created
        return (201 if created else 200), answer

    return await once(request, principal, work)


async def delete_state(request: Request) -> Response:
    services = services_of(request)
    key = panel_key(request)
    principal = authorize(request, key.workspace_id, Role.ADMIN)
    await writable(services)
    room = await services.registry.open(key, create=False)
    future = await room.call(
        room.delete, principal.subject, TriggeredBy.USER, request.headers.get("x-trigger-source")
    )
    version = await future
    await services.registry.evict(key)
    if services.cache is not None:
        await services.cache.drop(key)
    return JSONResponse(
        {
            "workspaceId": key.workspace_id,
            "panelId": key.panel_id,
            "version": version,
            "deleted": True,
        }
    )


async def revert_state(request: Request) -> Response:
    services = services_of(request)
    key = panel_key(request)
    principal = authorize(request, key.workspace_id, Role.WRITE)
    body = await read_json(request, services.settings.max_body_bytes)
    if not isinstance(body, dict):
        raise BadRequest("The body must be an object with 'targetVersion'.")
    target = optional_int(body.get("targetVersion"), "targetVersion")
    if target is None or target < 1:
        raise BadRequest("'targetVersion' must be a version (1 or more).", field="targetVersion")
    who = attribution({"triggeredBy": "user", **body}, principal)
    await writable(services)

    create_snapshot = body.get("createSnapshot") is True

    async def work() -> tuple[int, Any]:
        view, _ = await view_at(services, key, target)
        room = await services.registry.open(key, create=False)
        snapshot = None
        if create_snapshot and services.snapshots is not None:
            snapshot = await services.snapshots.create(
                key.workspace_id,
                description=f"Before reverting {key.panel_id} to version {target}.",
                subject=principal.subject,
            )
        result = await room.call(edits.replace, room, view, who, change_type=ChangeType.REVERTED)
        answer = edit_answer(key, await committed(result.future, room), result, 0)
        answer["revertedTo"] = target
        if snapshot is not None:
            answer["snapshot"] = snapshot.to_json()
        return 200, answer

    return await once(request, principal, work)
