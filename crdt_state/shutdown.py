"""Stopping without losing what clients sent (docs/OPERATIONS.md, "Shutdown").

On SIGTERM the HTTP server stops accepting, then runs the drain hooks an app registered
here, then closes what is left and stops the app (its lifespan flushes the committer). The
app's hook asks every Yjs client for what its room lacks, waits for the answers, and closes
every socket with 1012 (server restarting: clients reconnect, to another replica if there is
one). The hooks live in this process: a worker of `serve --workers N` registers its own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]

_hooks: list[Hook] = []


def on_drain(hook: Hook) -> Callable[[], None]:
    """Run `hook` when the server stops, before its sockets are cut; returns the remover."""
    _hooks.append(hook)

    def remove() -> None:
        if hook in _hooks:
            _hooks.remove(hook)

    return remove


async def drain() -> None:
    """Run every registered hook (a failing one is logged; the next still runs)."""
    for hook in list(_hooks):
        try:
            await hook()
        except Exception:
            log.exception("a drain hook failed")
