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
    """This replica's series in the Prometheus text format (OpenMetrics when the scraper asks
    for it); every series is listed in docs/OPERATIONS.md ("Metrics")."""
    body, content_type = context_of(request).metrics.exposition(request.headers.get("accept"))
    return Response(body, headers={"Content-Type": content_type})
