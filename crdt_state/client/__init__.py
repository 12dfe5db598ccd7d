"""A Python client for crdt-state, for services (docs/CLIENT.md).

    from crdt_state.client import StateClient, VersionConflict

    async with StateClient("http://crdt-state:8001", token=jwt) as state:
        panel = await state.get_state("ws-1", "chart")
        await state.patch_state(
            "ws-1", "chart", [{"op": "replace", "path": "/$state/n", "value": 1}],
            version=panel["version"], strict=True,
        )

`StateClient` (asyncio) and `SyncStateClient` (blocking) have the same methods. The client
needs httpx and websockets only: it imports nothing of the server (not pycrdt).
"""

from ._async import StateClient, Subscription
from ._call import RetryPolicy
from ._sync import SyncStateClient, SyncSubscription
from .errors import (
    AmbiguousSha,
    BadRequest,
    CommitNotFound,
    CommitPending,
    CompactionConflict,
    Conflict,
    ConnectionFailed,
    DocumentTooLarge,
    Forbidden,
    GitCommandFailed,
    IdempotencyPending,
    InvalidName,
    InvalidPatch,
    InvalidValue,
    MalformedSha,
    MethodNotAllowed,
    NotFound,
    PanelNotFound,
    PanelNotInSnapshot,
    PatchTooLarge,
    PathNotFound,
    RateLimited,
    RepositoryBusy,
    RepositoryCorrupt,
    RestoreIncomplete,
    ServerError,
    StaleEpoch,
    StateServiceError,
    TestFailed,
    TooLarge,
    TooManyOperations,
    TooManyValues,
    Unauthorized,
    Unavailable,
    VersionCompacted,
    VersionConflict,
)

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
    "RetryPolicy",
    "ServerError",
    "StaleEpoch",
    "StateClient",
    "StateServiceError",
    "Subscription",
    "SyncStateClient",
    "SyncSubscription",
    "TestFailed",
    "TooLarge",
    "TooManyOperations",
    "TooManyValues",
    "Unauthorized",
    "Unavailable",
    "VersionCompacted",
    "VersionConflict",
]
