"""Errors with a stable code, an HTTP status and a sentence a user can act on."""

from __future__ import annotations

from typing import Any


class StateError(Exception):
    """Base of every error the server reports to a caller."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details}


class BadRequest(StateError):
    code = "bad_request"
    status = 400


class Unauthorized(StateError):
    code = "unauthorized"
    status = 401


class Forbidden(StateError):
    code = "forbidden"
    status = 403


class PanelNotFound(StateError):
    code = "panel_not_found"
    status = 404


class NotFound(StateError):
    """A path that is no endpoint of this server."""

    code = "not_found"
    status = 404


class MethodNotAllowed(StateError):
    code = "method_not_allowed"
    status = 405


class StaleEpoch(StateError):
    """The panel was deleted or re-created since the caller loaded it."""

    code = "stale_epoch"
    status = 409


class InvalidValue(StateError):
    """A value the document cannot hold faithfully (NaN, huge int, bytes, non-string key...)."""

    code = "invalid_value"
    status = 422


class TooLarge(StateError):
    code = "too_large"
    status = 413


class TooManyOperations(TooLarge):
    code = "too_many_operations"


class PatchTooLarge(TooLarge):
    """A patch whose copies and moves would write far more than it holds."""

    code = "patch_too_large"


class TooManyValues(TooLarge):
    """A PUT whose state holds more values than one write may create."""

    code = "too_many_values"


class DocumentTooLarge(TooLarge):
    """A change would grow a panel's document past its size limit."""

    code = "document_too_large"


class RateLimited(StateError):
    """Over a rate limit; `retryAfter` says when to try again."""

    code = "rate_limited"
    status = 429


class Unavailable(StateError):
    """A dependency (database, Redis) is down; the caller may retry later."""

    code = "unavailable"
    status = 503


class InvalidPatch(StateError):
    """A JSON Patch that is malformed whatever the document: not a list, unknown op, bad pointer."""

    code = "invalid_patch"
    status = 422


class PathNotFound(StateError):
    """A JSON Patch path (or `from`) that does not exist in the current document."""

    code = "path_not_found"
    status = 409


class TestFailed(StateError):
    """A JSON Patch `test` operation whose value differs from the document's."""

    __test__ = False  # not a pytest test class, despite the name
    code = "test_failed"
    status = 409


class VersionConflict(StateError):
    """The caller asked for strictness and the panel moved on."""

    code = "version_conflict"
    status = 409


class IdempotencyPending(StateError):
    """A retry whose first request (same Idempotency-Key) still runs on another replica."""

    code = "idempotency_pending"
    status = 409


class CommitPending(Unavailable):
    """Applied, but not yet committed: retry with the same Idempotency-Key for the version."""

    code = "commit_pending"
