"""Who may open a panel's WebSocket, and what a read-only client can do."""

from __future__ import annotations

import httpx
import jwt

from .conftest import token
from .server import SECRET, ServerProcess
from .wire import RawPeer


async def close_code(server: ServerProcess, query: str, **kwargs) -> int | None:
    peer = await RawPeer.open(f"{server.yjs_url('ws')}/p{query}", **kwargs)
    return await peer.closed_with()


async def test_no_token_is_refused_with_4401(server):
    assert await close_code(server, "") == 4401


async def test_a_token_with_a_bad_signature_is_refused(server):
    forged = jwt.encode({"sub": "eve", "workspaces": {"ws": "admin"}}, "x" * 40, "HS256")
    assert await close_code(server, f"?token={forged}") == 4401


async def test_an_expired_token_is_refused(server):
    assert await close_code(server, f"?token={token(ttl=-10)}") == 4401


async def test_a_token_for_another_workspace_is_forbidden(server):
    assert await close_code(server, f"?token={token('bob', {'other': 'admin'})}") == 4403


async def test_the_token_may_come_as_a_subprotocol(server):
    peer = await RawPeer.open(
        f"{server.yjs_url('ws')}/sub", subprotocols=["crdt-state", f"bearer.{token()}"]
    )
    assert peer.ws.subprotocol == "crdt-state"
    await peer.sync()
    await peer.close()


async def test_an_origin_outside_the_allow_list_cannot_upgrade(server):
    try:
        await RawPeer.open(
            f"{server.yjs_url('ws')}/p?token={token()}", origin="https://evil.example"
        )
    except Exception as exc:  # the handshake itself is refused with HTTP 403
        assert "403" in str(exc)
    else:
        raise AssertionError("the upgrade from a foreign origin was accepted")


async def test_a_page_of_the_servers_own_origin_may_upgrade(server):
    """The inspector's page: served by the server itself, it needs no allow-list entry."""
    peer = await RawPeer.open(f"{server.yjs_url('ws')}/p?token={token()}", origin=server.http)
    await peer.sync()
    await peer.close()


async def test_a_reader_gets_the_doc_but_its_writes_and_presence_are_dropped(server):
    owner = await RawPeer.open(f"{server.yjs_url('ws')}/ro?token={token()}")
    await owner.sync()
    await owner.set("value", "original")
    reader_token = token("rita", {"ws": "read"})
    reader = await RawPeer.open(f"{server.yjs_url('ws')}/ro?token={reader_token}")
    await reader.sync()
    assert reader.state["value"] == "original"  # reads work
    await reader.set("value", "changed by a reader")
    from crdt_state import protocol

    entry = protocol.AwarenessEntry(7, 1, '{"name":"rita"}')
    await reader.ws.send(protocol.awareness_message(protocol.encode_awareness([entry])))
    # A query-awareness round trip proves the server handled both frames before we look.
    await reader.ws.send(b"\x03")
    answer = await reader.recv()
    assert protocol.decode_awareness(answer.payload) == []
    body = httpx.get(
        f"{server.http}/api/state/ws/ro", headers={"Authorization": f"Bearer {token()}"}
    ).json()
    assert body["state"]["$state"] == {"value": "original"}
    assert body["version"] == 2
    await reader.close()
    await owner.close()


async def test_rest_reads_need_a_valid_token(server):
    assert httpx.get(f"{server.http}/api/state/ws/p").status_code == 401
    bad = httpx.get(f"{server.http}/api/state/ws/p", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["error"] == "unauthorized"
    other = token("bob", {"other": "read"})
    forbidden = httpx.get(
        f"{server.http}/api/state/ws/p", headers={"Authorization": f"Bearer {other}"}
    )
    assert forbidden.status_code == 403
    assert SECRET not in forbidden.text
