"""In-process fan-out: the embedded default's Fanout.

One `LocalFanout` per replica, all on one `LocalBus` (the embedded default has one replica and
so one of each; tests run several replicas in one process on a shared bus). Deliveries are
queued and made in publish order by whoever published first, so a callback that publishes
does not jump the queue; a callback's failure is logged and delivery goes on, as over Redis.
There is no other process to lose and no transport to reconnect.
"""

from __future__ import annotations

import inspect
import logging
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any

from crdt_state.model import FanoutMessage, Notice, PanelKey
from crdt_state.ports import FanoutCallback, NoticeCallback, Outgoing

log = logging.getLogger(__name__)


class _LocalSubscription:
    __slots__ = ("active", "callback", "owner", "topic")

    def __init__(self, owner: LocalFanout, topic: Hashable, callback: Any) -> None:
        self.owner = owner
        self.topic = topic
        self.callback = callback
        self.active = True

    async def close(self) -> None:
        if self.active:
            self.active = False  # before anything else: nothing is delivered after close()
            self.owner.bus.remove(self)


class LocalBus:
    """The topics of one process and who listens to each."""

    def __init__(self) -> None:
        self.topics: defaultdict[Hashable, list[_LocalSubscription]] = defaultdict(list)
        self._queue: deque[tuple[Hashable, Any]] = deque()
        self._delivering = False

    def remove(self, subscription: _LocalSubscription) -> None:
        subscribers = self.topics.get(subscription.topic)
        if subscribers is not None and subscription in subscribers:
            subscribers.remove(subscription)
            if not subscribers:
                del self.topics[subscription.topic]

    async def publish(self, items: list[tuple[Hashable, Any]]) -> None:
        self._queue.extend(items)
        if self._delivering:
            return  # a callback published: the delivery running now takes it, in order
        self._delivering = True
        try:
            while self._queue:
                topic, message = self._queue.popleft()
                for subscription in list(self.topics.get(topic, ())):
                    if subscription.active:
                        await _call(subscription.callback, message)
        finally:
            self._delivering = False


async def _call(callback: Any, message: Any) -> None:
    try:
        result = callback(message)
        if inspect.isawaitable(result):
            await result
    except Exception:  # one bad subscriber must not stop delivery to the others
        log.exception("fan-out callback %r failed", callback)


def _live(key: PanelKey) -> Hashable:
    return ("live", key)


def _notices(workspace_id: str) -> Hashable:
    return ("notices", workspace_id)


class LocalFanout:
    def __init__(self, bus: LocalBus | None = None) -> None:
        self.bus = bus or LocalBus()
        self._closed = False

    async def publish_all(self, batch: Sequence[Outgoing]) -> None:
        if self._closed:
            return
        items: list[tuple[Hashable, Any]] = []
        for item in batch:
            if isinstance(item, Notice):
                items.append((_notices(item.key.workspace_id), item))
            else:
                key, message = item
                items.append((_live(key), message))
        await self.bus.publish(items)

    def may_reach_others(self, key: PanelKey) -> bool:
        return any(sub.owner is not self for sub in self.bus.topics.get(_live(key), ()))

    async def publish_counted(self, key: PanelKey, message: FanoutMessage) -> int:
        if self._closed:
            return 0
        topic = _live(key)
        others = {sub.owner for sub in self.bus.topics.get(topic, ()) if sub.owner is not self}
        await self.bus.publish([(topic, message)])
        return len(others)

    async def subscribe(self, key: PanelKey, callback: FanoutCallback) -> _LocalSubscription:
        return self._add(_live(key), callback)

    async def subscribe_notices(
        self, workspace_id: str, callback: NoticeCallback
    ) -> _LocalSubscription:
        return self._add(_notices(workspace_id), callback)

    def _add(self, topic: Hashable, callback: Any) -> _LocalSubscription:
        subscription = _LocalSubscription(self, topic, callback)
        self.bus.topics[topic].append(subscription)
        return subscription

    def on_replica_lost(self, callback: Callable[[str], Awaitable[None] | None]) -> None:
        return None  # one process: no other replica to lose

    def on_reconnected(self, callback: Callable[[], Awaitable[None] | None]) -> None:
        return None  # nothing to reconnect

    async def close(self) -> None:
        self._closed = True
        for subscribers in list(self.bus.topics.values()):
            for subscription in list(subscribers):
                if subscription.owner is self:
                    await subscription.close()
