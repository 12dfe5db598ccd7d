"""A JSON subscriber's view of one panel: every committed version, in order, as JSON Patch.

Notices of committed versions arrive from every replica, possibly out of order or not at all
(the fan-out is lossy; the log is not). The feed delivers version N only after N-1; a notice
that is next in line and carries its patch is delivered as is, anything else is read from the
log, whose order is the truth.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .background import cancel
from .log_order import fill_patches
from .model import ChangeType, LogEntry, Notice, PanelKey
from .ports import UpdateLog

log = logging.getLogger(__name__)

Deliver = Callable[[dict[str, Any]], Awaitable[None]]
CATCH_UP_PAGE = 100
MAX_QUEUED_NOTICES = 256  # past this a slow feed drops notices and reads the log instead


class PanelFeed:
    def __init__(self, log_store: UpdateLog, key: PanelKey, version: int, deliver: Deliver):
        self.log = log_store
        self.key = key
        self.version = version  # the last version delivered
        self._deliver = deliver
        self._notices: asyncio.Queue[Notice | None] = asyncio.Queue()
        self._lagging = False  # notices were dropped: the log fills the gap
        self._task = asyncio.create_task(self._run(), name=f"feed {key}")

    def notice(self, notice: Notice) -> None:
        """A committed version (a hint: the log is the truth). A feed whose subscriber does
        not keep up keeps at most MAX_QUEUED_NOTICES; beyond, it reads the log later."""
        if self._notices.qsize() >= MAX_QUEUED_NOTICES:
            if not self._lagging:
                self._lagging = True
                self._notices.put_nowait(None)  # catch up from the log once it gets there
            return
        self._notices.put_nowait(notice)

    async def close(self) -> None:
        await cancel(self._task)

    async def catch_up(self, until: int | None = None) -> None:
        while True:
            entries = await self.log.read(
                self.key, after=self.version, until=until, limit=CATCH_UP_PAGE
            )
            if not entries:
                return
            await fill_patches(self.log, self.key, entries)
            for entry in entries:
                await self._deliver(entry_message(self.key, entry))
                self.version = entry.version
            if len(entries) < CATCH_UP_PAGE:
                return

    async def _run(self) -> None:
        while True:
            notice = await self._notices.get()
            try:
                await self._handle(notice)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("feed %s: %r; reading the log instead", self.key, exc)
                await asyncio.sleep(0.2)
                self._notices.put_nowait(None)

    async def _handle(self, notice: Notice | None) -> None:
        if notice is None:
            self._lagging = False
            await self.catch_up()
            return
        version = notice.version
        if version <= self.version:
            return
        if version == self.version + 1 and notice.patch is not None:
            await self._deliver(notice_message(notice))
            self.version = version
        else:
            await self.catch_up(until=version)


def entry_message(key: PanelKey, entry: LogEntry) -> dict[str, Any]:
    deleted = entry.change_type == ChangeType.DELETED
    return {
        "type": "state_deleted" if deleted else "state_update",
        "workspaceId": key.workspace_id,
        "panelId": key.panel_id,
        "version": entry.version,
        "epoch": entry.epoch,
        "changeType": entry.change_type.value,
        "patch": entry.patch or [],
        "triggeredBy": entry.triggered_by.value,
        "triggerSource": entry.trigger_source,
        "timestamp": entry.occurred_at.isoformat(),
    }


def notice_message(notice: Notice) -> dict[str, Any]:
    """What a JSON subscriber gets of a notice (without the replica's own bookkeeping)."""
    message = notice.to_json()
    del message["subject"], message["changeId"], message["replica"], message["panel_id"]
    return message
