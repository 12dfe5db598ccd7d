"""In-process fan-out: the embedded default's Fanout (one replica, so subscribers are local)."""

from __future__ import annotations

import inspect
from collections import defaultdict

from crdt_state.ports import FanoutCallback, FanoutMessage, PanelKey


class _LocalSubscription:
    def __init__(self, fanout: LocalFanout, key: PanelKey, callback: FanoutCallback) -> None:
        self._fanout = fanout
        self._key = key
        self._callback = callback

    async def close(self) -> None:
        callbacks = self._fanout.subscribers.get(self._key)
        if callbacks is not None:
            callbacks.discard(self._callback)
            if not callbacks:
                del self._fanout.subscribers[self._key]


class LocalFanout:
    def __init__(self) -> None:
        self.subscribers: defaultdict[PanelKey, set[FanoutCallback]] = defaultdict(set)

    async def publish(self, key: PanelKey, message: FanoutMessage) -> None:
        for callback in list(self.subscribers.get(key, ())):
            result = callback(message)
            if inspect.isawaitable(result):
                await result

    async def subscribe(self, key: PanelKey, callback: FanoutCallback) -> _LocalSubscription:
        self.subscribers[key].add(callback)
        return _LocalSubscription(self, key, callback)

    async def close(self) -> None:
        self.subscribers.clear()
