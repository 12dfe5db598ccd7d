"""The post-commit path: where every change a room makes goes, and the one way it goes.

A room hands each change (the commit event) to `Pipeline.changed`, in the room, right after
its transaction. From there, in this order:
1. the room's other Yjs clients get the update (one encoded frame for all);
2. other replicas get it live (replication's outbox);
3. the log gets it (group commit); once the log answers with its version:
4. the room learns its version; every replica and JSON subscriber gets a notice;
5. the materializer keeps views, the hot cache and checkpoints; snapshots learn the
   workspace changed.
A REST write answers after `acknowledged`: committed, and in the hot cache for other replicas.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

from .committer import Committer
from .materializer import Materializer
from .model import Change, ChangeType, Notice
from .replication import Replication
from .room import Room
from .status import CLOSE_NOT_FOUND

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(
        self, committer: Committer, replication: Replication, materializer: Materializer
    ) -> None:
        self.committer = committer
        self.replication = replication
        self.materializer = materializer
        # Told the workspace of every committed change (the snapshot service's dirty set).
        self.workspace_changed: Callable[[str], None] | None = None

    # -- the room's sink -------------------------------------------------------------------

    def changed(self, room: Room, change: Change, origin: object | None) -> None:
        if change.change_type == ChangeType.DELETED:
            room.peers.close_all(CLOSE_NOT_FOUND, "the panel was deleted")
            self.replication.publish_deleted(room.key)
        else:
            room.peers.send_update(change.update, origin)
            self.replication.publish_update(change)
        future = change.outcome = self.committer.submit(change)
        room.committing(future)
        future.add_done_callback(functools.partial(self._committed, room, change))

    def changed_remotely(self, room: Room, update: bytes) -> None:
        room.peers.send_update(update)

    def presence_changed(self, room: Room, update: bytes) -> None:
        self.replication.publish_awareness(room.key, update)

    # -- after the log answered ------------------------------------------------------------

    def _committed(self, room: Room, change: Change, future: asyncio.Future[int]) -> None:
        if future.cancelled() or future.exception() is not None:
            room.committed(change, None)
            if not future.cancelled():
                log.error("room %s: the log refused a change: %s", room.key, future.exception())
            return
        version = future.result()
        room.committed(change, version)
        self.replication.publish_notice(Notice.of(change, version, self.replication.replica_id))
        self.materializer.committed(room, change, version)
        if self.workspace_changed is not None:
            self.workspace_changed(change.key.workspace_id)

    async def acknowledged(self, room: Room, change: Change) -> int:
        """The change's version, once it is committed and in the hot cache (so a read on any
        replica after the answer sees at least this version)."""
        assert change.outcome is not None, "a change is handed to the log as it is made"
        version = await change.outcome
        await self.materializer.cached(room, version)
        return version
