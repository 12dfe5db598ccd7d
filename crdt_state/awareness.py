"""Presence of a room: the server's own copy of every client's awareness state.

Clients re-send every awareness change they apply, other clients' included. Relaying only
what changes this copy keeps a join from costing N^3 messages.

Clocks are kept in "room space". When a client disconnects its state is removed with a clock
one higher than its last, and peers remember that clock. A reconnecting y-websocket client
resends its state with its old clock, which peers would ignore; so the room shifts that
client's clocks past the removal (an offset per owning connection), keeping them monotonic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .protocol import AwarenessEntry

NULL_STATE = "null"


@dataclass(slots=True)
class _Client:
    clock: int  # room-space clock of the last accepted entry
    state: str  # JSON text, NULL_STATE once removed
    owner: object | None  # the connection that introduced this client id
    offset: int = 0  # owner's clock + offset = room-space clock


@dataclass(slots=True)
class Presence:
    clients: dict[int, _Client] = field(default_factory=dict)

    def apply(self, entries: list[AwarenessEntry], sender: object) -> list[AwarenessEntry]:
        """Apply an update from `sender`; return the entries that changed the room's copy."""
        changed = []
        for entry in entries:
            known = self.clients.get(entry.client_id)
            if known is None:
                if entry.state == NULL_STATE:
                    continue
                known = self.clients[entry.client_id] = _Client(0, NULL_STATE, sender)
            elif entry.state != NULL_STATE and (
                known.owner is None
                or (
                    isinstance(known.owner, str)
                    and isinstance(sender, str)
                    and not _same(known.owner, sender)
                )
            ):
                # The client comes back (reconnects here), or moved to another replica (whose
                # only published states are its own clients'): adopt the new owner.
                known.owner = sender
                known.offset = max(0, known.clock + 1 - entry.clock)
            offset = known.offset if _same(known.owner, sender) else 0
            clock = entry.clock + offset
            removing = entry.state == NULL_STATE
            if clock > known.clock or (
                clock == known.clock and removing and known.state != NULL_STATE
            ):
                if removing and known.state == NULL_STATE:
                    known.clock = clock
                    continue
                known.clock = clock
                known.state = entry.state
                if removing and _same(known.owner, sender):
                    known.owner = None
                changed.append(AwarenessEntry(entry.client_id, clock, entry.state))
        return changed

    def remove_owner(self, owner: object) -> list[AwarenessEntry]:
        """Remove every live state `owner` introduced; return the removals to broadcast."""
        removed = []
        for client_id, known in self.clients.items():
            if _same(known.owner, owner):
                known.owner = None
                if known.state != NULL_STATE:
                    known.clock += 1
                    known.state = NULL_STATE
                    removed.append(AwarenessEntry(client_id, known.clock, NULL_STATE))
        return removed

    def current(self) -> list[AwarenessEntry]:
        """Every live state, for a joiner or a query-awareness."""
        return [
            AwarenessEntry(client_id, known.clock, known.state)
            for client_id, known in self.clients.items()
            if known.state != NULL_STATE
        ]

    def local(self) -> list[AwarenessEntry]:
        """Live states introduced by this replica's own connections (not by other replicas,
        whose owners are their replica ids)."""
        return [
            AwarenessEntry(client_id, known.clock, known.state)
            for client_id, known in self.clients.items()
            if known.state != NULL_STATE and not isinstance(known.owner, str | None)
        ]


def _same(owner: object, other: object) -> bool:
    # Connections are compared by identity; other replicas by their id (a string).
    return owner is other or (isinstance(owner, str) and owner == other)
