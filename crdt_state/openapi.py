"""The HTTP API as an OpenAPI 3.1 document: the one description of every route, its parameters,
bodies and answers, served at `GET /openapi.json` (faces/api_docs.py).

It cannot drift from the code unnoticed: tests/test_openapi.py checks that it names every
route of the app (and nothing else), every error code and detail the server uses, and that it
is valid OpenAPI 3.1; the contract suite checks every answer it gets against the schemas here
(openapi_schemas.py), whose objects are closed (`additionalProperties: false`).

OpenAPI has no WebSocket operations: the sockets are described under `x-websockets`.
"""

from __future__ import annotations

import functools
from typing import Any

from . import __version__
from .openapi_context import CONTEXT_SCHEMAS, context_paths
from .openapi_inspect import INSPECT_SCHEMAS, inspect_paths
from .openapi_paths import ERROR_RESPONSES, content, param, paths
from .openapi_schemas import (
    NATURAL,
    NUMBER,
    POINTER,
    STRING,
    STRINGS,
    Schema,
    closed,
    map_of,
    ref,
    schemas,
)

DESCRIPTION = """\
A collaborative state server: panels of JSON state (`$state`, `$computed`) kept as CRDT
documents, edited over REST (PUT, RFC 6902 JSON Patch) and Yjs, versioned in a durable log,
snapshotted to Git.

- **Auth**: `Authorization: Bearer <JWT>` with the claim `workspaces`: `{"<workspace>":
  "read" | "write" | "admin", "*": ...}`; the server-admin API needs `"admin": true`.
- **Errors**: every error answers `{"error": code, "message": sentence, ...details}`
  (schema `Error`); a request that fails changes nothing.
- **Ids**: workspace and panel ids have 1 to 200 characters (no control or bidi characters,
  not `.` or `..`; a workspace id has no `:`), percent-encoded as UTF-8 in the path.
- **Writes** answer `ETag: "<version>"` and honour `Idempotency-Key` (a retry gets the first
  answer).
- **WebSockets**: `x-websockets` below (Yjs, Hocuspocus and JSON subscriptions).
"""

# --- errors -------------------------------------------------------------------------------

# Every code a StateError answers with, by status (tests/test_openapi.py checks the list
# against the StateError classes of the server).
ERROR_CODES: dict[int, list[str]] = {
    400: ["bad_request", "malformed_sha", "ambiguous_sha", "invalid_name"],
    401: ["unauthorized"],
    403: ["forbidden"],
    404: ["panel_not_found", "commit_not_found", "panel_not_in_snapshot", "not_found"],
    405: ["method_not_allowed"],
    409: [
        "version_conflict",
        "test_failed",
        "path_not_found",
        "stale_epoch",
        "idempotency_pending",
        "compaction_conflict",
    ],
    410: ["version_compacted"],
    413: [
        "too_large",
        "too_many_operations",
        "patch_too_large",
        "too_many_values",
        "document_too_large",
    ],
    422: ["invalid_patch", "invalid_value"],
    429: ["rate_limited"],
    500: ["internal_error", "repository_corrupt", "git_failed"],
    503: ["unavailable", "commit_pending", "repository_busy"],
}
# Codes whose status is another error's (restore_incomplete: its first failure's).
ANY_STATUS_CODES = ["restore_incomplete"]

# Every detail an error may carry beside `error` and `message` (tests/test_openapi.py checks
# this against the keyword arguments the server's code gives its errors).
ERROR_DETAILS: dict[str, Schema] = {
    "field": {**STRING, "description": "The request member at fault."},
    "currentVersion": NATURAL,
    "version": {**NATURAL, "description": "The version asked for."},
    "availableFrom": {**NATURAL, "description": "The oldest version time travel reaches."},
    "limit": NATURAL,
    "unit": STRING,
    "operation": {**NATURAL, "description": "The index of the patch operation at fault."},
    "path": POINTER,
    "panel": STRING,
    "workspace": STRING,
    "needed": {"enum": ["read", "write", "admin"]},
    "retryAfter": {**NUMBER, "description": "Seconds; also the Retry-After header."},
    "sha": STRING,
    "gitCommit": STRING,
    "missing": {**STRINGS, "description": "Panels the commit does not hold."},
    "restored": map_of(ref("RestoredPanel")),
    "failed": map_of(closed({"error": STRING, "message": STRING})),
}

ERROR_SCHEMAS: dict[str, Schema] = {
    "Error": closed(
        {
            "error": {
                "type": "string",
                "enum": sorted(
                    {code for codes in ERROR_CODES.values() for code in codes}
                    | set(ANY_STATUS_CODES)
                ),
            },
            "message": {**STRING, "description": "A sentence a user can act on."},
        },
        ERROR_DETAILS,
        "Every error: a stable code, a sentence, and details. Nothing was half-applied.",
    ),
}


# --- the WebSockets, the components, the document -----------------------------------------

