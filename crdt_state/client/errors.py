"""The client's errors: one class per error code the server answers with.

Every error the client raises is a `StateServiceError`, with the server's `code` (e.g.
"version_conflict"), the HTTP `status`, its `message` and the rest of the error body as
`details`. A code this client does not know becomes the class of its HTTP status
(`NotFound` for any 404, `Conflict` for any 409, ...), or `StateServiceError` itself, with
`.code` still the server's.

Nothing here imports the server: a service uses the client without loading it.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "AmbiguousSha",
    "BadRequest",
    "CommitNotFound",
    "CommitPending",
    "CompactionConflict",
    "Conflict",
    "ConnectionFailed",
    "DocumentTooLarge",
    "Forbidden",
    "GitCommandFailed",
    "IdempotencyPending",
    "InvalidName",
    "InvalidPatch",
    "InvalidValue",
    "MalformedSha",
    "MethodNotAllowed",
    "NotFound",
    "PanelNotFound",
    "PanelNotInSnapshot",
    "PatchTooLarge",
    "PathNotFound",
    "RateLimited",
    "RepositoryBusy",
    "RepositoryCorrupt",
    "RestoreIncomplete",
    "ServerError",
    "StaleEpoch",
    "StateServiceError",
    "TestFailed",
    "TooLarge",
    "TooManyOperations",
    "TooManyValues",
    "Unauthorized",
    "Unavailable",
    "VersionCompacted",
    "VersionConflict",
    "error_from_answer",
    "error_from_close",
]


class StateServiceError(Exception):
    """Base of every error the client raises."""

    code: str = "error"
    status: int | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        return f"{self.code} ({self.status}): {self.message}" if self.status else self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r})"


class ConnectionFailed(StateServiceError):
    """The server could not be reached (or kept failing) after every retry; `__cause__` is
    the last transport error."""

    code = "connection_failed"


# --- 4xx: the request, as sent, will not succeed ----------------------------------------


class BadRequest(StateServiceError):
    code, status = "bad_request", 400


class MalformedSha(BadRequest):
    code = "malformed_sha"


class AmbiguousSha(BadRequest):
    code = "ambiguous_sha"


class InvalidName(BadRequest):
    code = "invalid_name"


class Unauthorized(StateServiceError):
    """No token, a bad or expired one, or a revoked one."""

    code, status = "unauthorized", 401


class Forbidden(StateServiceError):
    """The token's role in this workspace does not allow the request."""

    code, status = "forbidden", 403


class NotFound(StateServiceError):
    code, status = "not_found", 404


class PanelNotFound(NotFound):
    code = "panel_not_found"


class CommitNotFound(NotFound):
    code = "commit_not_found"


class PanelNotInSnapshot(NotFound):
    code = "panel_not_in_snapshot"


class MethodNotAllowed(StateServiceError):
    code, status = "method_not_allowed", 405


class Conflict(StateServiceError):
    """Any 409: the request does not fit the panel as it is now."""

    code, status = "conflict", 409


class VersionConflict(Conflict):
    """The panel moved on: `current_version` is where it is now."""

    code = "version_conflict"

    @property
    def current_version(self) -> int | None:
        value = self.details.get("currentVersion")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


class TestFailed(Conflict):
    """A JSON Patch `test` operation did not hold: nothing was applied."""

    __test__ = False  # not a pytest test class, despite the name
    code = "test_failed"


class PathNotFound(Conflict):
    """A JSON Patch path (or `from`) that the panel does not have: nothing was applied."""

    code = "path_not_found"


class StaleEpoch(Conflict):
    code = "stale_epoch"


class CompactionConflict(Conflict):
    code = "compaction_conflict"


class IdempotencyPending(Conflict):
    """The first request with this Idempotency-Key still runs (on another replica): the
    client retries with the same key after `retry_after`, then raises this."""

    code = "idempotency_pending"

    @property
    def retry_after(self) -> float | None:
        return _seconds(self.details.get("retryAfter"))


class VersionCompacted(StateServiceError):
    """A version the retention policy no longer keeps (time travel, a stale patch, a revert
    to it): its changes were folded into a later checkpoint."""

    code, status = "version_compacted", 410


class TooLarge(StateServiceError):
    """A body, patch or document over one of the server's limits (`details["limit"]`)."""

    code, status = "too_large", 413


class TooManyOperations(TooLarge):
    code = "too_many_operations"


class PatchTooLarge(TooLarge):
    code = "patch_too_large"


class TooManyValues(TooLarge):
    code = "too_many_values"


