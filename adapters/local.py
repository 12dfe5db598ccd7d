"""In-process fan-out: the embedded default's Fanout (one replica, so every subscriber is
local; there is no other replica to lose and no transport to reconnect)."""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any

from crdt_state.model import Notice, PanelKey
from crdt_state.ports import FanoutCallback, NoticeCallback, Outgoing


class _LocalSubscription:
    def __init__(
        self, table: defaultdict[Hashable, set[Any]], topic: Hashable, callback: Any
    ) -> None:
        self._table = table
        self._topic = topic
        self._callback = callback

    async def close(self) -> None:
        callbacks = self._table.get(self._topic)
        if callbacks is not None:
            callbacks.discard(self._callback)
            if not callbacks:
                del self._table[self._topic]


async def _deliver(callbacks: set[Any], message: Any) -> None:
    for callback in list(callbacks):
        result = callback(message)
        if inspect.isawaitable(result):
            await result


class LocalFanout:
    def __init__(self) -> None:
        self.subscribers: defaultdict[Hashable, set[Any]] = defaultdict(set)
        self.notice_subscribers: defaultdict[Hashable, set[Any]] = defaultdict(set)

    async def publish_all(self, batch: Sequence[Outgoing]) -> None:
        for item in batch:
            if isinstance(item, Notice):
                callbacks = self.notice_subscribers.get(item.key.workspace_id, set())
                await _deliver(callbacks, item)
            else:
                key, message = item
                await _deliver(self.subscribers.get(key, set()), message)

    def may_reach_others(self, key: PanelKey) -> bool:
        # The publishing replica holds one subscription of a live panel; anyone else (another
        # registry on this fan-out) is a second.
        return len(self.subscribers.get(key, ())) > 1

    async def subscribe(self, key: PanelKey, callback: FanoutCallback) -> _LocalSubscription:
        self.subscribers[key].add(callback)
        return _LocalSubscription(self.subscribers, key, callback)

    async def subscribe_notices(
        self, workspace_id: str, callback: NoticeCallback
    ) -> _LocalSubscription:
        self.notice_subscribers[workspace_id].add(callback)
        return _LocalSubscription(self.notice_subscribers, workspace_id, callback)

    def on_replica_lost(self, callback: Callable[[str], Awaitable[None] | None]) -> None:
        return None  # one process: no other replica to lose

    def on_reconnected(self, callback: Callable[[], Awaitable[None] | None]) -> None:
        return None  # nothing to reconnect

    async def close(self) -> None:
        self.subscribers.clear()
        self.notice_subscribers.clear()
