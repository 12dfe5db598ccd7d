"""The JSON Schemas (2020-12, as OpenAPI 3.1 has them) of every body the HTTP faces take and
send, for the OpenAPI document (openapi.py).

Every answer object lists each field the server sends and closes with
`additionalProperties: false`: a field added to an answer without being added here fails the
contract suite, which checks every answer it gets against these (tests/openapi_check.py).
Request bodies are open: the server ignores members it does not know.

Schemas are plain data built by a few helpers; shared groups of fields (the write answer) are
merged in Python, so that every schema is flat and closed without `allOf` tricks.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
BOOLEAN: Schema = {"type": "boolean"}
NATURAL: Schema = {"type": "integer", "minimum": 0}
NUMBER: Schema = {"type": "number"}
TIME: Schema = {"type": "string", "format": "date-time"}
STRINGS: Schema = {"type": "array", "items": STRING}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """`schema` or null."""
    kind = schema.get("type")
    if isinstance(kind, str) and "$ref" not in schema:
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def closed(
    required: dict[str, Schema],
    optional: dict[str, Schema] | None = None,
    description: str | None = None,
) -> Schema:
    """An answer object: these fields (the `required` ones always there), and no others."""
    schema: Schema = {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": list(required),
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


def request(
    properties: dict[str, Schema], required: list[str], description: str | None = None
) -> Schema:
    """A request body object (open: unknown members are ignored by the server)."""
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if description:
        schema["description"] = description
    return schema


def map_of(schema: Schema, description: str | None = None) -> Schema:
    out: Schema = {"type": "object", "additionalProperties": schema}
    if description:
        out["description"] = description
    return out


# --- shared values ------------------------------------------------------------------------

TRIGGERED_BY: Schema = {"type": "string", "enum": ["user", "ai", "system"]}
CHANGE_TYPE: Schema = {"type": "string", "enum": ["created", "updated", "deleted", "reverted"]}
SNAPSHOT_TYPE: Schema = {"type": "string", "enum": ["manual", "auto", "pre_ai_edit"]}
POINTER: Schema = {"type": "string", "description": "A JSON Pointer (RFC 6901)."}
ROOT: Schema = {"type": "object", "description": "A root of the panel's state: any JSON object."}

VIEW_ROOTS: dict[str, Schema] = {"$state": ROOT, "$computed": ROOT}

_OPERATIONS: list[Schema] = [
    closed({"op": {"enum": ["add", "replace", "test"]}, "path": POINTER, "value": {}}),
    closed({"op": {"const": "remove"}, "path": POINTER}),
    closed({"op": {"enum": ["move", "copy"]}, "from": POINTER, "path": POINTER}),
]

# --- the panel face -----------------------------------------------------------------------

_PANEL_IDS: dict[str, Schema] = {"workspaceId": STRING, "panelId": STRING}

_WRITE_ANSWER: dict[str, Schema] = {
    "success": {"const": True},
    **_PANEL_IDS,
    "version": NATURAL,
    "previousVersion": NATURAL,
    "epoch": STRING,
    "updatedAt": nullable(TIME),
    "changed": {
        "type": "boolean",
        "description": "False when the write left the state as it was (`version`: the current).",
    },
    "merged": {
        "type": "boolean",
        "description": "Applied as a concurrent change against an older version.",
    },
    "inversePatch": ref("JsonPatch"),
}

PANEL_SCHEMAS: dict[str, Schema] = {
    "View": closed(VIEW_ROOTS, description="A panel's state: its two roots."),
    "ViewInput": {
        "type": "object",
        "properties": VIEW_ROOTS,
        "additionalProperties": False,
        "description": "The roots to replace; a root not given is left alone.",
    },
    "PatchOperation": {
        "description": "One RFC 6902 operation.",
        "oneOf": _OPERATIONS,
    },
    "JsonPatch": {"type": "array", "items": ref("PatchOperation")},
    "HistoryEntry": closed(
        {
            "id": {**NATURAL, "description": "The entry's version: unique within the panel."},
            "version": NATURAL,
            "previousVersion": NATURAL,
            "epoch": STRING,
            "changeType": CHANGE_TYPE,
            "patch": nullable(ref("JsonPatch")),
            "triggeredBy": TRIGGERED_BY,
            "triggerSource": nullable(STRING),
            "subject": nullable(STRING),
            "sizeBytes": NATURAL,
            "occurredAt": TIME,
        }
    ),
    "PanelState": closed(
        {
            **_PANEL_IDS,
            "state": ref("View"),
            "version": NATURAL,
            "epoch": STRING,
            "updatedAt": nullable(TIME),
        },
        {
            "currentVersion": {**NATURAL, "description": "With `?version=N`: the current one."},
            "history": {"type": "array", "items": ref("HistoryEntry"), "maxItems": 20},
            "totalChanges": NATURAL,
        },
        "The panel (with `?version=N`: as it was at N).",
    ),
    "PutAnswer": closed({**_WRITE_ANSWER, "created": BOOLEAN}),
    "PatchAnswer": closed(
        {**_WRITE_ANSWER, "appliedPatches": NATURAL},
        {
            "dryRun": {"const": True},
            "state": {**ref("View"), "description": "With `?dryRun=true`: the resulting state."},
            "snapshot": {
                **ref("Snapshot"),
                "description": 'With `"snapshotBefore": true`: the snapshot taken first.',
            },
        },
    ),
    "RevertAnswer": closed(
        {**_WRITE_ANSWER, "revertedTo": NATURAL, "snapshotId": nullable(STRING)},
        {"snapshot": ref("Snapshot")},
    ),
    "DeleteAnswer": closed(
        {**_PANEL_IDS, "success": {"const": True}, "version": NATURAL, "deleted": {"const": True}}
    ),
    "HistoryPage": closed(
        {
            **_PANEL_IDS,
            "history": {"type": "array", "items": ref("HistoryEntry")},
            "totalChanges": NATURAL,
            "limit": NATURAL,
            "offset": NATURAL,
        },
        description="A page of the panel's log, newest first.",
    ),
    "PutRequest": request(
        {
            "state": ref("ViewInput"),
            "version": {**NATURAL, "description": "Another than the current: 409."},
            "triggeredBy": TRIGGERED_BY,
            "triggerSource": STRING,
        },
        ["state"],
    ),
    "PatchRequest": request(
        {
            "patches": ref("JsonPatch"),
            "version": {**NATURAL, "description": "The version the paths were computed on."},
            "strict": {**BOOLEAN, "description": "Refuse a stale `version` (409)."},
            "triggeredBy": TRIGGERED_BY,
            "triggerSource": STRING,
            "snapshotBefore": {**BOOLEAN, "description": "Commit the workspace to Git first."},
        },
        ["patches"],
    ),
    "PatchBody": {
        "description": "A bare JSON Patch array, or the object with `patches`.",
        "oneOf": [ref("JsonPatch"), ref("PatchRequest")],
    },
    "RevertRequest": request(
        {
            "targetVersion": {"type": "integer", "minimum": 1},
            "createSnapshot": BOOLEAN,
            "triggeredBy": TRIGGERED_BY,
            "triggerSource": STRING,
        },
        ["targetVersion"],
    ),
}

# --- Git snapshots ------------------------------------------------------------------------

_SNAPSHOT_ROW: dict[str, Schema] = {
    "snapshotId": STRING,
    "workspaceId": STRING,
    "type": SNAPSHOT_TYPE,
    "description": nullable(STRING),
    "panelCount": NATURAL,
    "totalSizeBytes": NATURAL,
    "gitCommitHash": nullable(STRING),
    "panelVersions": map_of(NATURAL, "Each panel's version in the snapshot."),
    "createdBy": nullable(STRING),
}

SNAPSHOT_SCHEMAS: dict[str, Schema] = {
    "Snapshot": closed(
        {
            **_SNAPSHOT_ROW,
            "snapshotId": nullable(STRING),
            "created": {**BOOLEAN, "description": "A new commit was made."},
            "changedPanels": STRINGS,
            "createdAt": TIME,
        }
    ),
    "SnapshotRow": closed({**_SNAPSHOT_ROW, "createdAt": nullable(TIME)}),
    "SnapshotPanel": closed(
        {"version": nullable(NATURAL)},
        {**VIEW_ROOTS, "epoch": STRING},
        "A panel in a snapshot: its roots and version (at a commit: from its trailer).",
    ),
    "WorkspaceSnapshot": closed(
        {
            "workspaceId": STRING,
            "panels": map_of(ref("SnapshotPanel")),
            "totalPanels": NATURAL,
            "panelCount": NATURAL,
            "snapshotAt": nullable(TIME),
            "gitCommit": {**nullable(STRING), "description": "null: the live state."},
        },
        {"committedAt": nullable(TIME), "subject": STRING},
    ),
    "CommitHead": closed(
        {"gitCommitHash": STRING, "committedAt": TIME, "subject": STRING, "author": STRING}
    ),
    "PushStatus": closed(
        {"enabled": BOOLEAN},
        {
            "url": STRING,
            "state": {"enum": ["idle", "pushing", "retrying", "ok", "failed"]},
            "pushed_sha": nullable(STRING),
            "attempts": NATURAL,
            "last_error": nullable(STRING),
            "last_attempt_at": nullable(TIME),
            "last_success_at": nullable(TIME),
            "next_retry_at": nullable(TIME),
        },
        "The background push (its member names are snake_case, as the Git adapter sends).",
    ),
    "AutoSnapshotStatus": closed(
        {
            "enabled": BOOLEAN,
            "intervalSeconds": NUMBER,
            "pending": BOOLEAN,
            "lastAttemptAt": nullable(TIME),
            "lastSuccessAt": nullable(TIME),
            "lastCommit": nullable(STRING),
            "lastError": nullable(STRING),
            "failures": NATURAL,
        }
    ),
    "SnapshotStatus": closed(
        {
            "workspaceId": STRING,
            "head": nullable(ref("CommitHead")),
            "repository": closed({"ok": BOOLEAN, "problem": nullable(STRING)}),
            "push": ref("PushStatus"),
            "autoSnapshot": ref("AutoSnapshotStatus"),
            "snapshots": {"type": "array", "items": ref("SnapshotRow")},
        }
    ),
    "RestoredPanel": closed(
        {"version": NATURAL, "epoch": STRING, "created": BOOLEAN, "changed": BOOLEAN}
    ),
    "RestoreAnswer": closed(
        {
            "workspaceId": STRING,
            "gitCommit": {**STRING, "description": "The full sha."},
            "restoredCount": NATURAL,
            "panels": map_of(ref("RestoredPanel")),
        }
    ),
    "SnapshotRequest": request(
        {
            "type": SNAPSHOT_TYPE,
            "description": {**STRING, "maxLength": 2000},
            "commitToGit": {**BOOLEAN, "default": True},
        },
        [],
    ),
    "RestoreRequest": request(
        {
            "gitCommit": {**STRING, "pattern": "^[0-9a-fA-F]{4,40}$"},
            "panels": {**STRINGS, "minItems": 1, "maxItems": 10_000},
            "triggeredBy": TRIGGERED_BY,
        },
        ["gitCommit"],
    ),
}

# --- server admin, operations -------------------------------------------------------------

_REVOCATION: dict[str, Schema] = {
    "id": NATURAL,
    "revokedAt": TIME,
    "expiresAt": nullable(TIME),
    "revokedBy": STRING,
    "reason": nullable(STRING),
}
_ONE_TARGET: list[Schema] = [{"required": ["subject"]}, {"required": ["tokenId"]}]
_TARGETS: dict[str, Schema] = {"subject": STRING, "tokenId": STRING}

OPERATIONS_SCHEMAS: dict[str, Schema] = {
    "Revocation": {**closed(_REVOCATION, _TARGETS), "oneOf": _ONE_TARGET},
    "RevocationCreated": {
        **closed({**_REVOCATION, "closedSockets": NATURAL}, _TARGETS),
        "oneOf": _ONE_TARGET,
    },
    "RevocationPage": closed(
        {
            "revocations": {"type": "array", "items": ref("Revocation")},
            "next": {**nullable(NATURAL), "description": "The `after` of the next page."},
        }
    ),
    "RevocationRequest": {
        **request(
            {
                "subject": {**STRING, "minLength": 1, "maxLength": 1024},
                "tokenId": {**STRING, "minLength": 1, "maxLength": 1024},
                "reason": {**STRING, "maxLength": 500},
            },
            [],
            "Exactly one of `subject` or `tokenId`.",
        ),
        "oneOf": _ONE_TARGET,
    },
    "Health": closed({"status": {"const": "ok"}}),
    "Readiness": closed(
        {
            "status": {"enum": ["ready", "not_ready"]},
            "checks": closed({"database": STRING, "logWrites": STRING}),
        },
        {
            "gitSnapshots": closed(
                {
                    "status": {"enum": ["ok", "degraded"]},
                    "repositories": NATURAL,
                    "corrupt": NATURAL,
                    "autoSnapshotFailures": NATURAL,
                }
            ),
            "revocations": closed(
                {"status": {"enum": ["ok", "stale"]}, "inForce": NATURAL},
                {"secondsSinceRead": NUMBER},
            ),
            "jwks": closed(
                {
                    "status": {"enum": ["ok", "unavailable"]},
                    "keys": NATURAL,
                    "ageSeconds": nullable(NUMBER),
                }
            ),
        },
    ),
}


def schemas() -> dict[str, Schema]:
    """components/schemas, but for `Error` (openapi.py)."""
    return {**PANEL_SCHEMAS, **SNAPSHOT_SCHEMAS, **OPERATIONS_SCHEMAS}
