"""The WebSocket face for Hocuspocus clients: `/ws/hocuspocus`, many panels over one socket.

The stock `@hocuspocus/provider` (3.x) works unmodified: each `HocuspocusProvider` is one
document named `{workspace}/{panel}`, and any number of them share one
`HocuspocusProviderWebsocket`. The wire format is in crdt_state/hocuspocus.py; the rules in
docs/PROTOCOL.md ("/ws/hocuspocus").

A document opens with its Auth message: the token decides the role in the document's
workspace (read: scope `readonly`, write: `read-write`; none: PermissionDenied for that
document alone), and a writer's first open creates the panel, as on `/ws/yjs`. Then it is a
client of its room like a y-websocket one (hocuspocus_documents.py): same rooms, log, fan-out,
presence, update checks and rate limits (per document, as per y-websocket socket). A
document's errors close that document; only what cannot be told apart by document (a frame
without a readable name, a text frame), a socket too slow to read, an expired or revoked token
and the server restarting close the socket.

Served straight on ASGI (crdt_state/asgi_socket.py), like the y-websocket face.
"""

from __future__ import annotations

import asyncio
import logging

from .. import log_format
from ..asgi_socket import AsgiSocket
from ..auth import Principal, Role, origin_allowed, websocket_token
from ..connection import Connection
from ..errors import BadRequest, StateError, Unavailable
from ..hocuspocus import FrameType, authenticated, decode_body, permission_denied, split
from ..hocuspocus_documents import NOBODY, DocumentConnection
from ..metrics import INPUT_CLOSES
from ..model import PanelKey
from ..protocol import Message, MessageType, ProtocolError, SyncType
from ..rate_limits import MAX_WAIT_SECONDS, SocketLimits
from ..sockets import LiveSocket
from ..status import (
    CLOSE_BAD_MESSAGE,
    CLOSE_FORBIDDEN,
    CLOSE_RATE_LIMITED,
    CLOSE_TOO_LARGE,
    CLOSE_TRY_AGAIN,
)
from .context import Context

FACE = "hocuspocus"
MAX_DOCUMENTS = 1000  # open on one socket; the next Auth is denied
CLOSE_INTERNAL_ERROR = 1011  # a document the server failed to open (closes it alone)
MAX_PENDING = 64  # messages of a document kept while it opens; then the reader waits for it
JOIN_CATCH_UP_SECONDS = 5.0
log = logging.getLogger(__name__)


async def hocuspocus_socket(websocket: AsgiSocket, context: Context) -> None:
    log_format.request_id.set(None)
    log_format.connection_id.set(log_format.new_id())
    if not origin_allowed(websocket.headers.get("origin"), context.allowed_origins):
        context.metrics.refuse_close(FACE, CLOSE_FORBIDDEN)
        await websocket.close(CLOSE_FORBIDDEN)  # before accept: the handshake gets a 403
        return
    # A token on the socket (`?token=` or `bearer.<jwt>`) serves documents whose Auth
    # message carries none (a provider with `token: null` sends "").
    token, subprotocol = websocket_token(
        websocket.query_params.get("token"), websocket.scope.get("subprotocols", [])
    )
    await websocket.accept(subprotocol)
    settings = context.settings
    conn = Connection(
        websocket,
        NOBODY,
        can_write=False,
        max_queue_messages=settings.send_queue_messages,
        max_queue_bytes=settings.send_queue_bytes,
    )
    documents = Documents(context, conn, token)
    context.metrics.hocuspocus_sockets.add(conn)
    try:
        await documents.read(settings.max_message_bytes)
    finally:
        context.metrics.hocuspocus_sockets.discard(conn)
        await documents.end()
        code = conn.close_code
        if code is not None and code in INPUT_CLOSES:
            context.metrics.refuse_close(FACE, code)
        await conn.finish(5 if conn.closing else 0)


