"""The paths of the OpenAPI document (openapi.py): every HTTP route, its parameters, body and
answers (schemas in openapi_schemas.py; error answers in components/responses)."""

from __future__ import annotations

from typing import Any

from .openapi_schemas import Schema, ref

JSON = "application/json"
JSON_PATCH = "application/json-patch+json"

ROLES = {
    "read": "Role: read in the workspace.",
    "write": "Role: write in the workspace.",
    "admin": "Role: admin in the workspace.",
    "server-admin": 'A server admin: a token with the claim `"admin": true`.',
    "none": "No token needed.",
}

ERROR_RESPONSES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Gone",
    413: "TooLarge",
    422: "Unprocessable",
    429: "RateLimited",
    500: "ServerError",
    503: "Unavailable",
}
# What every workspace route may answer besides its own: a bad id, the token, the role, the
# request rate, a server or store failure.
WORKSPACE_ERRORS = (400, 401, 403, 429, 500, 503)
WRITE_ERRORS = (*WORKSPACE_ERRORS, 404, 409, 413, 422)


# --- building blocks ----------------------------------------------------------------------


def param(name: str, where: str, schema: Schema, description: str, **extra: Any) -> Schema:
    return {"name": name, "in": where, "schema": schema, "description": description, **extra}


def query(name: str, schema: Schema, description: str) -> Schema:
    return param(name, "query", schema, description)


def content(schema: Schema, media: str = JSON) -> dict[str, Any]:
    return {media: {"schema": schema}}


def answer(description: str, schema: str, headers: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": content(ref(schema))}
    if headers:
        out["headers"] = {name: {"$ref": f"#/components/headers/{name}"} for name in headers}
    return out


def request_body(schema: str, description: str, *, required: bool = True) -> dict[str, Any]:
    return {"description": description, "required": required, "content": content(ref(schema))}


def operation(
    operation_id: str,
    summary: str,
    role: str,
    answers: dict[int, dict[str, Any]],
    errors: tuple[int, ...],
    *,
    tags: tuple[str, ...],
    parameters: tuple[Schema, ...] = (),
    body: dict[str, Any] | None = None,
    description: str = "",
) -> dict[str, Any]:
    responses: dict[str, Any] = {str(status): given for status, given in answers.items()}
    for status in sorted(set(errors)):
        responses[str(status)] = {"$ref": f"#/components/responses/{ERROR_RESPONSES[status]}"}
    out: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "description": " ".join(part for part in (description, ROLES[role]) if part),
        "tags": list(tags),
        "x-role": role,
    }
    if parameters:
        out["parameters"] = list(parameters)
    if body is not None:
        out["requestBody"] = body
    out["responses"] = dict(sorted(responses.items()))
    if role == "none":
        out["security"] = []
    return out


WORKSPACE = {"$ref": "#/components/parameters/workspace"}
PANEL = {"$ref": "#/components/parameters/panel"}
IDEMPOTENCY = {"$ref": "#/components/parameters/IdempotencyKey"}


def reserved(path: str, method: str, tag: str = "snapshots") -> dict[str, Any]:
    """The methods answered 405 on the workspace paths that shadow panel ids."""
    return operation(
        f"{path}{method.capitalize()}Reserved",
        f"Reserved: {method.upper()} is not allowed here",
        "none",
        {},
        (400, 405),
        tags=(tag,),
        description=f"`{path}` is a workspace endpoint, not a panel id over REST: always 405.",
    )


# --- the paths ----------------------------------------------------------------------------


def _panel_paths() -> dict[str, Any]:
    panels = ("panels",)
    base = "/api/state/{workspace}/{panel}"
    written = ("ETag",)
    return {
        base: {
            "parameters": [WORKSPACE, PANEL],
            "get": operation(
                "getPanelState",
                "The panel's state",
                "read",
                {200: answer("The panel.", "PanelState", written)},
                (*WORKSPACE_ERRORS, 404, 410),
                tags=panels,
                parameters=(
                    query("version", {"type": "integer", "minimum": 0}, "The state at N."),
                    query(
                        "include_history",
                        {"type": "boolean"},
                        "Add the 20 newest history entries and `totalChanges` "
                        "(alias `includeHistory`).",
                    ),
                ),
            ),
            "put": operation(
                "putPanelState",
                "Replace roots of the panel's state (creates a missing panel)",
                "write",
                {200: answer("Written (`created`: it was made).", "PutAnswer", written)},
                WRITE_ERRORS,
                tags=panels,
                parameters=(IDEMPOTENCY,),
                body=request_body("PutRequest", "The roots to replace."),
            ),
            "patch": operation(
                "patchPanelState",
                "Apply an RFC 6902 JSON Patch, atomically",
                "write",
                {200: answer("Applied (or, dry run, computed).", "PatchAnswer", written)},
                (*WRITE_ERRORS, 410),
                tags=panels,
                parameters=(
                    query("dryRun", {"type": "boolean"}, "Answer the result, change nothing."),
                    param(
                        "If-Match",
                        "header",
                        {"type": "string"},
                        'A version in quotes (`"42"`): strict at that version.',
                    ),
                    IDEMPOTENCY,
                ),
                body={
                    "description": "A bare JSON Patch array, or the object with `patches`.",
                    "required": True,
                    "content": {
                        **content(ref("PatchBody"), JSON_PATCH),
                        **content(ref("PatchBody")),
                    },
                },
            ),
            "delete": operation(
                "deletePanel",
                "Delete the panel (its history is kept)",
                "admin",
                {200: answer("Deleted.", "DeleteAnswer")},
                (*WORKSPACE_ERRORS, 404, 409),
                tags=panels,
                parameters=(param("X-Trigger-Source", "header", {"type": "string"}, "Logged."),),
            ),
        },
        f"{base}/history": {
            "parameters": [WORKSPACE, PANEL],
            "get": operation(
                "getPanelHistory",
                "A page of the panel's log, newest first",
                "read",
                {200: answer("The page.", "HistoryPage")},
                (*WORKSPACE_ERRORS, 404),
                tags=panels,
                parameters=(
                    query("limit", {"type": "integer", "minimum": 0, "maximum": 1000}, "≤ 1000"),
                    query("offset", {"type": "integer", "minimum": 0}, "Entries to skip."),
                    query("since", {"type": "string", "format": "date-time"}, "With a zone."),
                    query("until", {"type": "string", "format": "date-time"}, "With a zone."),
                ),
            ),
        },
        f"{base}/revert": {
            "parameters": [WORKSPACE, PANEL],
            "post": operation(
                "revertPanel",
                "Make the state equal to an earlier version's (a new, forward change)",
                "write",
                {200: answer("Reverted.", "RevertAnswer", written)},
                (*WRITE_ERRORS, 410),
                tags=panels,
                parameters=(IDEMPOTENCY,),
                body=request_body("RevertRequest", "The version to go back to."),
            ),
        },
    }


