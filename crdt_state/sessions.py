"""A Yjs client's session in a room: the y-websocket protocol, spoken next to its socket.

The Yjs face (faces/yjs_socket.py) reads and decodes frames and hands each message to the
session, in the room (`room.submit(session.receive, message)`). The session answers sync
requests, applies updates through the room (which alone changes the doc), and keeps the
client's presence.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .auth import Role
from .awareness import PresenceFull
from .connection import Connection
from .errors import DocumentTooLarge
from .model import Attribution, TriggeredBy
from .protocol import (
    Message,
    MessageType,
    ProtocolError,
    SyncType,
    awareness_message,
    decode_awareness,
    encode_awareness,
    sync_step1,
    sync_step2,
)
from .room import InvalidUpdate, Room
from .status import CLOSE_BAD_MESSAGE, CLOSE_TOO_LARGE
from .update_guard import UpdateRefused

log = logging.getLogger(__name__)


QUERY_AWARENESS_INTERVAL = 1.0  # seconds: queries in between share one later answer


class YjsSession:
    __slots__ = ("conn", "last_query", "may_write_computed", "query_due", "room", "who")

    def __init__(self, room: Room, conn: Connection) -> None:
        self.room = room
        self.conn = conn
        self.who = Attribution(TriggeredBy.USER, "yjs", conn.subject)
        # `$computed` holds what services derive; over Yjs only a workspace admin writes it.
        role = conn.principal.role_for(room.key.workspace_id)
        self.may_write_computed = role is not None and role >= Role.ADMIN
        self.last_query = -QUERY_AWARENESS_INTERVAL
        self.query_due = False  # an answer is scheduled for the end of the interval

    def join(self) -> None:
        """Run in the room: say what the server has, and who is here."""
        self.room.peers.connections.add(self.conn)
        self.conn.unanswered += 1
        self.conn.send(sync_step1(self.room.state_vector()))
        present = self.room.peers.presence.current()
        if present:
            self.conn.send(awareness_message(encode_awareness(present)))

    def leave(self) -> None:
        """Run in the room: the client's presence goes, for everyone."""
        room = self.room
        room.peers.connections.discard(self.conn)
        room.relay_presence(room.peers.presence.remove_owner(self.conn), None)

    def receive(self, message: Message) -> None:
        """Run in the room: one message from the client."""
        conn = self.conn
        if conn.closing or conn not in self.room.peers.connections:
            return
        try:
            self._dispatch(message)
        except UpdateRefused as exc:
            if exc.code == "gap" and message.sync_type == SyncType.UPDATE:
                self.missed()
                return
            log.info("room %s: refused a client's update: %s", self.room.key, exc.reason)
            conn.close(exc.close_code, exc.reason)
        except DocumentTooLarge as exc:
            conn.close(CLOSE_TOO_LARGE, exc.message)
        except PresenceFull as exc:
            conn.close(CLOSE_TOO_LARGE, str(exc))
        except (ProtocolError, InvalidUpdate) as exc:
            log.info("room %s: closing a client that sent a bad message: %s", self.room.key, exc)
            conn.close(CLOSE_BAD_MESSAGE, str(exc))

    def _dispatch(self, message: Message) -> None:
        room, conn = self.room, self.conn
        if message.type == MessageType.SYNC:
            if message.sync_type == SyncType.STEP1:
                conn.send(sync_step2(room.encode_missing(message.payload)))
            elif not conn.can_write:
                room.peers.dropped_read_only += 1
            else:
                room.apply(
                    message.payload, conn, self.who, may_write_computed=self.may_write_computed
                )
            if message.sync_type == SyncType.STEP2:
                conn.answered()
        elif message.type == MessageType.AWARENESS:
            if not conn.can_write:
                room.peers.dropped_read_only += 1
                return
            if len(message.payload) > room.settings.max_awareness_bytes:
                conn.close(CLOSE_TOO_LARGE, "awareness state too large")
                return
            changed = room.peers.presence.apply(decode_awareness(message.payload), conn)
            room.relay_presence(changed, conn)
        elif message.type == MessageType.QUERY_AWARENESS:
            # Each answer is the room's whole presence: a client asking in a loop would make
            # the server queue it again and again. At most one answer a second: queries in
            # between share one answer at the end of the second.
            wait = self.last_query + QUERY_AWARENESS_INTERVAL - time.monotonic()
            if wait <= 0:
                self.answer_query()
            elif not self.query_due:
                self.query_due = True
                asyncio.get_running_loop().call_later(wait, room.post, self.answer_query)

    def missed(self) -> None:
        """In the room: a live update of the client skips clocks the room lacks, and is
        dropped. Legitimate: a client that reconnects sends its edits as it makes them, before
        it has read the room's sync step 1 and answered with what the room lacks (the edits it
        made while disconnected). The client answers every step 1, in order, with everything
        of its doc the room lacks, the dropped update included: if a step 1 is unanswered, the
        client sent this update before reading it, so that answer will hold it; otherwise the
        room asks now. Nothing is kept meanwhile; a client that never answers only loses its
        own updates."""
        conn = self.conn
        if conn.unanswered == 0:
            conn.ask(sync_step1(self.room.state_vector()))

    def answer_query(self) -> None:
        """In the room: the room's presence, to this client."""
        self.query_due = False
        self.last_query = time.monotonic()
        if not self.conn.closing and self.conn in self.room.peers.connections:
            presence = self.room.peers.presence.current()
            self.conn.send(awareness_message(encode_awareness(presence)))


def ask_for_missing(room: Room) -> list[asyncio.Future[None]]:
    """Run in the room when the server stops: ask every client for what the room lacks (a
    sync step 1 with the room's state vector; y-websocket and Hocuspocus clients answer with
    a step 2). Each future resolves once its client's answer is applied, or it closed: then
    every update the client sent before it read the question is in the room."""
    question = sync_step1(room.state_vector())
    return [conn.ask(question) for conn in list(room.peers.connections) if not conn.closing]
