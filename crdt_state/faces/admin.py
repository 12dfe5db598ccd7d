"""The server-admin API (docs/SECURITY.md, "Revocation"):

    POST /api/admin/revocations   {"subject": "alice"} or {"tokenId": "<jti>"}, "reason"?
    GET  /api/admin/revocations   ?after=<id>&limit=<n>: the revocations in force, oldest first
    GET  /api/admin/context-cache the AI context cache: renders, hits, entries (AI-CONTEXT.md)

Only for a server admin: a token with the claim `"admin": true` (workspace roles do not make
one). A revocation is stored first, enforced on this replica at once and on every other one
within `CRDT_STATE_REVOCATION_POLL_SECONDS`: requests with a covered token answer 401 and the
covered sockets, Yjs and JSON alike, close with 4401.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth import Principal, bearer_token
from ..errors import BadRequest, Forbidden, Unavailable
from ..revocations import (
    MAX_REASON_CHARS,
    MAX_VALUE_CHARS,
    RevocationKind,
    RevocationService,
)
from .context import context_of
from .http import JSONResponse, query_int, read_json

MAX_PAGE = 1000
_FIELDS = {"subject": RevocationKind.SUBJECT, "tokenId": RevocationKind.TOKEN}


def admin_routes() -> list[Route]:
    return [
        Route("/api/admin/revocations", create_revocation, methods=["POST"]),
        Route("/api/admin/revocations", list_revocations, methods=["GET"]),
        Route("/api/admin/context-cache", context_cache, methods=["GET"]),
    ]


def server_admin(request: Request) -> Principal:
    auth = context_of(request).auth
    principal = auth.authenticate(bearer_token(request.headers.get("authorization")))
    if not principal.admin:
        raise Forbidden(
            f"{principal.subject!r} is not a server admin; this needs a token with the claim "
            '"admin": true.'
        )
    return principal


def _service(request: Request) -> RevocationService:
    service = context_of(request).revocations
    if service is None:
        raise Unavailable("Revocations are not available on this server yet; retry.")
    return service


async def create_revocation(request: Request) -> Response:
    principal = server_admin(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest('The body must be an object like {"subject": "alice"}.')
    named = [name for name in _FIELDS if name in body]
    if len(named) != 1:
        raise BadRequest("Name exactly one of 'subject' or 'tokenId'.")
    value = body[named[0]]
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_VALUE_CHARS:
        raise BadRequest(
            f"'{named[0]}' must be a non-empty string of at most {MAX_VALUE_CHARS} characters.",
            field=named[0],
        )
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS):
        raise BadRequest(
            f"'reason' must be a string of at most {MAX_REASON_CHARS} characters.", field="reason"
        )
    revocation, closed = await _service(request).revoke(
        _FIELDS[named[0]], value, principal.subject, reason
    )
    answer: dict[str, Any] = {**revocation.to_json(), "closedSockets": closed}
    return JSONResponse(answer, status_code=201)


async def list_revocations(request: Request) -> Response:
    server_admin(request)
    after = query_int(request, "after", 0)
    limit = query_int(request, "limit", MAX_PAGE, MAX_PAGE)
    found = await _service(request).listing(after, limit)
    return JSONResponse(
        {
            "revocations": [revocation.to_json() for revocation in found],
            "next": found[-1].id if len(found) == limit and found else None,
        }
    )


async def context_cache(request: Request) -> Response:
    server_admin(request)
    return JSONResponse(context_of(request).prompt_contexts.stats())
