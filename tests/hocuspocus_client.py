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

from collections.abc import Mapping, Sequence
from typing import Any

from .node_process import NodeProcess

DEFAULT_WAIT = 5.0
_WAIT_SLACK = 3.0

Json = Any
YPath = Sequence[str]


class HocuspocusClientError(AssertionError):
    """A Node command failed, timed out, or the Node process died."""


class HocuspocusClients(NodeProcess):
    """One ``node hpclient.mjs`` process: shared sockets and the documents on them."""

    script = "hpclient.mjs"
    requires = "@hocuspocus/provider"
    error = HocuspocusClientError
    what = "the Hocuspocus tests"

    async def request(  # type: ignore[override]
        self, cmd: str, *, within: float | None = None, **fields: Any
    ) -> dict[str, Any]:
        """One command and its reply; `within`: a wait's limit on the Node side (seconds)."""
        limit = None
        if within is not None:
            fields["timeoutMs"] = int(within * 1000)
            limit = max(self.timeout, within + _WAIT_SLACK)
        return await super().request(cmd, limit=limit, **fields)

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
