"""The fuzzer's harness (tests/test_fuzz.py): one real server process, the panels no case may
change, and the checks made after every case.

Everything here is synchronous (httpx.Client, websockets' sync client): Hypothesis runs each
case as a plain function call, and the server is another process.

After every case, ``check_world`` asserts:
- the process is alive and ``/health`` answers 200 within ``HEALTH_TIMEOUT_S``;
- every reference panel (created at the start, in the fuzzed workspace and in another one)
  reads exactly as it did: state, version and epoch;
- the Yjs peer connected to one of them has received nothing and is still connected;
- the server logged no new traceback (an exception nothing handled).
"""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from pycrdt import Doc, Map
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from crdt_state import protocol
from crdt_state.auth import mint_token

from .fuzz_rest import Request, encode_id
from .server import SECRET, ServerProcess

WORKSPACE = "fz"
OTHER_WORKSPACE = "fz-other"
SNAPSHOT_WORKSPACE = "fz-snap"
REFERENCE_PREFIX = "ref-"
HEALTH_TIMEOUT_S = 2.0
REQUEST_TIMEOUT_S = 30.0
SOCKET_TIMEOUT_S = 15.0
# Close codes a server may send (docs/PROTOCOL.md); 1011 (internal error) and no close frame
# at all (1006) are failures.
KNOWN_CLOSE_CODES = frozenset({1000, 1012, 1013, 4400, 4401, 4403, 4404, 4409, 4413, 4429})
# The fuzzer creates thousands of panels as one subject: the creation rate limit (tested in
# tests/test_rate_limits.py) would answer 429 to most of them.
SERVER_ENV = {"CRDT_STATE_RATE_PANEL_CREATIONS": "0"}
TOKEN_TTL_S = 6 * 3600
_TRACEBACK = re.compile(rb"Traceback \(most recent call last\)")


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for n in range(levels):
        value = {f"l{n}": value, "i": [n]}
    return value


# Reference panels: (workspace, panel) -> the successive states PUT into it. Their panel ids
# start with REFERENCE_PREFIX: no case ever names one.
REFERENCES: dict[tuple[str, str], list[dict[str, Any]]] = {
    (WORKSPACE, "ref-live"): [
        {
            "$state": {"title": "live", "items": [1, 2, 3], "nested": {"a": {"b": {"c": "d"}}}},
            "$computed": {"total": 6},
        }
    ],
    (WORKSPACE, "ref-plain"): [
        {"$state": {"filter": {"value": "x"}, "n": 1}},
        {"$state": {"filter": {"value": "y"}, "n": 2, "list": [{"a": 1}, {"b": [True, None]}]}},
    ],
    (WORKSPACE, "ref-odd ~%41 über"): [
        {
            "$state": {
                "": "empty key",
                "a/b": {"~1": "tilde one"},
                "ключ": "\U0001f600",
                "max": 2**53 - 1,
                "min": -(2**53 - 1),
                "pi": 3.14159,
                "tiny": 5e-324,
                "deep": _deep(25),
            },
            "$computed": {"x": []},
        }
    ],
    (OTHER_WORKSPACE, "ref-plain"): [{"$state": {"other": "workspace", "n": 7}}],
}
LIVE_REFERENCE = (WORKSPACE, "ref-live")


def is_reference(workspace: str | None, panel: str | None) -> bool:
    return (workspace, panel) in REFERENCES or (
        panel is not None and panel.startswith(REFERENCE_PREFIX)
    )


def _tokens() -> dict[str, str | None]:
    def mint(subject: str, workspaces: dict[str, str], ttl: int = TOKEN_TTL_S) -> str:
        return mint_token(SECRET, subject, workspaces, ttl_seconds=ttl)

    return {
        "writer": mint("fuzzer", {"*": "write"}),
        "admin": mint("fuzz-admin", {"*": "admin"}),
        "reader": mint("fuzz-reader", {"*": "read"}),
        "other": mint("fuzz-stranger", {"elsewhere": "write"}),
        "expired": mint("fuzz-late", {"*": "write"}, ttl=-60),
        "garbage": "not.a.token",
        "none": None,
        "auditor": mint("fuzz-auditor", {"*": "read"}),
    }


