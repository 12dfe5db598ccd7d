"""Real `yjs` + `y-websocket` clients (Node) against the real server."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from .conftest import token
from .server import ServerProcess
from .yjs_client import YjsClients


@pytest.fixture
async def node():
    async with YjsClients() as clients:
        yield clients


def rest_view(server: ServerProcess, panel: str) -> dict:
    response = httpx.get(
        f"{server.http}/api/state/ws/{panel}", headers={"Authorization": f"Bearer {token()}"}
    )
    assert response.status_code == 200, response.text
    return response.json()["state"]["$state"]


async def connect(node, server, name, panel, **kwargs):
    params = {"token": token(name)}
    return await node.connect(name, server.yjs_url("ws"), panel, params=params, **kwargs)


async def test_two_clients_converge_and_rest_shows_the_same_state(node, server):
    a = await connect(node, server, "a", "p")
    b = await connect(node, server, "b", "p")
    await a.set(["$state", "title"], "hello")
    await b.set(["$state", "items"], [1, 2])
    await a.wait_json_equals({"title": "hello", "items": [1, 2]})
    await b.wait_json_equals({"title": "hello", "items": [1, 2]})
    assert rest_view(server, "p") == {"title": "hello", "items": [1, 2]}


async def test_concurrent_edits_to_two_fields_of_one_object_both_survive(node, server):
    a = await connect(node, server, "a", "nested")
    b = await connect(node, server, "b", "nested")
    await a.set(["$state", "filter"], {"field": "price", "value": 10})
    await b.wait_for(["$state", "filter", "value"], 10)
    await asyncio.gather(a.disconnect(), b.disconnect())
    await a.set(["$state", "filter", "field"], "size")  # both edit while apart
    await b.set(["$state", "filter", "value"], 42)
    await asyncio.gather(a.reconnect(), b.reconnect())
    expected = {"filter": {"field": "size", "value": 42}}
    await a.wait_json_equals(expected)
    await b.wait_json_equals(expected)
    assert rest_view(server, "nested") == expected


async def test_simultaneous_edits_while_connected_both_survive(node, server):
    a = await connect(node, server, "a", "live")
    b = await connect(node, server, "b", "live")
    await a.set(["$state", "obj"], {"x": 0, "y": 0})
    await b.wait_for(["$state", "obj", "x"], 0)
    for i in range(1, 21):
        await asyncio.gather(a.set(["$state", "obj", "x"], i), b.set(["$state", "obj", "y"], -i))
    await a.wait_json_equals({"obj": {"x": 20, "y": -20}})
    await b.wait_json_equals({"obj": {"x": 20, "y": -20}})


async def test_a_late_joiner_gets_the_full_state(node, server):
    a = await connect(node, server, "a", "late")
    for i in range(50):
        await a.set(["$state", f"k{i}"], i)
    expected = {f"k{i}": i for i in range(50)}
    late = await connect(node, server, "late", "late")
    await late.wait_json_equals(expected)


async def test_an_offline_edit_converges_on_reconnect(node, server):
    a = await connect(node, server, "a", "off")
    b = await connect(node, server, "b", "off")
    await a.set(["$state", "shared"], "v1")
    await b.wait_for(["$state", "shared"], "v1")
    await b.disconnect()
    await a.set(["$state", "online"], True)
    await b.set(["$state", "offline"], True)
    await b.reconnect()
    expected = {"shared": "v1", "online": True, "offline": True}
    await a.wait_json_equals(expected)
    await b.wait_json_equals(expected)
    assert rest_view(server, "off") == expected


async def test_presence_arrives_on_join_and_disappears_on_leave(node, server):
    a = await connect(node, server, "a", "presence", awareness={"user": "ann"})
    b = await connect(node, server, "b", "presence", awareness={"user": "bob"})
    await a.wait_peers(1, match={"user": "bob"})
    await b.wait_peers(1, match={"user": "ann"})
    c = await connect(node, server, "c", "presence", awareness={"user": "cat"})
    await c.wait_peers(2)  # a joiner receives everyone's current presence
    await b.destroy()
    await a.wait_peers(1, match={"user": "cat"})
    await c.wait_peers(1, match={"user": "ann"})


async def test_a_reconnecting_client_is_visible_again_at_once(node, server):
    a = await connect(node, server, "a", "again", awareness={"user": "ann"})
    b = await connect(node, server, "b", "again", awareness={"user": "bob"})
    await a.wait_peers(1)
    await b.disconnect()
    await a.wait_peers(0)
    await b.reconnect()
    # The stock client re-announces with its old clock; the server shifts it past the
    # removal, so peers need not wait for the 15 s awareness renewal.
    await a.wait_peers(1, match={"user": "bob"}, within=3)


async def test_the_sender_of_an_update_gets_no_echo(node, server):
    a = await connect(node, server, "a", "echo")
    b = await connect(node, server, "b", "echo")
    before = (await a.stats())["updatesReceived"]
    await a.set(["$state", "mine"], 1)
    await b.wait_for(["$state", "mine"], 1)
    await b.set(["$state", "theirs"], 2)
    await a.wait_for(["$state", "theirs"], 2)
    # Frames to `a` are ordered: an echo of its own edit would have come before b's update.
    assert (await a.stats())["updatesReceived"] == before + 1
