"""The AI context's part of the OpenAPI document (openapi.py): `GET /api/state/{ws}/context`
(faces/ai_context.py, prompt_context.py) and the server admin's view of its cache."""

from __future__ import annotations

from typing import Any

from .openapi_paths import WORKSPACE, WORKSPACE_ERRORS, answer, operation, query, reserved
from .openapi_schemas import (
    BOOLEAN,
    CHANGE_TYPE,
    NATURAL,
    NUMBER,
    STRING,
    STRINGS,
    TIME,
    TRIGGERED_BY,
    Schema,
    closed,
    nullable,
    ref,
)

_IDENT: dict[str, Schema] = {"panelId": STRING, "version": NATURAL}

CONTEXT_SCHEMAS: dict[str, Schema] = {
    "ContextPanel": closed(
        {**_IDENT, "epoch": STRING, "shown": {"enum": ["full", "shortened", "heading", "omitted"]}}
    ),
    "ContextCut": closed(
        {"cut": {"enum": ["omitted", "shortened", "heading", "changes"]}},
        {
            **_IDENT,
            "level": NATURAL,
            "strings": NATURAL,
            "arrays": NATURAL,
            "objects": NATURAL,
            "notShown": {**NATURAL, "description": 'With `"cut": "changes"`.'},
        },
        "What the token budget left out: a panel (omitted, or shortened with counts), or changes.",
    ),
    "ContextChange": closed(
        {
            **_IDENT,
            "epoch": STRING,
            "changeType": CHANGE_TYPE,
            "triggeredBy": TRIGGERED_BY,
            "triggerSource": nullable(STRING),
            "subject": nullable(STRING),
            "occurredAt": TIME,
            "summary": STRING,
            "shown": {**BOOLEAN, "description": "In `context` (else cut for the budget)."},
        }
    ),
    "AIContext": closed(
        {
            "workspaceId": STRING,
            "format": {"enum": ["markdown", "json"]},
            "maxTokens": NATURAL,
            "tokenEstimate": NATURAL,
            "tokenEstimator": STRING,
            "truncated": BOOLEAN,
            "versions": {
                **STRING,
                "description": "`p1=3,p2=7`: every panel's version (for `changesSince`).",
            },
            "panels": {"type": "array", "items": ref("ContextPanel")},
            "missing": {**STRINGS, "description": "Panels asked for that do not exist."},
            "cut": {"type": "array", "items": ref("ContextCut")},
            "context": {**STRING, "description": "The text for the prompt."},
        },
        {
            "changes": {"type": "array", "items": ref("ContextChange")},
            "olderChangesNotListed": BOOLEAN,
        },
        "The workspace rendered for an LLM prompt within a token budget.",
    ),
    "ContextCacheStats": closed(
        {
            "contextRenders": NATURAL,
            "contextCacheHits": NATURAL,
            "contextJoined": NATURAL,
            "contextNotModified": NATURAL,
            "contextEvictions": NATURAL,
            "contextRenderSeconds": NUMBER,
            "entries": NATURAL,
            "bytes": NATURAL,
            "maxEntries": NATURAL,
            "maxBytes": NATURAL,
        }
    ),
}

_HEADERS = {
    "ETag": {"$ref": "#/components/headers/ETag"},
    "X-Context-Cache": {
        "description": "How the answer came: hit, joined or rendered.",
        "schema": {"enum": ["hit", "joined", "rendered"]},
    },
    "X-Panel-Versions": {
        "description": "`versions` again (left out when long).",
        "schema": {"type": "string"},
    },
}


def context_paths() -> dict[str, Any]:
    path = "/api/state/{workspace}/context"
    tags = ("ai",)
    rendered = answer("The context.", "AIContext")
    return {
        path: {
            "parameters": [WORKSPACE],
            "get": operation(
                "getAIContext",
                "The workspace's state rendered for an LLM prompt",
                "read",
                {
                    200: {**rendered, "headers": _HEADERS},
                    304: {
                        "description": "If-None-Match holds the current ETag.",
                        "headers": {"ETag": _HEADERS["ETag"]},
                    },
                },
                WORKSPACE_ERRORS,
                tags=tags,
                parameters=(
                    query("format", {"enum": ["markdown", "json"]}, "Default markdown."),
                    query("panels", STRING, "Panel ids, comma-separated, in order."),
                    {
                        **query("panel", {"type": "array", "items": STRING}, "One id each."),
                        "explode": True,
                    },
                    query(
                        "maxTokens",
                        {"type": "integer", "minimum": 50, "maximum": 1_000_000},
                        "The token budget (default 8000).",
                    ),
                    query(
                        "changesSince",
                        STRING,
                        "List changes since a version, an ISO-8601 time with a zone, or "
                        "an earlier answer's `versions`.",
                    ),
                    query(
                        "recentChanges",
                        {"type": "integer", "minimum": 0, "maximum": 200},
                        "List the N newest changes (not with `changesSince`).",
                    ),
                    {
                        "name": "If-None-Match",
                        "in": "header",
                        "schema": STRING,
                        "description": "An earlier ETag: 304 while it holds.",
                    },
                ),
            ),
            **{m: reserved("context", m, "ai") for m in ("post", "put", "patch", "delete")},
        },
        "/api/admin/context-cache": {
            "get": operation(
                "getContextCacheStats",
                "The AI context cache: renders, hits, entries",
                "server-admin",
                {200: answer("The counters.", "ContextCacheStats")},
                (401, 403, 500),
                tags=("admin",),
            )
        },
    }