class DocumentTooLarge(TooLarge):
    code = "document_too_large"


class InvalidPatch(StateServiceError):
    """A JSON Patch that is malformed whatever the document (unknown op, bad pointer...)."""

    code, status = "invalid_patch", 422


class InvalidValue(StateServiceError):
    """A value a panel cannot hold (NaN, an integer past 2^53, a non-string key...)."""

    code, status = "invalid_value", 422


class RateLimited(StateServiceError):
    """Over a rate limit: try again after `retry_after` seconds. Never retried for you."""

    code, status = "rate_limited", 429

    @property
    def retry_after(self) -> float | None:
        return _seconds(self.details.get("retryAfter"))


# --- 5xx ----------------------------------------------------------------------------------


class ServerError(StateServiceError):
    code, status = "internal_error", 500


class RepositoryCorrupt(ServerError):
    """A workspace's Git repository is damaged; an operator must look."""

    code = "repository_corrupt"


class GitCommandFailed(ServerError):
    code = "git_failed"


class RestoreIncomplete(StateServiceError):
    """Some panels were restored, others not (`details` names both); its status is the
    first failure's."""

    code = "restore_incomplete"


class Unavailable(StateServiceError):
    """A dependency of the server is down; raised once the client's retries are spent."""

    code, status = "unavailable", 503

    @property
    def retry_after(self) -> float | None:
        return _seconds(self.details.get("retryAfter"))


class CommitPending(Unavailable):
    """Applied, not yet committed: the same call with the same `idempotency_key` gets its
    version (the client retries with the key it generated first)."""

    code = "commit_pending"


class RepositoryBusy(Unavailable):
    code = "repository_busy"


_BY_CODE: dict[str, type[StateServiceError]] = {
    kind.code: kind
    for kind in (
        BadRequest,
        MalformedSha,
        AmbiguousSha,
        InvalidName,
        Unauthorized,
        Forbidden,
        NotFound,
        PanelNotFound,
        CommitNotFound,
        PanelNotInSnapshot,
        MethodNotAllowed,
        VersionConflict,
        TestFailed,
        PathNotFound,
        StaleEpoch,
        CompactionConflict,
        IdempotencyPending,
        VersionCompacted,
        TooLarge,
        TooManyOperations,
        PatchTooLarge,
        TooManyValues,
        DocumentTooLarge,
        InvalidPatch,
        InvalidValue,
        RateLimited,
        ServerError,
        RepositoryCorrupt,
        GitCommandFailed,
        RestoreIncomplete,
        Unavailable,
        CommitPending,
        RepositoryBusy,
    )
}
_BY_STATUS: dict[int, type[StateServiceError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: TooLarge,
    422: InvalidPatch,
    429: RateLimited,
    500: ServerError,
    503: Unavailable,
}
# WebSocket close codes that mean "do not reconnect as is" (docs/PROTOCOL.md).
_BY_CLOSE_CODE: dict[int, type[StateServiceError]] = {
    4400: BadRequest,
    4401: Unauthorized,
    4403: Forbidden,
    4404: PanelNotFound,
    4409: StaleEpoch,
    4413: TooLarge,
    4429: RateLimited,
}


def error_from_answer(
    status: int, content: bytes, retry_after: str | None = None
) -> StateServiceError:
    """The error for an HTTP answer that is not a success."""
    try:
        body = json.loads(content) if content else None
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        code: str = body["error"]
        details = {k: v for k, v in body.items() if k not in ("error", "message")}
        message = str(body.get("message") or code)
    else:
        kind = _BY_STATUS.get(status, StateServiceError)
        code = kind.code if kind is not StateServiceError else f"http_{status}"
        details = {}
        message = content.decode("utf-8", "replace")[:500] or f"HTTP {status}"
    if retry_after is not None and "retryAfter" not in details:
        details["retryAfter"] = retry_after
    kind = _BY_CODE.get(code) or _BY_STATUS.get(status) or StateServiceError
    return kind(message, code=code, status=status, details=details)


def error_from_close(close_code: int, reason: str) -> StateServiceError | None:
    """The error for a WebSocket the server closed with `close_code`; None when the client
    should reconnect (1000-series codes: a restart, a slow read, a lost connection)."""
    if not 4400 <= close_code <= 4499:
        return None
    kind = _BY_CLOSE_CODE.get(close_code, BadRequest)
    return kind(reason or f"closed with {close_code}", details={"closeCode": close_code})


def _seconds(value: Any) -> float | None:
    """Retry-After as seconds (a number or a string of one; an HTTP date counts as absent)."""
    if isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None
