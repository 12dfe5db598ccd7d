"""Drive real ``@hocuspocus/provider`` clients from pytest (the provider as published).

``HocuspocusClients`` starts ``node tests/js/hpclient.mjs`` (installed by ``npm ci --prefix
tests/js``) and talks to it with JSON lines, as ``tests/yjs_client.py`` does with y-websocket
clients. The Node process holds named shared sockets (``HocuspocusProviderWebsocket``) and
named documents on them (a Y.Doc + a ``HocuspocusProvider`` each):

    async with HocuspocusClients() as node:
        await node.socket("tab", f"ws://127.0.0.1:{port}/ws/hocuspocus")
        a = await node.open("a", "tab", "ws1/panel-1", token=jwt)
        b = await node.open("b", "tab", "ws1/panel-2", token=jwt)
        await a.set(["$state", "title"], "hello")
        await a.wait_unsynced(0)          # the server applied and logged it

Every call has a timeout; a failed command, a timeout or a dead Node process raises
``HocuspocusClientError`` (an ``AssertionError``) ending with Node's stderr tail. Waiting calls
take ``within`` (seconds, on the Node side); the Python side waits a little longer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

JS_DIR = Path(__file__).resolve().parent / "js"
SCRIPT = JS_DIR / "hpclient.mjs"
DEFAULT_TIMEOUT = 10.0
DEFAULT_WAIT = 5.0
_WAIT_SLACK = 3.0
_STDERR_LINES = 200

Json = Any
YPath = Sequence[str]


class HocuspocusClientError(AssertionError):
    """A Node command failed, timed out, or the Node process died."""


class HocuspocusClients:
    """One ``node hpclient.mjs`` process: shared sockets and the documents on them."""

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self._tasks: list[asyncio.Task[None]] = []
        self._dead: str | None = None

    async def __aenter__(self) -> HocuspocusClients:
        node = shutil.which("node")
        if node is None:
            raise HocuspocusClientError("node is not on PATH; the Hocuspocus tests need Node")
        if not (JS_DIR / "node_modules" / "@hocuspocus" / "provider").is_dir():
            missing = JS_DIR / "node_modules" / "@hocuspocus" / "provider"
            raise HocuspocusClientError(f"{missing} is missing: run `npm ci --prefix tests/js`")
        self._proc = await asyncio.create_subprocess_exec(
            node,
            str(SCRIPT),
            cwd=str(JS_DIR),
            env=dict(os.environ),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        self._tasks = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]
        await self.request("ping")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()  # Node destroys its clients and exits
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        for task in self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(task, 2.0)
        self._fail_pending("the Node process was closed")

    # -- plumbing ------------------------------------------------------------------------------

    def _error(self, message: str) -> HocuspocusClientError:
        tail = "\n".join(list(self._stderr)[-40:])
        return HocuspocusClientError(f"{message}\n--- node stderr (tail) ---\n{tail or '(empty)'}")

    async def request(
        self, cmd: str, *, within: float | None = None, **fields: Any
    ) -> dict[str, Any]:
        """One command and its reply; `within`: a wait's limit on the Node side (seconds)."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise self._error(f"node command {cmd!r}: the Node process is not running")
        if self._dead is not None:
            raise self._error(f"node command {cmd!r}: {self._dead}")
        limit = self.timeout
        if within is not None:
            fields["timeoutMs"] = int(within * 1000)
            limit = max(self.timeout, within + _WAIT_SLACK)
        rid = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            proc.stdin.write(json.dumps({"id": rid, "cmd": cmd, **fields}).encode() + b"\n")
            await proc.stdin.drain()
            reply = await asyncio.wait_for(future, limit)
        except TimeoutError:
            raise self._error(f"node command {cmd!r} timed out after {limit:g} s") from None
        finally:
            self._pending.pop(rid, None)
        if not reply.get("ok"):
            raise self._error(f"node command {cmd!r} failed: {reply.get('error')}")
        return reply

    async def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            try:
                reply = json.loads(line)
            except ValueError:
                self._stderr.append(f"[hocuspocus_client] unparsable stdout: {line[:200]!r}")
                continue
            future = self._pending.get(reply.get("id"))
            if future is not None and not future.done():
                future.set_result(reply)
        self._dead = "the Node process exited"
        self._fail_pending(self._dead)

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while line := await self._proc.stderr.readline():
            self._stderr.append(line.decode(errors="replace").rstrip("\n"))

    def _fail_pending(self, why: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(self._error(why))

    # -- sockets -------------------------------------------------------------------------------

    async def socket(self, socket: str, url: str, *, within: float = DEFAULT_WAIT) -> None:
        """A ``HocuspocusProviderWebsocket`` to `url`, open."""
        await self.request("socket", within=within, socket=socket, url=url)

    async def socket_stats(self, socket: str) -> dict[str, Any]:
        """{status, opens, closeEvents: [{code, reason}], messages}"""
        return await self.request("socketStats", socket=socket)

    async def wait_socket_close(
        self, socket: str, *, within: float = DEFAULT_WAIT
    ) -> tuple[int, str]:
        reply = await self.request("waitSocketClose", within=within, socket=socket)
        return int(reply["code"]), str(reply["reason"])

    async def destroy_socket(self, socket: str) -> None:
        await self.request("destroySocket", socket=socket)

    # -- documents -----------------------------------------------------------------------------

    async def open(
        self,
        name: str,
        socket: str,
        document: str,
        *,
        token: str | None = None,
        awareness: Json = ...,
        wait: str = "synced",
        within: float = DEFAULT_WAIT,
    ) -> HocuspocusDoc:
        """A provider for `document` on `socket`. `wait`: "synced" (fails if denied), "auth"
        (authenticated or denied) or "none"."""
        fields: dict[str, Any] = {"name": name, "socket": socket, "document": document}
        if token is not None:
            fields["token"] = token
        if awareness is not ...:
            fields["awareness"] = awareness
        reply = await self.request("open", within=within, wait=wait, **fields)
        doc = HocuspocusDoc(self, name, int(reply["clientId"]))
        doc.scope, doc.denied = reply.get("scope"), reply.get("denied")
        return doc


class HocuspocusDoc:
    """A handle on one document client (one provider) of a ``HocuspocusClients`` process."""

    def __init__(self, node: HocuspocusClients, name: str, client_id: int) -> None:
        self.node = node
        self.name = name
        self.client_id = client_id
        self.scope: str | None = None
        self.denied: str | None = None

    def __repr__(self) -> str:
        return f"HocuspocusDoc({self.name!r}, scope={self.scope!r}, denied={self.denied!r})"

    async def _call(self, cmd: str, **fields: Any) -> dict[str, Any]:
        return await self.node.request(cmd, name=self.name, **fields)

    async def set(self, path: YPath, value: Json) -> None:
        await self._call("set", path=list(path), value=value)

    async def delete(self, path: YPath) -> None:
        await self._call("delete", path=list(path))

    async def burst(self, count: int, prefix: str = "k") -> None:
        """`count` transactions, one `$state` key each, as fast as the provider sends them."""
        await self._call("burst", count=count, prefix=prefix)

    async def state(self) -> dict[str, Json]:
        return dict((await self._call("json"))["json"])

    async def wait_for(self, path: YPath, equals: Json, *, within: float = DEFAULT_WAIT) -> None:
        await self._call("waitFor", path=list(path), equals=equals, within=within)

    async def wait_json_equals(self, expected: Json, *, within: float = DEFAULT_WAIT) -> None:
        await self._call("waitJsonEquals", json=expected, within=within)

    async def awareness(self, state: Json) -> None:
        await self._call("awareness", state=state)

    async def wait_peers(
        self, count: int, *, match: Mapping[str, Json] | None = None, within: float = DEFAULT_WAIT
    ) -> dict[int, Json]:
        fields: dict[str, Any] = {"count": count}
        if match is not None:
            fields["match"] = dict(match)
        reply = await self._call("waitPeers", within=within, **fields)
        return {int(k): v for k, v in reply["states"].items()}

    async def stats(self) -> dict[str, Any]:
        """unsyncedChanges, synced, authenticated, scope, denials, closes, acks {applied,
        refused} (SyncStatus messages received)."""
        return await self._call("stats")

    async def wait_unsynced(self, equals: int, *, within: float = DEFAULT_WAIT) -> dict[str, int]:
        """Wait until the provider's ``unsyncedChanges`` is `equals`; the acks counted."""
        return dict((await self._call("waitUnsynced", equals=equals, within=within))["acks"])

    async def wait_denied(self, *, within: float = DEFAULT_WAIT) -> str:
        return str((await self._call("waitDenied", within=within))["reason"])

    async def wait_closed(self, *, within: float = DEFAULT_WAIT) -> str:
        """The reason of the next Close message the server sent for this document."""
        return str((await self._call("waitClosed", within=within))["reason"])

    async def detach(self) -> None:
        """The client closes the document (the provider sends Close); the socket stays."""
        await self._call("detach")

    async def destroy(self) -> None:
        await self._call("destroy")