_TOKEN = "The bearer token (or the subprotocol `bearer.<jwt>`, with `crdt-state` offered)."
WEBSOCKETS: list[dict[str, Any]] = [
    {
        "path": "/ws/yjs/{workspace}/{panel}",
        "summary": "The panel's Yjs document (y-websocket protocol, binary frames)",
        "parameters": {"token": _TOKEN, "epoch": "The epoch of the client's copy (4409 if old)."},
        "messages": {
            "0 sync": "step 1 (state vector), step 2 / update (Yjs update); read: updates dropped",
            "1 awareness": "presence updates, relayed",
            "3 query-awareness": "answered with every presence state",
        },
        "closeCodes": {
            "1012": "server restarting",
            "1013": "try again later (slow consumer)",
            "4400": "malformed or refused frame, bad id",
            "4401": "no token, bad, expired or revoked",
            "4403": "not allowed in this workspace",
            "4404": "no such panel, or deleted",
            "4409": "stale epoch: drop the local copy",
            "4413": "too large",
            "4429": "rate limited",
        },
        "description": "docs/PROTOCOL.md",
    },
    {
        "path": "/ws/hocuspocus",
        "summary": "Many panels' Yjs documents over one socket (Hocuspocus protocol, "
        "`@hocuspocus/provider` 3); a document is named `{workspace}/{panel}`",
        "parameters": {"token": "A token for documents whose Auth message carries none."},
        "messages": {
            "every frame": "varstring(document name) varuint(type) body",
            "0 sync": "as on /ws/yjs; step 2 and updates are acknowledged with 8",
            "1 awareness": "presence updates, relayed (and echoed to the sender)",
            "2 auth": "client: token; server: authenticated (scope readonly | read-write) "
            "or permission denied (`<error code>: <message>`), for that document only",
            "3 query-awareness": "answered with every presence state",
            "5 stateless": "accepted, not relayed",
            "7 close": "client: close the document; server: the document closed "
            "(`<close code>: <reason>`)",
            "8 sync-status": "server: 1 once an update is applied and logged, 0 if refused",
        },
        "closeCodes": {
            "1012": "server restarting",
            "1013": "try again later (slow consumer, store unavailable)",
            "4400": "a frame that names no document, a text frame",
            "4401": "a token of the socket's documents expired or was revoked",
        },
        "description": "docs/PROTOCOL.md",
    },
    {
        "path": "/ws/state/{workspace}",
        "summary": "JSON subscriptions to panels (text frames)",
        "parameters": {"token": _TOKEN},
        "messages": {
            "subscribe": 'client: {"type": "subscribe", "panelId", "version"?}',
            "unsubscribe": 'client: {"type": "unsubscribe", "panelId"}',
            "ping": 'client: {"type": "ping"}',
            "state_sync": "server: {type, panelId, state, version, epoch, timestamp}",
            "state_update": "server: {type, workspaceId, panelId, version, epoch, changeType, "
            "patch, triggeredBy, triggerSource, timestamp, ...}",
            "state_deleted": "server: {type, workspaceId, panelId, version, ...}",
            "subscribed": "server: {type, panelId, version}",
            "unsubscribed": "server: {type, panelId}",
            "pong": "server: {type}",
            "error": "server: {type, code, message, panelId?} (the socket stays open)",
        },
        "description": "docs/PROTOCOL.md",
    },
]

_HEADERS = {
    "ETag": ('The version, in quotes: `"42"`.', {"type": "string"}),
    "RetryAfter": ("Seconds to wait before retrying.", {"type": "integer"}),
    "WWWAuthenticate": ("`Bearer`.", {"type": "string"}),
}


def _error_response(status: int) -> dict[str, Any]:
    codes = ERROR_CODES[status] + (ANY_STATUS_CODES if status != 405 else [])
    headers: dict[str, Any] = {}
    if status in (429, 503):
        headers["Retry-After"] = {"$ref": "#/components/headers/RetryAfter"}
    if status == 401:
        headers["WWW-Authenticate"] = {"$ref": "#/components/headers/WWWAuthenticate"}
    out: dict[str, Any] = {
        "description": "`error`: " + ", ".join(f"`{code}`" for code in codes) + ".",
        "content": content(ref("Error")),
    }
    if headers:
        out["headers"] = headers
    return out


def _components() -> dict[str, Any]:
    id_schema = {"type": "string", "minLength": 1, "maxLength": 200}
    return {
        "schemas": {**schemas(), **CONTEXT_SCHEMAS, **INSPECT_SCHEMAS, **ERROR_SCHEMAS},
        "parameters": {
            "workspace": param(
                "workspace",
                "path",
                {**id_schema, "pattern": "^[^:]+$"},
                "The workspace id.",
                required=True,
            ),
            "panel": param("panel", "path", id_schema, "The panel id.", required=True),
            "IdempotencyKey": param(
                "Idempotency-Key",
                "header",
                {"type": "string"},
                "A retry with the same key (same caller, same path) gets the first answer.",
            ),
        },
        "responses": {name: _error_response(status) for status, name in ERROR_RESPONSES.items()},
        "headers": {
            name: {"description": text, "schema": schema}
            for name, (text, schema) in _HEADERS.items()
        },
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "Claims: `sub`, `exp`, `workspaces` (roles by workspace), "
                "`admin` (server admin).",
            }
        },
    }


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once; do not mutate it)."""
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "crdt-state",
            "version": __version__,
            "description": DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "security": [{"bearer": []}],
        "tags": [
            {"name": "panels", "description": "A panel's state, history and revert."},
            {"name": "snapshots", "description": "Git snapshots of a workspace."},
            {"name": "ai", "description": "A workspace's state for an LLM prompt."},
            {"name": "admin", "description": "Server admin: token revocation, caches."},
            {"name": "operations", "description": "Health, readiness, metrics, this API."},
            {"name": "inspector", "description": "The web inspector's page (docs/INSPECTOR.md)."},
        ],
        "paths": {**paths(), **context_paths(), **inspect_paths()},
        "components": _components(),
        "x-websockets": WEBSOCKETS,
    }
