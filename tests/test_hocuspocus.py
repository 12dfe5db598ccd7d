"""`/ws/hocuspocus`: real `@hocuspocus/provider` clients (Node), many panels over one socket,
next to y-websocket clients of the same rooms; the wire itself with raw frames; and, in this
process, when the acknowledgement goes out and what a document costs."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import tracemalloc
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from pycrdt import Doc, Map
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from adapters.git import GitSnapshotRepository
from adapters.local import LocalFanout
from adapters.sqlite import SqliteUpdateLog
from crdt_state import hocuspocus, protocol
from crdt_state.app import Adapters, App, create_app
from crdt_state.model import PanelKey
from crdt_state.ports import PanelView
from crdt_state.protocol import read_var_string, read_var_uint, write_var_bytes

from .conftest import token
from .hocuspocus_client import HocuspocusClients
from .inprocess import client_of, settings_for
from .server import ServerProcess
from .yjs_client import YjsClients

PANELS = 20
SOCKETS = 3


@pytest.fixture
async def hp() -> AsyncIterator[HocuspocusClients]:
    async with HocuspocusClients() as clients:
        yield clients


@pytest.fixture
async def yjs() -> AsyncIterator[YjsClients]:
    async with YjsClients() as clients:
        yield clients


def url(server: ServerProcess) -> str:
    return f"{server.ws}/ws/hocuspocus"


def rest(server: ServerProcess, path: str) -> Any:
    response = httpx.get(
        f"{server.http}/api/state/{path}",
        headers={"Authorization": f"Bearer {token('admin', {'*': 'admin'})}"},
    )
    assert response.status_code == 200, response.text
    return response.json()


# -- acceptance 1: many panels over one socket per client, edited concurrently --------------


async def test_twenty_panels_on_one_socket_per_client_converge_and_rest_shows_them(
    hp: HocuspocusClients, server: ServerProcess
) -> None:
    jwt = token("alice", {"ws": "write"})
    for s in range(SOCKETS):
        await hp.socket(f"tab{s}", url(server))
    docs = await asyncio.gather(
        *(
            hp.open(f"t{s}p{p}", f"tab{s}", f"ws/panel-{p}", token=jwt)
            for s in range(SOCKETS)
            for p in range(PANELS)
        )
    )
    # Every client edits every panel at once: its own keys, and one key all of them write.
    await asyncio.gather(
        *(doc.burst(5, prefix=f"{doc.name[:2]}-") for doc in docs),
        *(doc.set(["$state", "shared"], doc.name) for doc in docs),
    )
    for p in range(PANELS):
        mine = [docs[s * PANELS + p] for s in range(SOCKETS)]
        await asyncio.gather(*(doc.wait_unsynced(0) for doc in mine))  # all applied and logged
        expected = {f"t{s}-{i}": i for s in range(SOCKETS) for i in range(5)}
        view = rest(server, f"ws/panel-{p}")["state"]["$state"]
        assert view["shared"] in {doc.name for doc in mine}  # one write wins, the same everywhere
        expected["shared"] = view["shared"]
        assert view == expected
        await asyncio.gather(*(doc.wait_json_equals(expected) for doc in mine))
    for s in range(SOCKETS):  # one socket each, never reopened
        stats = await hp.socket_stats(f"tab{s}")
        assert stats["opens"] == 1 and stats["closeEvents"] == [], stats
    metrics = httpx.get(f"{server.http}/metrics").text
    assert 'crdt_state_websocket_connections{face="hocuspocus"} 3.0' in metrics
    assert f"crdt_state_hocuspocus_documents {float(SOCKETS * PANELS)}" in metrics


# -- acceptance 2: with y-websocket clients in one room; readers refused per document ---------


async def test_a_hocuspocus_and_a_y_websocket_client_edit_together_and_see_each_other(
    hp: HocuspocusClients, yjs: YjsClients, server: ServerProcess
) -> None:
    await hp.socket("tab", url(server))
    h = await hp.open("h", "tab", "ws/mixed", token=token("hana"), awareness={"user": "hana"})
    y = await yjs.connect(
        "y",
        server.yjs_url("ws"),
        "mixed",
        params={"token": token("yuri")},
        awareness={"user": "yuri"},
    )
    await h.set(["$state", "from_h"], 1)
    await y.set(["$state", "from_y"], 2)
    both = {"from_h": 1, "from_y": 2}
    await h.wait_json_equals(both)
    await y.wait_json_equals(both)
    await h.wait_peers(1, match={"user": "yuri"})
    await y.wait_peers(1, match={"user": "hana"})
    await h.awareness({"user": "hana", "cursor": 3})
    await y.wait_peers(1, match={"cursor": 3})
    await h.wait_unsynced(0)
    assert rest(server, "ws/mixed")["state"]["$state"] == both
    history = rest(server, "ws/mixed/history")["history"]
    assert {"hana", "yuri"} <= {entry["subject"] for entry in history}
    await h.detach()  # the document closes; its presence leaves the room
    await y.wait_peers(0)


async def test_a_reader_is_refused_per_document_and_its_other_documents_work(
    hp: HocuspocusClients, server: ServerProcess
) -> None:
    await hp.socket("writer", url(server))
    owner = await hp.open("owner", "writer", "ws/shared", token=token("owen"))
    await owner.set(["$state", "title"], "mine")
    await owner.wait_unsynced(0)
    reader_jwt = token("rita", {"ws": "read", "ws2": "write"})
    await hp.socket("tab", url(server))
    read = await hp.open("read", "tab", "ws/shared", token=reader_jwt)
    write = await hp.open("write", "tab", "ws2/own", token=reader_jwt)
    missing = await hp.open("missing", "tab", "ws/nowhere", token=reader_jwt, wait="auth")
    assert (read.scope, write.scope) == ("readonly", "read-write")
    assert missing.denied is not None and missing.denied.startswith("panel_not_found:")
    await read.wait_for(["$state", "title"], "mine")
    await read.set(["$state", "title"], "stolen")
    await write.set(["$state", "ok"], True)
    await write.wait_unsynced(0)  # the writable document on the same socket goes on
    stats = await read.stats()
    assert stats["unsyncedChanges"] >= 1 and stats["acks"]["refused"] >= 1, stats
    await owner.set(["$state", "after"], 1)  # later than the reader's edit, in the same room
    await read.wait_for(["$state", "after"], 1)
    assert (await owner.state())["title"] == "mine"
    assert rest(server, "ws/shared")["state"]["$state"] == {"title": "mine", "after": 1}
    assert rest(server, "ws2/own")["state"]["$state"] == {"ok": True}
    assert (await hp.socket_stats("tab"))["closeEvents"] == []


async def test_a_forbidden_workspace_is_denied_and_the_socket_stays(
    hp: HocuspocusClients, server: ServerProcess
) -> None:
    await hp.socket("tab", url(server))
    jwt = token("alice", {"ws": "write"})
    ok = await hp.open("ok", "tab", "ws/p", token=jwt)
    denied = await hp.open("no", "tab", "elsewhere/p", token=jwt, wait="auth")
    bad_name = await hp.open("bad", "tab", "no-slash", token=jwt, wait="auth")
    no_token = await hp.open("anon", "tab", "ws/q", wait="auth")
    assert denied.denied is not None and denied.denied.startswith("forbidden:")
    assert bad_name.denied is not None and bad_name.denied.startswith("bad_request:")
    assert no_token.denied is not None and no_token.denied.startswith("unauthorized:")
    await ok.set(["$state", "x"], 1)
    await ok.wait_unsynced(0)
    assert (await hp.socket_stats("tab"))["closeEvents"] == []
    metrics = httpx.get(f"{server.http}/metrics").text
    assert 'crdt_state_refused_total{face="hocuspocus",reason="forbidden"} 1.0' in metrics


# -- acceptance 3: the acknowledgement -------------------------------------------------------


async def test_unsynced_changes_return_to_zero_once_the_log_has_every_update(
    hp: HocuspocusClients, server: ServerProcess
) -> None:
    await hp.socket("tab", url(server))
    doc = await hp.open("a", "tab", "ws/acked", token=token())
    await doc.wait_unsynced(0)  # the step 2 answering the server's step 1
    for i in range(10):
        await doc.set(["$state", f"k{i}"], i)
    acks = await doc.wait_unsynced(0)
    body = rest(server, "ws/acked")
    # Acknowledged means logged: version 1 (creation) + 10 updates, at the moment it says so.
    assert body["version"] == 11
    assert body["state"]["$state"] == {f"k{i}": i for i in range(10)}
    assert acks == {"applied": 11, "refused": 0}


# -- closing ---------------------------------------------------------------------------------


async def test_closing_one_document_keeps_the_others(
    hp: HocuspocusClients, server: ServerProcess
) -> None:
    await hp.socket("tab", url(server))
    await hp.socket("peer", url(server))
    jwt = token()
    a = await hp.open("a", "tab", "ws/a", token=jwt, awareness={"user": "a"})
    b = await hp.open("b", "tab", "ws/b", token=jwt)
    watcher = await hp.open("w", "peer", "ws/a", token=jwt)
    await watcher.wait_peers(1, match={"user": "a"})
    await a.detach()  # the client closes one document
    await watcher.wait_peers(0)  # it left its room
    await b.set(["$state", "still"], "here")
    await b.wait_unsynced(0)
    # The server closes one: an update the guard refuses (`$meta` is the server's).
    await b.set(["$meta", "x"], 1)
    assert (await b.wait_closed()).startswith("4400:")
    c = await hp.open("c", "tab", "ws/c", token=jwt)
    await c.set(["$state", "fine"], True)
    await c.wait_unsynced(0)
    assert rest(server, "ws/b")["state"]["$state"] == {"still": "here"}
    assert (await hp.socket_stats("tab"))["closeEvents"] == []


async def test_a_deleted_panel_closes_its_document_with_4404(
    hp: HocuspocusClients, server: ServerProcess
) -> None:
    await hp.socket("tab", url(server))
    jwt = token()
    gone = await hp.open("gone", "tab", "ws/gone", token=jwt)
    kept = await hp.open("kept", "tab", "ws/kept", token=jwt)
    admin = token("root", {"ws": "admin"})
    deleted = httpx.delete(
        f"{server.http}/api/state/ws/gone", headers={"Authorization": f"Bearer {admin}"}
    )
    assert deleted.status_code == 200, deleted.text
    assert (await gone.wait_closed()).startswith("4404:")
    await kept.set(["$state", "x"], 1)
    await kept.wait_unsynced(0)


async def test_an_expired_token_closes_the_socket_with_4401(
    hp: HocuspocusClients, server: ServerProcess
) -> None:
    await hp.socket("tab", url(server))
    doc = await hp.open("a", "tab", "ws/short", token=token(ttl=2))
    assert (await hp.wait_socket_close("tab", within=6)) == (4401, "token expired")
    # The provider reconnects and sends its (expired) token again: that document is denied.
    assert (await doc.wait_denied(within=8)).startswith("unauthorized:")


async def test_sigterm_asks_every_document_for_what_it_holds_then_closes_with_1012(
    hp: HocuspocusClients, tmp_path: Path
) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        await hp.socket("tab", url(server))
        docs = [await hp.open(f"d{i}", "tab", f"ws/drain-{i}", token=token()) for i in range(3)]
        for doc in docs:
            await doc.wait_unsynced(0)
        await asyncio.to_thread(server.stop)
        assert (await hp.wait_socket_close("tab"))[0] == 1012
    finally:
        server.stop()
    assert "3 of 3 Yjs clients handed over" in server.log_tail(60)


# -- the wire, raw ---------------------------------------------------------------------------


def frame(document: str, body: bytes) -> bytes:
    return hocuspocus.prefix(document) + body


def auth(document: str, jwt: str) -> bytes:
    return frame(document, b"\x02\x00" + write_var_bytes(jwt.encode()))


def parse(data: bytes) -> tuple[str, int, bytes]:
    name, pos = read_var_string(data, 0)
    kind, pos = read_var_uint(data, pos)
    return name, kind, data[pos:]


class RawSocket:
    """A Hocuspocus socket without the provider: to send what a provider never would."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def until(self, document: str, kind: int, timeout: float = 5.0) -> bytes:
        """Read frames until one of `kind` about `document`; its body."""
        async with asyncio.timeout(timeout):
            while True:
                data = await self.ws.recv()
                assert isinstance(data, bytes)
                name, got, body = parse(data)
                if (name, got) == (document, kind):
                    return body

    async def open(self, document: str, jwt: str) -> None:
        await self.ws.send(auth(document, jwt))
        assert (await self.until(document, 2))[:1] == b"\x02"  # authenticated
        await self.ws.send(frame(document, protocol.sync_step1(b"\x00")))
        await self.until(document, 0)