@dataclass(frozen=True)
class PanelRead:
    """A panel as GET answers it (status 404: it does not exist)."""

    status: int
    state: Any = None
    version: int | None = None
    epoch: str | None = None

    @classmethod
    def of(cls, answer: httpx.Response) -> PanelRead:
        if answer.status_code != 200:
            return cls(answer.status_code)
        body = answer.json()
        return cls(200, body["state"], body["version"], body["epoch"])


@dataclass
class Answer:
    """A REST answer; ``status`` None when there was none (connection dropped, timeout)."""

    status: int | None
    body: bytes = b""
    error: str = ""

    def json(self) -> Any:
        return orjson.loads(self.body)


class YjsClient:
    """A raw y-websocket client over websockets' sync client: sends any frame, counts the sync
    step 2 answers, and tells how the server closed the socket."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.closed_code: int | None = None
        self.closed_reason = ""
        self.abnormal = False
        self.step2: list[bytes] = []
        self.received: list[bytes | str] = []

    @property
    def open(self) -> bool:
        return self.closed_code is None and not self.abnormal

    def _closed(self, exc: ConnectionClosed) -> None:
        if exc.rcvd is None:
            self.abnormal = True
        else:
            self.closed_code = exc.rcvd.code
            self.closed_reason = exc.rcvd.reason

    def pump(self, timeout: float) -> bool:
        """Receive one message (False: none within `timeout`, or the socket is closed)."""
        if not self.open:
            return False
        try:
            message = self.ws.recv(timeout=timeout)
        except TimeoutError:
            return False
        except ConnectionClosed as exc:
            self._closed(exc)
            return False
        self.received.append(message)
        if isinstance(message, bytes):
            try:
                decoded = protocol.decode(message)
            except protocol.ProtocolError:
                return True
            if decoded.type == protocol.MessageType.SYNC and (
                decoded.sync_type == protocol.SyncType.STEP2
            ):
                self.step2.append(decoded.payload)
        return True

    def send(self, frame: bytes | str) -> None:
        if not self.open:
            return
        try:
            self.ws.send(frame)
        except ConnectionClosed as exc:
            self._closed(exc)

    def wait_step2(self, count: int, timeout: float = SOCKET_TIMEOUT_S) -> bool:
        """Wait until `count` step 2 answers arrived in all (True) or the socket closed."""
        deadline = time.monotonic() + timeout
        while len(self.step2) < count and self.open:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"the server neither answered a sync step 1 nor closed within {timeout} s"
                )
            self.pump(min(left, 1.0))
        return self.open

    def sync(self) -> bytes | None:
        """Ask for the server's whole doc (sync step 1 with an empty state vector): the update
        holding it, or None when the socket is closed by then."""
        self.send(protocol.sync_step1(b"\x00"))
        if not self.wait_step2(len(self.step2) + 1):
            return None
        return self.step2[-1]

    def barrier(self, frame: bytes | str) -> bool:
        """Send `frame`, then a sync step 1; wait for the answers (the room handles a
        client's messages in order, so these say the frame was handled). False: the server
        closed the socket."""
        expected = len(self.step2) + 1
        if isinstance(frame, bytes):
            try:
                message = protocol.decode(frame)
            except protocol.ProtocolError:
                message = None
            if message is not None and message.sync_type == protocol.SyncType.STEP1:
                expected += 1  # the frame is a step 1 the server may answer too
        self.send(frame)
        self.send(protocol.sync_step1(b"\x00"))
        return self.wait_step2(expected)

    def drain(self) -> None:
        while self.pump(0.0):
            pass

    def finish(self, timeout: float = 2.0) -> None:
        """Close from this side (when still open), reading what is left."""
        if self.open:
            try:
                self.ws.close()
            except ConnectionClosed:
                pass
        self.ws.close_timeout = timeout


class Harness:
    """One real server for a test module, its reference panels and the checks."""

    def __init__(self, data_dir: Path) -> None:
        self.server = ServerProcess(data_dir, env=SERVER_ENV)
        self.tokens = _tokens()
        self.references: dict[tuple[str, str], PanelRead] = {}
        self.peer: YjsClient | None = None
        self.counter = itertools.count()
        self.crashes = 0
        self.log_offset = 0
        self.client = httpx.Client(
            base_url="http://127.0.0.1",  # replaced on start
            timeout=REQUEST_TIMEOUT_S,
            # One connection per request: a case that leaves a connection broken (the server
            # drops it after an unhandled error) cannot fail the next case.
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Harness:
        self.server.start()
        self.client.base_url = httpx.URL(self.server.http)
        for (workspace, panel), states in REFERENCES.items():
            for state in states:
                answer = self.send(
                    Request(
                        "PUT",
                        self.panel_path(workspace, panel),
                        body=_json({"state": state}),
                    )
                )
                assert answer.status in (200, 201), (workspace, panel, answer)
        self.peer = self._connect_peer()
        for key in REFERENCES:
            self.references[key] = self.read(*key)
            assert self.references[key].status == 200, (key, self.references[key])
        self.log_offset = self._log_size()
        return self

    def _connect_peer(self) -> YjsClient:
        """A writer's Yjs client on the live reference panel: it edits once, then only
        listens (it must hear nothing more)."""
        peer = self.yjs(*LIVE_REFERENCE, role="writer")
        assert peer.open, (peer.closed_code, peer.closed_reason)
        state = peer.sync()
        assert state is not None
        doc: Doc[Any] = Doc(client_id=4242)
        doc.apply_update(state)
        before = doc.get_state()
        doc.get("$state", type=Map)["cursor"] = {"line": 5, "who": "peer"}
        assert peer.barrier(protocol.sync_update(doc.get_update(before)))
        self.read(*LIVE_REFERENCE)  # settles the room: the edit is committed
        peer.drain()
        peer.received.clear()
        return peer

    def stop(self) -> None:
        if self.peer is not None:
            self.peer.finish()
        self.client.close()
        self.server.stop()

    def ensure_up(self) -> None:
        """Restart a server that died in an earlier case, so that Hypothesis can replay (and
        shrink) the case that killed it against a live one; that case has failed already."""
        process = self.server.process
        if process is not None and process.poll() is None:
            # What earlier cases logged is theirs (a failed case never reached its check).
            self.log_offset = self._log_size()
            return
        self.crashes += 1
        self.server.process = None
        self.server.start()
        self.peer = self._connect_peer()
        for key in REFERENCES:
            self.references[key] = self.read(*key)
        self.log_offset = self._log_size()

    # --- REST --------------------------------------------------------------------------------

    def panel_path(self, workspace: str, panel: str, suffix: str = "") -> str:
        return f"/api/state/{encode_id(workspace)}/{encode_id(panel)}{suffix}"

    def send(self, request: Request, timeout: float = REQUEST_TIMEOUT_S) -> Answer:
        headers: dict[str, str | bytes] = dict(request.headers)
        token = self.tokens.get(request.role)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if request.content_type is not None:
            headers["Content-Type"] = request.content_type
        url = request.path + (f"?{request.query}" if request.query else "")
        try:
            answer = self.client.request(
                request.method, url, content=request.body, headers=headers, timeout=timeout
            )
        except httpx.LocalProtocolError:
            raise  # the fuzzer built a request HTTP cannot carry: its own bug
        except httpx.HTTPError as exc:
            return Answer(None, error=repr(exc))
        return Answer(answer.status_code, answer.content)

    def read(self, workspace: str, panel: str) -> PanelRead:
        answer = self.client.get(
            self.panel_path(workspace, panel),
            headers={"Authorization": f"Bearer {self.tokens['auditor']}"},
        )
        return PanelRead.of(answer)

    def new_panel(self, prefix: str, state: dict[str, Any] | None) -> tuple[str, PanelRead]:
        """A fresh panel in the fuzzed workspace, holding `state` when the server takes it
        (else an empty $state): its id and how it reads."""
        panel = f"{prefix}-{next(self.counter)}-{time.monotonic_ns() % 10**9}"
        path = self.panel_path(WORKSPACE, panel)
        answer = self.send(Request("PUT", path, body=_json({"state": {"$state": state or {}}})))
        if answer.status not in (200, 201):
            answer = self.send(Request("PUT", path, body=_json({"state": {"$state": {}}})))
        assert answer.status in (200, 201), answer
        read = self.read(WORKSPACE, panel)
        assert read.status == 200, read
        return panel, read

    # --- Yjs ---------------------------------------------------------------------------------

    def yjs(
        self,
        workspace: str,
        panel: str,
        role: str,
        *,
        via_subprotocol: bool = False,
        epoch: str | None = None,
    ) -> YjsClient:
        """A connected raw client; it has read the server's first message (sync step 1) unless
        the server closed the socket at once."""
        token = self.tokens.get(role)
        query = []
        subprotocols: list[str] = []
        if token is not None and via_subprotocol:
            subprotocols = ["crdt-state", f"bearer.{token}"]
        elif token is not None:
            query.append(f"token={quote(token)}")
        if epoch is not None:
            query.append(f"epoch={quote(epoch, safe='')}")
        url = f"{self.server.ws}/ws/yjs/{encode_id(workspace)}/{encode_id(panel)}"
        if query:
            url += "?" + "&".join(query)
        ws = connect(
            url,
            subprotocols=subprotocols or None,  # type: ignore[arg-type]
            max_size=None,
            compression=None,
            proxy=None,
            open_timeout=SOCKET_TIMEOUT_S,
            close_timeout=5,
            ping_interval=None,  # keepalive pings draw from `random`, which Hypothesis owns
            legacy=True,  # a plain connection, no reconnecting iterator
        )
        client = YjsClient(ws)
        client.pump(SOCKET_TIMEOUT_S)  # the server's sync step 1, or its close
        return client

    # --- the checks after each case ----------------------------------------------------------

    def check_world(self, case: str) -> None:
        """Assert that the server is alive, healthy and quick, that no reference panel changed,
        that the live peer heard nothing, and that nothing was logged as unhandled."""
        process = self.server.process
        assert process is not None and process.poll() is None, (
            f"the server process died after: {case}\n{self.server.log_tail()}"
        )
        try:
            health = httpx.get(f"{self.server.http}/health", timeout=HEALTH_TIMEOUT_S)
        except httpx.HTTPError as exc:
            raise AssertionError(
                f"/health did not answer within {HEALTH_TIMEOUT_S} s after: {case} ({exc!r})"
            ) from None
        assert health.status_code == 200, f"/health answered {health.status_code} after: {case}"
        for key, expected in self.references.items():
            now = self.read(*key)
            assert now == expected, (
                f"reference panel {key} changed after: {case}\nbefore: {expected}\nafter: {now}"
            )
        peer = self.peer
        assert peer is not None
        peer.drain()
        assert peer.open, (
            f"the live reference peer was disconnected ({peer.closed_code} "
            f"{peer.closed_reason!r}) after: {case}"
        )
        assert not peer.received, (
            f"the live reference peer received {peer.received[:3]!r} after: {case}"
        )
        size = self._log_size()
        if size > self.log_offset:
            with open(self.server.log_path, "rb") as log:
                log.seek(self.log_offset)
                new = log.read(size - self.log_offset)
            self.log_offset = size
            if _TRACEBACK.search(new):
                text = new.decode(errors="replace")
                start = text.find("Traceback (most recent call last)")
                raise AssertionError(
                    f"the server logged a traceback after: {case}\n{text[max(0, start - 400) :]}"
                )

    def _log_size(self) -> int:
        try:
            return self.server.log_path.stat().st_size
        except FileNotFoundError:
            return 0


def _json(value: Any) -> bytes:
    return orjson.dumps(value)
