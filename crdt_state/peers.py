"""The Yjs clients of one room on this replica, and the room's presence (awareness).

Frames are encoded once and the same bytes go to every receiver; sending never waits for a
client (a connection that falls behind is closed by its own bounded queue).
"""

from __future__ import annotations

from .awareness import Presence
from .connection import Connection
from .protocol import AwarenessEntry, awareness_message, encode_awareness, sync_update


class Peers:
    __slots__ = ("connections", "dropped_read_only", "presence")

    def __init__(self) -> None:
        self.connections: set[Connection] = set()
        self.presence = Presence()
        self.dropped_read_only = 0  # updates and awareness of read-only clients, dropped

    def __len__(self) -> int:
        return len(self.connections)

    def send_update(self, update: bytes, sender: object | None = None) -> None:
        """Relay a Yjs update to every client but its sender."""
        if not self.connections:
            return
        frame = sync_update(update)
        for conn in self.connections:
            if conn is not sender:
                conn.send(frame)

    def send_awareness(self, entries: list[AwarenessEntry], sender: object | None = None) -> None:
        if not entries or not self.connections:
            return
        frame = awareness_message(encode_awareness(entries))
        for conn in self.connections:
            if conn is not sender:
                conn.send(frame)

    def apply_remote_awareness(self, entries: list[AwarenessEntry], replica_id: str) -> None:
        """Awareness another replica's clients sent: keep it and show what changed."""
        self.send_awareness(self.presence.apply(entries, replica_id))

    def forget_replica(self, replica_id: str) -> None:
        """A replica died: the presence of its clients goes, for everyone here."""
        self.send_awareness(self.presence.remove_owner(replica_id))

    def close_all(self, code: int, reason: str) -> None:
        for conn in list(self.connections):
            conn.close(code, reason)