async def raw(server: ServerProcess) -> RawSocket:
    return RawSocket(await connect(url(server), max_size=None))


async def closed_with(ws: ClientConnection) -> int | None:
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(5):
            while True:
                await ws.recv()
    return ws.close_code


@pytest.mark.parametrize(
    "data",
    [b"hello", b"\x05ab"],  # a text frame; a name longer than the frame
    ids=["text frame", "unreadable name"],
)
async def test_what_names_no_document_closes_the_socket_with_4400(
    server: ServerProcess, data: bytes
) -> None:
    sock = await raw(server)
    await sock.ws.send(data.decode() if data == b"hello" else data)
    assert await closed_with(sock.ws) == 4400


@pytest.mark.parametrize(
    "body, why",
    [
        (b"\x63", "unknown type"),
        (b"\x00\x07\x00", "unknown sync type"),
        (b"\x00\x02\x05ab", "truncated update"),
        (b"\x01\x00\x00", "trailing bytes"),
    ],
)
async def test_a_bad_message_closes_its_document_not_the_socket(
    server: ServerProcess, body: bytes, why: str
) -> None:
    sock = await raw(server)
    jwt = token()
    await sock.open("ws/bad", jwt)
    await sock.open("ws/good", jwt)
    await sock.ws.send(frame("ws/bad", body))
    reason = await sock.until("ws/bad", 7)
    assert read_var_string(reason, 0)[0].startswith("4400:"), why
    await sock.ws.send(frame("ws/good", protocol.sync_step1(b"\x00")))
    await sock.until("ws/good", 0)  # the socket and its other document go on
    await sock.ws.close()


