"""Presence of a room: the server's own copy of every client's awareness state.

Clients re-send every awareness change they apply, other clients' included. Relaying only
what changes this copy keeps a join from costing N^3 messages; and a state belongs to the
connection (or replica) that introduced it: nobody else can overwrite or remove it.

Clocks are kept in "room space". When a client disconnects its state is removed with a clock
one higher than its last, and peers remember that clock. A reconnecting y-websocket client
resends its state with its old clock, which peers would ignore; so the room shifts that
client's clocks past the removal (an offset per owning connection), keeping them monotonic.

Memory is bounded: client ids per connection, live states and their bytes per room, and how
many removed clients' clocks are remembered.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

from .protocol import AwarenessEntry

NULL_STATE = "null"


class PresenceFull(Exception):
    """An awareness update would pass a bound; nothing of it was applied."""


@dataclass(slots=True)
class PresenceLimits:
    clients_per_connection: int = 8  # a browser tab has one; reconnects keep it
    clients: int = 1000  # live states in a room
    bytes: int = 2 * 1024 * 1024  # of live states in a room: a joiner's first frame
    removed_remembered: int = 1000  # removed clients whose clock is kept for a reconnect


@dataclass(slots=True)
class _Client:
    clock: int  # room-space clock of the last accepted entry
    state: str  # JSON text, NULL_STATE once removed
    owner: object | None  # the connection (or replica id) that introduced this client id
    offset: int = 0  # owner's clock + offset = room-space clock

    @property
    def live(self) -> bool:
        return self.state != NULL_STATE


class Presence:
    def __init__(self, limits: PresenceLimits | None = None) -> None:
        self.limits = limits or PresenceLimits()
        self.clients: dict[int, _Client] = {}
        self.bytes = 0  # of live states
        self._live = 0
        self._per_owner: Counter[object] = Counter()  # live states per local connection
        self._removed: OrderedDict[int, None] = OrderedDict()

    def apply(self, entries: list[AwarenessEntry], sender: object) -> list[AwarenessEntry]:
        """Apply an update from `sender` (a local connection, or another replica's id);
        return the entries that changed the room's copy. PresenceFull when a local
        connection's update would pass a bound: then nothing of it is applied."""
        if not isinstance(sender, str):
            self._check_room_for(entries, sender)
        changed = []
        for entry in entries:
            known = self.clients.get(entry.client_id)
            if known is None:
                if entry.state == NULL_STATE:
                    continue
                known = self.clients[entry.client_id] = _Client(0, NULL_STATE, sender)
            elif known.owner is None or (
                isinstance(known.owner, str) and isinstance(sender, str) and known.owner != sender
            ):
                if entry.state == NULL_STATE:
                    known.clock = max(known.clock, entry.clock)  # nobody's state to remove
                    continue
                # The client comes (back) here, or moved to another replica (whose only
                # published states are its own clients'): the sender owns it now.
                known.owner = sender
                known.offset = max(0, known.clock + 1 - entry.clock)
            elif not _same(known.owner, sender):
                continue  # someone else's client (relayed by a peer, or forged): not theirs
            clock = entry.clock + known.offset
            removing = entry.state == NULL_STATE
            if clock > known.clock or (clock == known.clock and removing and known.live):
                if removing and not known.live:
                    known.clock = clock
                    continue
                known.clock = clock
                self._set_state(entry.client_id, known, entry.state)
                if removing:
                    known.owner = None
                changed.append(AwarenessEntry(entry.client_id, clock, entry.state))
        return changed

    def _check_room_for(self, entries: list[AwarenessEntry], sender: object) -> None:
        new_clients = 0
        added_bytes = 0
        for entry in entries:
            known = self.clients.get(entry.client_id)
            if entry.state == NULL_STATE:
                continue
            if known is None or not known.live:
                if known is None or known.owner is None:
                    new_clients += 1
                    added_bytes += len(entry.state)
            elif _same(known.owner, sender):
                added_bytes += len(entry.state) - len(known.state)
        limits = self.limits
        if self._per_owner[sender] + new_clients > limits.clients_per_connection:
            raise PresenceFull(
                f"at most {limits.clients_per_connection} awareness clients per connection"
            )
        if self._live + new_clients > limits.clients:
            raise PresenceFull(f"the room's presence is full ({limits.clients} clients)")
        if self.bytes + added_bytes > limits.bytes:
            raise PresenceFull(f"the room's presence is full ({limits.bytes} bytes)")

    def _set_state(self, client_id: int, known: _Client, state: str) -> None:
        was_live = known.live
        if was_live:
            self.bytes -= len(known.state)
            self._live -= 1
            if not isinstance(known.owner, str):
                self._per_owner[known.owner] -= 1
        known.state = state
        if known.live:
            self.bytes += len(state)
            self._live += 1
            if not isinstance(known.owner, str):
                self._per_owner[known.owner] += 1
            self._removed.pop(client_id, None)
        elif was_live:
            self._remember_removed(client_id)

    def _remember_removed(self, client_id: int) -> None:
        self._removed[client_id] = None
        while len(self._removed) > self.limits.removed_remembered:
            forgotten, _ = self._removed.popitem(last=False)
            stale = self.clients.get(forgotten)
            if stale is not None and not stale.live:
                del self.clients[forgotten]

    def remove_owner(self, owner: object) -> list[AwarenessEntry]:
        """Remove every live state `owner` introduced; return the removals to broadcast."""
        removed = []
        for client_id, known in list(self.clients.items()):
            if _same(known.owner, owner):
                if known.live:
                    known.clock += 1
                    self._set_state(client_id, known, NULL_STATE)
                    removed.append(AwarenessEntry(client_id, known.clock, NULL_STATE))
                known.owner = None
        if not isinstance(owner, str):
            self._per_owner.pop(owner, None)
        return removed

    def current(self) -> list[AwarenessEntry]:
        """Every live state, for a joiner or a query-awareness (at most `limits.bytes`)."""
        return [
            AwarenessEntry(client_id, known.clock, known.state)
            for client_id, known in self.clients.items()
            if known.live
        ]

    def local(self) -> list[AwarenessEntry]:
        """Live states introduced by this replica's own connections (not by other replicas,
        whose owners are their replica ids)."""
        return [
            AwarenessEntry(client_id, known.clock, known.state)
            for client_id, known in self.clients.items()
            if known.live and not isinstance(known.owner, str | None)
        ]


def _same(owner: object, other: object) -> bool:
    # Connections are compared by identity; other replicas by their id (a string).
    return owner is other or (isinstance(owner, str) and owner == other)
