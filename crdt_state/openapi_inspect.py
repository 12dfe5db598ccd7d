"""The inspector's part of the OpenAPI document (openapi.py): its page and assets, and the two
read endpoints it uses (faces/inspect.py, docs/INSPECTOR.md)."""

from __future__ import annotations

from typing import Any

from .openapi_paths import PANEL, WORKSPACE, WORKSPACE_ERRORS, answer, operation, param, query
from .openapi_schemas import BOOLEAN, NATURAL, STRING, STRINGS, TIME, Schema, closed, nullable, ref

INSPECT_SCHEMAS: dict[str, Schema] = {
    "WorkspacePanel": closed(
        {
            "panelId": STRING,
            "version": NATURAL,
            "epoch": STRING,
            "sizeBytes": {**NATURAL, "description": "Bytes of the panel's JSON view."},
            "updatedAt": nullable(TIME),
            "connections": {**NATURAL, "description": "Yjs clients on this replica."},
            "subjects": {**STRINGS, "description": "Their token subjects (at most 50)."},
        }
    ),
    "WorkspacePanels": closed(
        {
            "workspaceId": STRING,
            "subject": {**STRING, "description": "The caller."},
            "role": {
                "enum": ["read", "write", "admin"],
                "description": "The caller's role in the workspace.",
            },
            "panels": {"type": "array", "items": ref("WorkspacePanel")},
            "totalPanels": NATURAL,
            "limit": NATURAL,
            "offset": NATURAL,
        },
        description="The workspace's live panels, by id, a page at a time.",
    ),
    "PresenceClient": closed(
        {
            "clientId": NATURAL,
            "clock": NATURAL,
            "state": {"description": "The awareness state the client set (any JSON)."},
        }
    ),
    "PresenceConnection": closed({"subject": STRING, "canWrite": BOOLEAN}),
    "PanelPresence": closed(
        {
            "workspaceId": STRING,
            "panelId": STRING,
            "live": {**BOOLEAN, "description": "The panel's room is loaded on this replica."},
            "clients": {"type": "array", "items": ref("PresenceClient")},
            "connections": {"type": "array", "items": ref("PresenceConnection")},
        },
        description="Who is in the panel now, as this replica's room knows it.",
    ),
}


def _page(description: str, *media: str) -> dict[str, Any]:
    text = {"schema": {"type": "string"}}
    return {"description": description, "content": {kind: text for kind in media}}


def inspect_paths() -> dict[str, Any]:
    tags = ("inspector",)
    off = "Off unless CRDT_STATE_INSPECTOR is on (default: on with --dev): 404; not built: 503."
    return {
        "/inspect": {
            "get": operation(
                "inspector",
                "The web inspector (docs/INSPECTOR.md)",
                "none",
                {200: _page("A single-page app; it asks for a token.", "text/html")},
                (404, 503),
                tags=tags,
                description=off,
            )
        },
        "/inspect/assets/{name}": {
            "parameters": [
                param("name", "path", STRING, "A hashed file name of the bundle.", required=True)
            ],
            "get": operation(
                "inspectorAsset",
                "A script, style or icon of the inspector (cached for a year)",
                "none",
                {200: _page("The file.", "text/javascript", "text/css", "image/svg+xml")},
                (404, 503),
                tags=tags,
                description=off,
            ),
        },
        "/api/state/{workspace}": {
            "parameters": [WORKSPACE],
            "get": operation(
                "listWorkspacePanels",
                "The workspace's panels: version, size, last change, who is connected",
                "read",
                {200: answer("A page of panels, by id.", "WorkspacePanels")},
                WORKSPACE_ERRORS,
                tags=("panels",),
                parameters=(
                    query("limit", {"type": "integer", "minimum": 0, "maximum": 1000}, "≤ 1000"),
                    query("offset", {"type": "integer", "minimum": 0}, "Panels to skip."),
                ),
                description="Connections are this replica's.",
            ),
        },
        "/api/state/{workspace}/{panel}/presence": {
            "parameters": [WORKSPACE, PANEL],
            "get": operation(
                "getPanelPresence",
                "Who is in the panel now (its awareness states), read-only",
                "read",
                {200: answer("The presence.", "PanelPresence")},
                WORKSPACE_ERRORS,
                tags=("panels",),
                description="As the panel's room on this replica knows it (`live: false`: "
                "not loaded here).",
            ),
        },
    }