async def test_messages_for_a_document_not_open_are_ignored(server: ServerProcess) -> None:
    sock = await raw(server)
    await sock.ws.send(frame("ws/never", protocol.sync_update(b"\x00\x00")))
    await sock.ws.send(frame("ws/never", b"\x07"))  # a Close for it, too
    await sock.open("ws/later", token())
    assert rest(server, "ws/later")["version"] == 1
    await sock.ws.close()


# -- in this process: when the acknowledgement goes out; what a document costs ----------------


class GatedLog:
    """The SQLite log, whose appends wait while `gate` is clear."""

    def __init__(self, inner: SqliteUpdateLog) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.gate.set()

    async def append(self, changes: Sequence[Any], views: Sequence[PanelView] = ()) -> list[int]:
        await self.gate.wait()
        return await self.inner.append(changes, views)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@contextlib.asynccontextmanager
async def gated_app(data_dir: Path) -> AsyncIterator[tuple[App, GatedLog]]:
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    log = GatedLog(await SqliteUpdateLog.open(data_dir / "crdt-state.sqlite3"))
    fanout, repository = LocalFanout(), GitSnapshotRepository(data_dir / "git")
    try:
        adapters = Adapters(log, fanout, None, repository)  # type: ignore[arg-type]
        app = create_app(settings_for(data_dir), adapters=adapters)
        async with app.starlette.router.lifespan_context(app.starlette):
            yield app, log
    finally:
        await repository.close()
        await fanout.close()
        await log.inner.close()


