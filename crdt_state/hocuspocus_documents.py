"""One document on a shared Hocuspocus socket, as its room sees it (faces/hocuspocus_socket.py).

To a room a document is a client like any other (`Connection`): it is in `room.peers`, its
session (`DocumentSession`) runs the y-websocket protocol in the room, the server's drain asks
it for what it holds (`ask`/`answered`). What differs is underneath: it has no socket, queue
or task of its own. Each frame it is given gets the document's name in front and goes into
the shared socket's one bounded queue (a slow socket is one slow client, closed with 1013),
so a document costs under a kilobyte, not a socket.

Closing: a socket-level code (1012 restarting, 1013 too slow, 4401 token expired or revoked)
closes the whole socket (the provider reconnects and authenticates every document again); any
other code closes the document alone, with a Close message whose reason starts with the code.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from pycrdt import get_state

from .auth import Principal
from .connection import Connection
from .hocuspocus import close as close_message
from .hocuspocus import prefix as name_prefix
from .hocuspocus import sync_status
from .model import Change
from .protocol import Message, MessageType, SyncType, awareness_message, decode_state_vector
from .rate_limits import SocketLimits
from .room import Room, is_crdt_panic
from .sessions import YjsSession
from .status import CLOSE_SERVER_RESTART, CLOSE_TRY_AGAIN, CLOSE_UNAUTHORIZED

SOCKET_CODES = frozenset({CLOSE_SERVER_RESTART, CLOSE_TRY_AGAIN, CLOSE_UNAUTHORIZED})
NOBODY = Principal("(hocuspocus)", {})  # a document's principal until its token is checked


class Host(Protocol):
    """The shared socket, as its documents see it."""

    @property
    def conn(self) -> Connection: ...

    def forget(self, document: DocumentConnection) -> None:
        """A document closed (by the server or its client): out of the socket's table, out
        of its room."""


class DocumentConnection(Connection):
    """A document on a shared socket: from its Auth message (`pending` holds what the client
    sends while the panel opens) to its close."""

    face = "hocuspocus"
    __slots__ = ("host", "limits", "name", "owed", "pending", "prefix", "session", "task")

    def __init__(self, host: Host, name: str) -> None:
        # Not Connection.__init__: no socket, queue or writer here; the shared socket's do it.
        self.host = host
        self.name = name
        self.prefix = name_prefix(name)
        self.principal = NOBODY
        self.can_write = False
        self._close: tuple[int, str] | None = None
        self.unanswered = 0
        self._answered: asyncio.Future[None] | None = None
        # Updates dropped for a gap (YjsSession.missed): acknowledged once the step 2 that
        # brings their content is logged.
        self.owed = 0
        self.session: DocumentSession | None = None  # once admitted
        self.limits: SocketLimits | None = None
        self.pending: deque[Message] | None = deque()  # None once open
        self.task: asyncio.Task[None] | None = None  # the opening, while it runs

    def admit(
        self, principal: Principal, can_write: bool, room: Room, limits: SocketLimits
    ) -> None:
        self.principal = principal
        self.can_write = can_write
        self.limits = limits
        self.session = DocumentSession(room, self)

    @property
    def queued_bytes(self) -> int:
        return 0  # its frames wait in the shared socket's queue

    def send(self, data: bytes) -> None:
        """A y-websocket frame for this document's client: named, into the socket's queue."""
        if self._close is None:
            self.host.conn.send(self.prefix + data)

    def send_status(self, applied: bool) -> None:
        """SyncStatus: whether an update of the client was applied (and logged)."""
        if self._close is None:
            self.host.conn.send(sync_status(self.prefix, applied))

    def acknowledge(self, change: Change | None) -> None:
        """In the room, after an update of the client was applied: SyncStatus once the log
        has the change it made (at once when it changed nothing)."""
        if change is None or change.outcome is None:
            self.send_status(True)
        else:
            change.outcome.add_done_callback(self._logged)

    def _logged(self, outcome: asyncio.Future[int]) -> None:
        self.send_status(not outcome.cancelled() and outcome.exception() is None)

    def close(self, code: int, reason: str = "") -> None:
        if code in SOCKET_CODES:
            self.mark_closed(code, reason)
            self.host.conn.close(code, reason)  # the socket's end leaves every room
            return
        if self._close is not None:
            return
        self.mark_closed(code, reason)
        self.host.conn.send(close_message(self.prefix, f"{code}: {reason}"[:200]))
        self.host.forget(self)

    def leave(self) -> None:
        """The client closed this document (a Close message): no answer, out of the room."""
        if self._close is None:
            self.mark_closed(1000, "closed by the client")
            self.host.forget(self)

    def mark_closed(self, code: int, reason: str) -> None:
        """Closed from here on (telling nobody): what it is sent or given is dropped."""
        if self._close is None:
            self._close = (code, reason[:120])
        self.pending = None
        if self._answered is not None and not self._answered.done():
            self._answered.set_result(None)  # no answer will come

    async def finish(self, timeout: float) -> None:
        return None  # the shared socket finishes its sends


class DocumentSession(YjsSession):
    """The y-websocket session of a document, plus what Hocuspocus adds: every sync step 2 or
    update the client sends is acknowledged (SyncStatus), once applied and logged (1), or not
    applied (0: a reader's update; a reader's step 2 that adds nothing gets 1); awareness is
    echoed to its sender."""

    __slots__ = ()

    conn: DocumentConnection

    def _dispatch(self, message: Message) -> None:
        if message.type == MessageType.AWARENESS:
            super()._dispatch(message)  # applied and relayed to the others (a reader's dropped)
            # Echoed too, as Hocuspocus does: the provider counts any message as a sign of
            # life, and reconnects a socket that received nothing for 30 s (its own awareness
            # renewal, every 15 s, keeps a lone client's socket open).
            self.conn.send(awareness_message(message.payload))
            return
        if message.type != MessageType.SYNC or message.sync_type == SyncType.STEP1:
            super()._dispatch(message)
            return
        room, conn = self.room, self.conn
        if conn.can_write:
            change = room.apply(
                message.payload, conn, self.who, may_write_computed=self.may_write_computed
            )
            conn.acknowledge(change)
            if message.sync_type == SyncType.STEP2:
                while conn.owed:  # the updates dropped for a gap: their content is in this
                    conn.owed -= 1
                    conn.acknowledge(change)
        else:
            room.peers.dropped_read_only += 1
            conn.send_status(message.sync_type == SyncType.STEP2 and holds(room, message.payload))
        if message.sync_type == SyncType.STEP2:
            conn.answered()

    def missed(self) -> None:
        self.conn.owed += 1  # the provider counts the update as unsynced until acknowledged
        super().missed()


def holds(room: Room, update: bytes) -> bool:
    """Whether the room has every struct of `update` (its deletions are not compared)."""
    try:
        theirs = decode_state_vector(get_state(update))
    except ValueError:
        return False
    except BaseException as exc:
        if is_crdt_panic(exc):
            return False
        raise
    ours = decode_state_vector(room.state_vector())
    return all(clock <= ours.get(client, 0) for client, clock in theirs.items())