def _snapshot_paths() -> dict[str, Any]:
    tags = ("snapshots",)
    base = "/api/state/{workspace}"
    return {
        f"{base}/snapshot": {
            "parameters": [WORKSPACE],
            "get": operation(
                "getWorkspaceSnapshot",
                "Every live panel of the workspace, or a Git commit's",
                "read",
                {200: answer("The panels.", "WorkspaceSnapshot")},
                (*WORKSPACE_ERRORS, 404),
                tags=tags,
                parameters=(
                    query(
                        "git_commit",
                        {"type": "string", "pattern": "^[0-9a-fA-F]{4,40}$"},
                        "The workspace as this commit holds it (alias `gitCommit`).",
                    ),
                ),
            ),
            "post": operation(
                "createSnapshot",
                "Commit the workspace's panels to Git",
                "admin",
                {201: answer("The snapshot.", "Snapshot")},
                (*WORKSPACE_ERRORS, 409, 413),
                tags=tags,
                parameters=(IDEMPOTENCY,),
                body=request_body("SnapshotRequest", "Optional.", required=False),
            ),
            **{m: reserved("snapshot", m) for m in ("put", "patch", "delete")},
        },
        f"{base}/snapshot/status": {
            "parameters": [WORKSPACE],
            "get": operation(
                "getSnapshotStatus",
                "Git head, push, automatic snapshots, recent snapshots",
                "read",
                {200: answer("The status.", "SnapshotStatus")},
                WORKSPACE_ERRORS,
                tags=tags,
            ),
        },
        f"{base}/restore": {
            "parameters": [WORKSPACE],
            "post": operation(
                "restoreSnapshot",
                "Put panels back to a Git commit's state (never deletes)",
                "write",
                {200: answer("Restored.", "RestoreAnswer")},
                WRITE_ERRORS,
                tags=tags,
                parameters=(IDEMPOTENCY,),
                body=request_body("RestoreRequest", "The commit, and which panels (default: all)."),
                description="Partly failed: `restore_incomplete`, with its first failure's status.",
            ),
            **{m: reserved("restore", m) for m in ("get", "put", "patch", "delete")},
        },
    }


def _server_paths() -> dict[str, Any]:
    admin = ("admin",)
    ops = ("operations",)
    return {
        "/api/admin/revocations": {
            "post": operation(
                "createRevocation",
                "Revoke a subject's tokens, or one token id",
                "server-admin",
                {201: answer("Revoked.", "RevocationCreated")},
                (400, 401, 403, 413, 500, 503),
                tags=admin,
                body=request_body("RevocationRequest", "Whom to revoke."),
            ),
            "get": operation(
                "listRevocations",
                "The revocations in force, oldest first",
                "server-admin",
                {200: answer("A page.", "RevocationPage")},
                (400, 401, 403, 500, 503),
                tags=admin,
                parameters=(
                    query("after", {"type": "integer", "minimum": 0}, "The id to start after."),
                    query("limit", {"type": "integer", "minimum": 0, "maximum": 1000}, "≤ 1000"),
                ),
            ),
        },
        "/health": {
            "get": operation(
                "health", "Liveness", "none", {200: answer("Alive.", "Health")}, (), tags=ops
            )
        },
        "/ready": {
            "get": operation(
                "ready",
                "Readiness: the log answers and its writes go through",
                "none",
                {
                    200: answer("Ready.", "Readiness"),
                    503: answer("Not ready (same body).", "Readiness"),
                },
                (),
                tags=ops,
            )
        },
        "/metrics": {
            "get": operation(
                "metrics",
                "Prometheus series: histograms, counters and gauges (docs/OPERATIONS.md)",
                "none",
                {
                    200: {
                        "description": "The text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                (),
                tags=ops,
            )
        },
        "/openapi.json": {
            "get": operation(
                "openapi",
                "This document",
                "none",
                {200: {"description": "OpenAPI 3.1.", "content": content({"type": "object"})}},
                (),
                tags=ops,
            )
        },
        "/api/docs": {
            "get": operation(
                "apiDocs",
                "A page that renders this document",
                "none",
                {
                    200: {
                        "description": "Self-contained HTML (no external requests).",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
                (),
                tags=ops,
            )
        },
    }


def paths() -> dict[str, Any]:
    return {**_server_paths(), **_snapshot_paths(), **_panel_paths()}
