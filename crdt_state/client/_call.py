"""One request to the API, whatever sends it: what it is (`Call`), when to try it again
(`Attempts`) and what its answer means (`result`). No I/O here: the async and the sync
client both send `Call`s through these, so they behave alike by construction."""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx

from .errors import ConnectionFailed, StateServiceError, error_from_answer

IDEMPOTENCY_KEY = "Idempotency-Key"
USER_AGENT = "crdt-state-client"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to try again. `retries`: attempts after the first one;
    backoff doubles from `backoff` seconds up to `max_backoff` (with jitter); a
    `Retry-After` from the server is honoured up to `max_retry_wait` seconds."""

    retries: int = 3
    backoff: float = 0.2
    max_backoff: float = 5.0
    max_retry_wait: float = 10.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("retries and backoff cannot be negative")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempt 0 is the first)."""
        ceiling = min(self.backoff * 2.0**attempt, self.max_backoff)
        return ceiling * (0.5 + random.random() / 2)


@dataclass(frozen=True, slots=True)
class Call:
    """A request: method, path under the base URL, query, JSON body. `keyed` writes carry an
    Idempotency-Key (the server answers a repeat with the first answer), so they may be
    sent again even when the first attempt may have arrived."""

    method: str
    path: str
    params: Mapping[str, str | list[str]] = field(default_factory=dict)
    json: Any = None
    keyed: bool = False
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        if self.keyed and self.idempotency_key is None:
            object.__setattr__(self, "idempotency_key", str(uuid.uuid4()))

    @property
    def headers(self) -> dict[str, str]:
        return {IDEMPOTENCY_KEY: self.idempotency_key} if self.idempotency_key else {}

    @property
    def resendable(self) -> bool:
        """May this call be sent again after the server may have received it?"""
        return self.method == "GET" or self.idempotency_key is not None

    def build(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        return http.build_request(
            self.method,
            self.path,
            params=dict(self.params) or None,
            json=self.json,
            headers=self.headers,
        )


def client_headers(token: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    """The headers of every request: a user agent, the bearer token, the caller's own."""
    headers = {"User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    headers.update(extra or {})
    return headers


def segment(value: str) -> str:
    """An id as one path segment (every character but unreserved ones percent-encoded)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"An id is a non-empty string, not {value!r}.")
    return quote(value, safe="")


class Attempts:
    """The retry decisions for one call: after each attempt, either the answer or how long to
    wait before the next one. Connection errors and 503 are retried when nothing can be
    applied twice (a read, a write with an Idempotency-Key, or a request never sent), 409
    `idempotency_pending` too; other statuses never (a 4xx will not change by itself)."""

    def __init__(self, call: Call, policy: RetryPolicy) -> None:
        self.call = call
        self.policy = policy
        self.attempt = 0

    def failed(self, error: httpx.TransportError) -> float:
        """The connection failed: the delay before trying again, or ConnectionFailed."""
        never_sent = isinstance(
            error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout
        )
        retryable = isinstance(
            error, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError
        )
        if not retryable or not (never_sent or self.call.resendable) or self._spent():
            raise ConnectionFailed(
                f"{self.call.method} {self.call.path} failed after {self.attempt + 1} "
                f"attempt(s): {error!r}"
            ) from error
        return self._next(None)

    def answered(self, response: httpx.Response) -> float | None:
        """None when `response` is final (then `result`); else the delay before retrying:
        after a 503, or a 409 `idempotency_pending` (the first request with this key still
        runs: the server asks for a retry with the same key)."""
        again = response.status_code == 503 or (
            response.status_code == 409
            and self.call.idempotency_key is not None
            and _error_code(response) == "idempotency_pending"
        )
        if not again or not self.call.resendable or self._spent():
            return None
        return self._next(retry_after(response.headers.get("retry-after")))

    def _spent(self) -> bool:
        return self.attempt >= self.policy.retries

    def _next(self, asked: float | None) -> float:
        wait = self.policy.delay(self.attempt) if asked is None else asked
        self.attempt += 1
        return min(wait, self.policy.max_retry_wait)


def _error_code(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None


def result(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object; the typed error for any status that is not a success."""
    if not response.is_success:
        raise error_from_answer(
            response.status_code, response.content, response.headers.get("retry-after")
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise StateServiceError(
            f"Expected a JSON object, got: {response.text[:200]!r}",
            code="unexpected_answer",
            status=response.status_code,
        )
    return body


def retry_after(value: str | None) -> float | None:
    """A Retry-After header as seconds from now (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())
