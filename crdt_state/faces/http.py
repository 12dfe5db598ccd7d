"""What every HTTP face shares: JSON responses, the one error-to-response map, parsing of
ids, bodies and query parameters, authorization, and running a write once per
Idempotency-Key."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .. import log_format
from ..auth import Principal, Role, bearer_token
from ..errors import (
    BadRequest,
    CommitPending,
    MethodNotAllowed,
    NotFound,
    StateError,
    TooLarge,
    Unauthorized,
)
from ..model import Attribution, PanelKey, TriggeredBy
from ..values import natural
from .context import context_of

COMMIT_WAIT_SECONDS = 10.0

Work = Callable[[], Awaitable[tuple[int, Any]]]


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def state_error(request: Request, exc: Exception) -> Response:
    """Every StateError a handler raises becomes its JSON answer here, and only here (and a
    4xx one is counted: crdt_state_refused_total{face="rest"})."""
    assert isinstance(exc, StateError)
    if exc.status < 500:
        context_of(request).metrics.refuse("rest", exc.code)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else {}
    retry_after = exc.details.get("retryAfter")
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(exc.to_json(), status_code=exc.status, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such path, a method a path does not take) in the same
    JSON shape as every other error."""
    assert isinstance(exc, HTTPException)
    error: StateError
    if exc.status_code == 404:
        error = NotFound(f"No endpoint at '{request.url.path}'.")
    elif exc.status_code == 405:
        error = MethodNotAllowed(f"{request.method} is not allowed on '{request.url.path}'.")
    else:
        error = StateError(str(exc.detail))
        error.status, error.code = exc.status_code, "bad_request"
    answer = await state_error(request, error)
    answer.headers.update(exc.headers or {})
    return answer


async def internal_error(request: Request, exc: Exception) -> Response:
    """A fault of the server (logged with its traceback by Starlette): JSON, no details."""
    return await state_error(request, StateError("The server failed; nothing more is known."))


def authorize(request: Request, workspace: str, needed: Role) -> Principal:
    """The caller, allowed `needed` in `workspace` and within its request rate."""
    context = context_of(request)
    principal = context.auth.authenticate(bearer_token(request.headers.get("authorization")))
    context.auth.authorize(principal, workspace, needed)
    context.limits.rest(principal.subject)
    return principal


def panel_key(request: Request) -> PanelKey:
    key = PanelKey(request.path_params["workspace"], request.path_params["panel"])
    log_format.bind_panel(key.workspace_id, key.panel_id)  # on the request's log lines
    try:
        return key.check()
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


async def read_json(request: Request, limit: int | None = None) -> Any:
    """The body as JSON, at most `limit` bytes (default: the setting for every body); the
    limit is checked as the body arrives, before anything is parsed."""
    if limit is None:
        limit = context_of(request).settings.max_body_bytes
    declared = request.headers.get("content-length")
    size = natural(declared) if declared is not None else None
    if size is not None and size > limit:
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


async def optional_body(request: Request) -> dict[str, Any]:
    """The JSON object of the body; {} for no body at all."""
    if request.headers.get("content-length", "0") == "0" and (
        "transfer-encoding" not in request.headers
    ):
        return {}
    body = await read_json(request)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    return body


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


def query_value(request: Request, name: str) -> str | None:
    """A query parameter, or None; a request without a query string (most) parses nothing."""
    if not request.scope.get("query_string"):
        return None
    return request.query_params.get(name)


def query_int(request: Request, name: str, default: int, maximum: int | None = None) -> int:
    raw = query_value(request, name)
    if raw is None:
        return default
    value = natural(raw)
    if value is None:
        raise BadRequest(
            f"'{name}' must be a non-negative integer below 2^63, in ASCII digits.", field=name
        )
    if maximum is not None and value > maximum:
        raise BadRequest(f"'{name}' is at most {maximum}.", field=name)
    return value


def query_time(request: Request, name: str) -> datetime | None:
    raw = query_value(request, name)
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
    return any((query_value(request, n) or "").lower() in ("1", "true", "yes") for n in names)


async def once(
    request: Request,
    principal: Principal,
    work: Work,
    *,
    wait: float | None = None,
) -> Response:
    """Run a write, once per Idempotency-Key when the client sends one (a retry gets the
    first answer). A write still committing after `wait` seconds (None: COMMIT_WAIT_SECONDS;
    math.inf: no bound) is answered 503 `commit_pending` and goes on: a retry with the same
    key gets its version. Nothing cancels the write once it runs, not even the request's end."""
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is None:
        running = asyncio.ensure_future(work())
    else:
        key = (principal.subject, request.method, request.url.path, idempotency_key)
        running = asyncio.ensure_future(context_of(request).idempotency.run(key, work))
    if not running.done():
        await _settled(running, COMMIT_WAIT_SECONDS if wait is None else wait)
    if not running.done():
        running.add_done_callback(_retrieve)
        raise CommitPending(
            "The change was applied but its commit is still pending (database slow or down). "
            "Retry with the same Idempotency-Key to get its version.",
            retryAfter=5,
        )
    status, body = running.result()
    version = body.get("version") if isinstance(body, dict) else None
    headers = {"ETag": f'"{version}"'} if isinstance(version, int) else None
    return JSONResponse(body, status_code=status, headers=headers)


async def _settled(running: asyncio.Future[Any], seconds: float) -> None:
    """Return when `running` is done or after `seconds`, whichever comes first. Cancelling
    this wait leaves `running` be (asyncio.wait_for over asyncio.shield, without their two
    extra futures and task per write)."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(seconds, wake) if seconds != math.inf else None
    running.add_done_callback(wake)
    try:
        await waiter
    except asyncio.CancelledError:
        running.add_done_callback(_retrieve)  # nobody will read its outcome now
        raise
    finally:
        if timer is not None:
            timer.cancel()
        running.remove_done_callback(wake)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # nobody waits any more: never "exception was never retrieved"
