"""Operations endpoints: `/health` (liveness), `/ready` (readiness), `/metrics` (Prometheus)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .context import context_of
from .http import JSONResponse


def health_routes() -> list[Route]:
    return [Route("/health", health), Route("/ready", ready), Route("/metrics", metrics)]


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    """Readiness: the log answers and its pending writes are going through."""
    context = context_of(request)
    committer = context.panels.committer
    checks: dict[str, object] = {}
    try:
        await context.probe.ping()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {exc}"
    checks["logWrites"] = "ok" if committer.healthy else f"retrying ({committer.pending} pending)"
    is_ready = all(value == "ok" for value in checks.values())
    body: dict[str, Any] = {"status": "ready" if is_ready else "not_ready", "checks": checks}
    if context.snapshots is not None:
        # Reported, never part of readiness: a damaged repository must not stop live editing.
        body["gitSnapshots"] = _counts(await context.snapshots.check())
    if context.revocations is not None:
        # Reported: a replica that cannot read the store is unready through "database".
        body["revocations"] = context.revocations.health()
    if context.auth.keys is not None:
        body["jwks"] = context.auth.keys.status()  # reported: a stale key set still works
    return JSONResponse(body, status_code=200 if is_ready else 503)


def _counts(report: dict[str, Any]) -> dict[str, Any]:
    """Health, not names: /ready is unauthenticated, and workspace names are data. Lists and
    maps of workspaces become their sizes."""
    return {
        name: len(value) if isinstance(value, list | dict | set) else value
        for name, value in report.items()
    }


async def metrics(request: Request) -> Response:
    """A few Prometheus counters and gauges (text exposition format)."""
    context = context_of(request)
    rooms = list(context.registry.rooms.values())
    committer = context.panels.committer
    counters = context.panels.counters
    lines = [
        ("crdt_state_rooms", "gauge", "live rooms (panels with a doc in memory)", len(rooms)),
        (
            "crdt_state_connections",
            "gauge",
            "Yjs WebSocket clients",
            sum(len(room.peers) for room in rooms),
        ),
        (
            "crdt_state_committed_changes_total",
            "counter",
            "changes committed to the log",
            committer.committed,
        ),
        (
            "crdt_state_commit_batches_total",
            "counter",
            "group-commit transactions",
            committer.batches,
        ),
        ("crdt_state_pending_changes", "gauge", "changes waiting for the log", committer.pending),
        (
            "crdt_state_cache_hits_total",
            "counter",
            "REST reads served from the hot cache",
            counters.cache_hits,
        ),
        (
            "crdt_state_cache_misses_total",
            "counter",
            "REST reads that missed the hot cache",
            counters.cache_misses,
        ),
        (
            "crdt_state_cache_writes_total",
            "counter",
            "views written to the hot cache",
            context.registry.materializer.cache_writes,
        ),
    ]
    text = "".join(
        f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n{name} {value}\n"
        for name, kind, help_text, value in lines
    )
    limited = context.limits.limited
    text += (
        "# HELP crdt_state_rate_limited_total requests, updates and messages over a rate limit\n"
        "# TYPE crdt_state_rate_limited_total counter\n"
    )
    for kind in ("rest", "creations", "yjs_updates", "awareness"):
        text += f'crdt_state_rate_limited_total{{kind="{kind}"}} {limited[kind]}\n'
    return Response(text, media_type="text/plain; version=0.0.4")
