"""Every WebSocket close code in one place, and the one map from errors to them.

4400–4499 mean "do not retry as is"; the others are transient (a client reconnects).
HTTP statuses live on the errors themselves (errors.StateError.status).
"""

from __future__ import annotations

from .errors import (
    Forbidden,
    PanelNotFound,
    RateLimited,
    StaleEpoch,
    StateError,
    TooLarge,
    Unauthorized,
    Unavailable,
)

CLOSE_NORMAL = 1000
CLOSE_SERVER_RESTART = 1012
CLOSE_TRY_AGAIN = 1013
CLOSE_BAD_MESSAGE = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_STALE_EPOCH = 4409
CLOSE_TOO_LARGE = 4413
CLOSE_RATE_LIMITED = 4429

_CLOSE_CODES: list[tuple[type[StateError], int]] = [
    (Unauthorized, CLOSE_UNAUTHORIZED),
    (Forbidden, CLOSE_FORBIDDEN),
    (PanelNotFound, CLOSE_NOT_FOUND),
    (StaleEpoch, CLOSE_STALE_EPOCH),
    (TooLarge, CLOSE_TOO_LARGE),
    (RateLimited, CLOSE_RATE_LIMITED),
    (Unavailable, CLOSE_TRY_AGAIN),
]


def close_code(error: StateError) -> int:
    """The close code a socket gets for `error` (4400 for anything else the caller did)."""
    for kind, code in _CLOSE_CODES:
        if isinstance(error, kind):
            return code
    return CLOSE_BAD_MESSAGE
