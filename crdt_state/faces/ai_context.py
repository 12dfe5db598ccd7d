"""The AI context of a workspace over REST (docs/AI-CONTEXT.md):

    GET /api/state/{ws}/context?format=markdown|json&panels=a,b&maxTokens=N
        &changesSince=<version | ISO time | p1=3,p2=7>  or  &recentChanges=N     (read)

answers JSON: the text for the prompt in `context`, the version of every panel (to PATCH
with), what was cut and the changes; ETag over the panel versions and the options
(If-None-Match: 304). `context_routes()` must come before the panel routes: "context" is
not a panel id over REST.
"""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth import Role
from ..errors import BadRequest, MethodNotAllowed
from ..ids import check_id
from ..prompt_changes import MAX_CHANGES, ChangesSince, parse_versions
from ..prompt_context import (
    DEFAULT_MAX_TOKENS,
    FORMATS,
    MAX_MAX_TOKENS,
    MIN_MAX_TOKENS,
    ContextOptions,
    prepare,
    produce,
)
from ..values import natural
from .context import context_of
from .http import authorize, query_int

RESERVED_PANEL_IDS = ("context",)
MAX_CHOSEN_PANELS = 10_000
MAX_VERSIONS_HEADER = 4096  # X-Panel-Versions is left out past this (the body has them)


def context_routes() -> list[Route]:
    """The routes, to be listed before `/api/state/{workspace}/{panel}`."""
    path = "/api/state/{workspace}/context"
    return [
        Route(path, get_context, methods=["GET"]),
        Route(path, reserved, methods=["POST", "PUT", "PATCH", "DELETE"]),
    ]


async def get_context(request: Request) -> Response:
    workspace = request.path_params["workspace"]
    authorize(request, workspace, Role.READ)
    options = context_options(request)
    context = context_of(request)
    cache = context.prompt_contexts
    prepared = await prepare(context.panels, workspace, options)
    if _matches(request.headers.get("if-none-match"), prepared.tag):
        cache.counters.not_modified += 1
        return Response(status_code=304, headers={"ETag": prepared.tag})
    answer, how = await cache.obtain(prepared.tag, lambda: produce(context.panels, cache, prepared))
    headers = {
        "ETag": answer.tag,
        "Cache-Control": "private, no-cache",
        "X-Context-Cache": how,
    }
    if len(answer.versions) <= MAX_VERSIONS_HEADER:
        headers["X-Panel-Versions"] = answer.versions
    return Response(answer.body, media_type="application/json", headers=headers)


async def reserved(request: Request) -> Response:
    raise MethodNotAllowed(
        f"{request.method} is not allowed here: '{request.url.path}' is the workspace's AI "
        "context (GET only), and 'context' is not a panel id over REST."
    )


# --- the query ----------------------------------------------------------------------------


def context_options(request: Request) -> ContextOptions:
    query = request.query_params
    form = query.get("format", "markdown").lower()
    if form not in FORMATS:
        raise BadRequest(f"'format' is one of {', '.join(FORMATS)}; got {form!r}.", field="format")
    max_tokens = query_int(request, "maxTokens", DEFAULT_MAX_TOKENS, MAX_MAX_TOKENS)
    if max_tokens < MIN_MAX_TOKENS:
        raise BadRequest(f"'maxTokens' is at least {MIN_MAX_TOKENS}.", field="maxTokens")
    return ContextOptions(form, chosen_panels(request), max_tokens, changes_since(request))


def chosen_panels(request: Request) -> tuple[str, ...] | None:
    """`panels=a,b` (comma-separated) and `panel=x` (repeatable, for ids with a comma), in
    the order given, each once; None when neither is given."""
    query = request.query_params
    names = [n for raw in query.getlist("panels") for n in raw.split(",") if n]
    names += query.getlist("panel")
    if not names and "panels" not in query and "panel" not in query:
        return None
    chosen = tuple(dict.fromkeys(names))
    if not 0 < len(chosen) <= MAX_CHOSEN_PANELS:
        raise BadRequest(
            f"'panels' names 1 to {MAX_CHOSEN_PANELS} panel ids, comma-separated.",
            field="panels",
        )
    for name in chosen:
        try:
            check_id("panel", name)
        except ValueError as exc:
            raise BadRequest(f"'panels': {exc}", field="panels") from None
    return chosen


def changes_since(request: Request) -> ChangesSince | None:
    query = request.query_params
    raw = query.get("changesSince")
    if raw is not None and "recentChanges" in query:
        raise BadRequest("Give 'changesSince' or 'recentChanges', not both.", field="changesSince")
    if raw is None:
        if "recentChanges" not in query:
            return None
        return ChangesSince("recent", query_int(request, "recentChanges", 0, MAX_CHANGES))
    version = natural(raw)
    if version is not None:
        return ChangesSince("version", version)
    if "=" in raw:
        try:
            pairs = parse_versions(raw)
        except UnicodeDecodeError:
            pairs = None
        if pairs is None:
            raise BadRequest(
                "'changesSince' as versions is the `versions` of an earlier answer: "
                "id=version pairs, comma-separated, ids percent-encoded.",
                field="changesSince",
            )
        return ChangesSince("versions", versions=pairs)
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise BadRequest(
            "'changesSince' is a version, an ISO-8601 time with a zone (e.g. "
            "2025-01-02T10:00:00Z) or the `versions` of an earlier answer.",
            field="changesSince",
        )
    return ChangesSince("time", moment=moment)


def _matches(header: str | None, tag: str) -> bool:
    if header is None:
        return False
    tags = [part.strip().removeprefix("W/") for part in header.split(",")]
    return "*" in tags or tag in tags