class AsgiSocket:
    """A socket to the app in this process: frames in, frames out, no network."""

    def __init__(self, app: App) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.frames: asyncio.Queue[bytes] = asyncio.Queue()
        path = hocuspocus.PATH
        scope = {"type": "websocket", "path": path, "raw_path": path.encode(), "headers": []}
        self.inbox.put_nowait({"type": "websocket.connect"})
        self.task = asyncio.create_task(app(scope, self.inbox.get, self._sent))

    async def _sent(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            self.frames.put_nowait(message["bytes"])

    async def send(self, data: bytes) -> None:
        await self.inbox.put({"type": "websocket.receive", "bytes": data})

    async def until(self, document: str, kind: int) -> bytes:
        async with asyncio.timeout(5):
            while True:
                name, got, body = parse(await self.frames.get())
                if (name, got) == (document, kind):
                    return body

    def received(self) -> list[tuple[str, int, bytes]]:
        """Frames received and not read yet (without waiting)."""
        out = []
        while not self.frames.empty():
            out.append(parse(self.frames.get_nowait()))
        return out

    async def open(self, document: str, jwt: str) -> None:
        await self.send(auth(document, jwt))
        await self.until(document, 2)
        step1 = await self.until(document, 0)  # the server's step 1 (the join)
        assert step1[:1] == b"\x00"
        await self.send(frame(document, protocol.sync_step2(b"\x00\x00")))  # nothing new
        assert await self.until(document, 8) == b"\x01"

    async def close(self) -> None:
        await self.inbox.put({"type": "websocket.disconnect", "code": 1000})
        await self.task


async def test_no_acknowledgement_before_the_log_has_the_update(tmp_path: Path) -> None:
    async with gated_app(tmp_path) as (app, log):
        writer, watcher = AsgiSocket(app), AsgiSocket(app)
        await writer.open("ws/p", token())
        await watcher.open("ws/p", token())
        doc = Doc()
        updates: list[bytes] = []
        doc.observe(lambda event: updates.append(event.update))
        doc.get("$state", type=Map)["title"] = "hello"
        log.gate.clear()  # the log holds every write from here
        try:
            await writer.send(frame("ws/p", protocol.sync_update(updates[0])))
            relayed = await watcher.until("ws/p", 0)  # the room applied it and relayed it
            assert protocol.decode(b"\x00" + relayed).sync_type == protocol.SyncType.UPDATE
            assert writer.received() == []  # applied, not logged yet: no acknowledgement
            loaded = await log.inner.load(PanelKey("ws", "p"))
            assert loaded is not None and loaded.info.version == 1
        finally:
            log.gate.set()
        assert await writer.until("ws/p", 8) == b"\x01"
        async with client_of(app, token()) as api:
            body = (await api.get("/api/state/ws/p")).json()
        assert body["version"] == 2 and body["state"]["$state"] == {"title": "hello"}
        await writer.close()
        await watcher.close()


# What a document keeps, by where it was allocated: the face, its document and session, the
# room's peers and presence, rate limits. Not counted: the join's catch-up from the log, in
# flight in the background when the loop ends (it is the same for a socket per panel).
KEPT_BY = ["*hocuspocus*", "*/sessions.py", "*/peers.py", "*/awareness.py", "*/rate_limits.py"]


async def test_a_document_on_a_shared_socket_keeps_about_a_kilobyte(tmp_path: Path) -> None:
    """tracemalloc: the Python memory an open document keeps, its room already loaded (docs/
    BENCHMARKS.md measures the process's RSS, next to a socket per panel)."""
    count = 200
    async with gated_app(tmp_path) as (app, _):
        warm = AsgiSocket(app)  # loads the rooms: what is measured is the subscriptions
        for i in range(count):
            await warm.open(f"ws/m{i}", token())
        sock, jwt = AsgiSocket(app), token()
        await sock.open("ws/m0", jwt)  # the socket itself, outside the measure
        gc.collect()
        tracemalloc.start()
        try:
            kept = [tracemalloc.Filter(True, pattern) for pattern in KEPT_BY]
            before = tracemalloc.take_snapshot().filter_traces(kept)
            for i in range(1, count):
                await sock.open(f"ws/m{i}", jwt)
            gc.collect()
            after = tracemalloc.take_snapshot().filter_traces(kept)
        finally:
            tracemalloc.stop()
        grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        per_document = grown / (count - 1)
        print(f"Python memory kept per document on a shared socket: {per_document:.0f} bytes")
        assert 200 < per_document < 2048
        await sock.close()
        await warm.close()