class Documents:
    """The documents of one shared socket, by name, and what they share: the socket's queue,
    its reader, the watch on each token's expiry and revocation."""

    def __init__(self, context: Context, conn: Connection, token: str | None) -> None:
        self.context = context
        self._conn = conn
        self.token = token
        self.documents: dict[str, DocumentConnection] = {}
        self._watched: dict[Principal, tuple[LiveSocket, int]] = {}
        self._leaving: set[asyncio.Task[None]] = set()
        self.ended = False
        self.ignored = 0  # messages for no open document (closed, denied, not authenticated)

    @property
    def conn(self) -> Connection:
        return self._conn

    # -- reading ---------------------------------------------------------------------------

    async def read(self, max_bytes: int) -> None:
        conn = self._conn
        while not conn.closing:
            message = await conn.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                conn.close(CLOSE_BAD_MESSAGE, "text frames are not part of the Hocuspocus protocol")
                return
            try:
                name, pos = split(data)
            except ProtocolError as exc:
                conn.close(CLOSE_BAD_MESSAGE, str(exc))
                return
            document = self.documents.get(name)
            if len(data) > max_bytes:
                if document is not None:
                    document.close(CLOSE_TOO_LARGE, f"message larger than {max_bytes} bytes")
                continue
            try:
                incoming = decode_body(data, pos)
            except ProtocolError as exc:
                if document is not None:
                    document.close(CLOSE_BAD_MESSAGE, str(exc))
                continue
            if incoming.type == FrameType.AUTH:
                if document is None:  # a token for an open document: ignored, as Hocuspocus does
                    self.open(name, incoming.text or self.token)
            elif document is None or document.closing:
                self.ignored += 1
            elif incoming.type == FrameType.CLOSE:
                document.leave()
            elif incoming.message is not None:  # stateless messages: accepted, not relayed
                await self.deliver(document, incoming.message)

    async def deliver(self, document: DocumentConnection, message: Message) -> None:
        limits = document.limits
        wait = 0.0
        if limits is not None and message.type == MessageType.AWARENESS:
            wait = limits.awareness_wait()
        elif limits is not None and message.sync_type in (SyncType.STEP2, SyncType.UPDATE):
            wait = limits.update_wait(len(message.payload))
        if wait > MAX_WAIT_SECONDS:
            document.close(CLOSE_RATE_LIMITED, "too many updates: slow down")
            return
        if wait > 0:
            await asyncio.sleep(wait)  # reading nothing meanwhile: TCP slows the client down
        pending, session = document.pending, document.session
        if pending is not None:  # still opening: its task hands these over after the join
            pending.append(message)
            if len(pending) >= MAX_PENDING and document.task is not None:
                await asyncio.wait([document.task])
        elif session is not None and not document.closing:
            await session.room.submit(session.receive, message)

    # -- opening and closing documents -------------------------------------------------------

    def open(self, name: str, token: str | None) -> None:
        document = DocumentConnection(self, name)
        if len(self.documents) >= MAX_DOCUMENTS:
            self._deny(document, "too_large", f"At most {MAX_DOCUMENTS} documents on one socket.")
            return
        self.documents[name] = document
        document.task = asyncio.create_task(self._open(document, token))

    async def _open(self, document: DocumentConnection, token: str | None) -> None:
        try:
            await self._admit(document, token)
        except Exception:  # a bug or a failing store: this document fails, not the socket
            log.exception("opening %r failed", document.name)
            if document.session is None:
                self._deny(document, "internal_error", "The server could not open it.")
            else:
                document.close(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            document.task = None

    async def _admit(self, document: DocumentConnection, token: str | None) -> None:
        context = self.context
        workspace, sep, panel = document.name.partition("/")
        log_format.bind_panel(workspace, panel)
        try:
            if not sep or "/" in panel:
                raise BadRequest("A document name is '{workspace}/{panel}'.")
            key = PanelKey(workspace, panel)
            try:
                key.check()
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
            await context.auth.prepare(token)
            principal = context.auth.authenticate(token)
            can_write = context.auth.authorize(principal, workspace, Role.READ) >= Role.WRITE
            room = await context.registry.open(key, create=can_write, subject=principal.subject)
        except Unavailable as exc:  # the server's trouble, not the document's: retry them all
            self._conn.close(CLOSE_TRY_AGAIN, exc.message)
            return
        except StateError as exc:
            self._deny(document, exc.code, exc.message)
            return
        try:
            await context.registry.replication.current(room, JOIN_CATCH_UP_SECONDS)
        except Exception as exc:  # the log is slow or down: serve what the room has
            log.warning("room %s: join not caught up from the log (%r)", key, exc)
        if self.ended or document.closing or self.documents.get(document.name) is not document:
            return
        document.admit(principal, can_write, room, SocketLimits(context.limits, principal.subject))
        self._watch(principal)
        self._conn.send(authenticated(document.prefix, read_only=not can_write))
        session = document.session
        assert session is not None
        await room.call(session.join)
        while document.pending:  # what the client sent meanwhile, in order
            await room.submit(session.receive, document.pending.popleft())
        document.pending = None

    def _deny(self, document: DocumentConnection, code: str, message: str) -> None:
        """Refuse a document (PermissionDenied); the socket and its other documents go on."""
        self.context.metrics.refuse(FACE, code)
        document.mark_closed(CLOSE_FORBIDDEN, code)
        self.forget(document)
        self._conn.send(permission_denied(document.prefix, f"{code}: {message}"[:300]))

    def forget(self, document: DocumentConnection) -> None:
        if self.documents.get(document.name) is document:
            del self.documents[document.name]
        code = document.close_code
        if code is not None and code in INPUT_CLOSES:
            self.context.metrics.refuse_close(FACE, code)
        session = document.session
        if session is None:
            return
        self._unwatch(document.principal)
        room = session.room
        if not room.closed and not room.post(session.leave):
            task = asyncio.create_task(room.submit(session.leave))
            self._leaving.add(task)
            task.add_done_callback(self._leaving.discard)

    async def end(self) -> None:
        """The socket ended: every document leaves its room, every watch stops."""
        self.ended = True
        documents = list(self.documents.values())
        for document in documents:
            document.mark_closed(self._conn.close_code or 1000, "the socket closed")
        opening = [d.task for d in documents if d.task is not None]
        if opening:
            await asyncio.wait(opening)
        for document in documents:
            session = document.session
            if session is not None and not session.room.closed:
                await session.room.submit(session.leave)
        if self._leaving:
            await asyncio.wait(list(self._leaving))
        for entry, _ in self._watched.values():
            self.context.sockets.unregister(entry)
        self._watched.clear()
        self.documents.clear()

    # -- token expiry and revocation: the socket closes (4401) ---------------------------------

    def _watch(self, principal: Principal) -> None:
        entry, count = self._watched.get(principal, (None, 0))
        if entry is None:
            entry = self.context.sockets.register(principal, self._conn.close)
        self._watched[principal] = (entry, count + 1)

    def _unwatch(self, principal: Principal) -> None:
        entry, count = self._watched.get(principal, (None, 0))
        if entry is None:
            return
        if count > 1:
            self._watched[principal] = (entry, count - 1)
        else:
            del self._watched[principal]
            self.context.sockets.unregister(entry)
