"""The y-websocket face at the wire: handshake, updates, and what a bad message gets."""

from __future__ import annotations

import httpx
import pytest

from crdt_state import protocol

from .conftest import token
from .server import ServerProcess
from .wire import RawPeer


def rest_state(server: ServerProcess, panel: str, workspace: str = "ws") -> dict:
    response = httpx.get(
        f"{server.http}/api/state/{workspace}/{panel}",
        headers={"Authorization": f"Bearer {token()}"},
    )
    assert response.status_code == 200, response.text
    return response.json()


async def writer(server: ServerProcess, panel: str) -> RawPeer:
    peer = await RawPeer.open(f"{server.yjs_url('ws')}/{panel}?token={token()}")
    await peer.sync()
    return peer


async def test_a_writer_creates_the_panel_and_its_edit_is_readable_as_json(server):
    peer = await writer(server, "p1")
    await peer.set("title", "hello")
    body = rest_state(server, "p1")
    assert body["state"]["$state"] == {"title": "hello"}
    assert body["version"] == 2  # 1 is the creation
    assert body["panelId"] == "p1" and body["workspaceId"] == "ws"
    await peer.close()


async def test_an_update_reaches_other_clients_but_not_its_sender(server):
    a = await writer(server, "p2")
    b = await writer(server, "p2")
    await a.set("x", 1)
    message = await b.recv()
    assert message.type == protocol.MessageType.SYNC
    assert message.sync_type == protocol.SyncType.UPDATE
    b.doc.apply_update(message.payload)
    assert b.state["x"] == 1
    await b.set("y", 2)  # a's next frame is b's update, not an echo of its own
    echo_or_b = await a.recv()
    a.doc.apply_update(echo_or_b.payload)
    assert a.state["y"] == 2
    await a.close()
    await b.close()


@pytest.mark.parametrize(
    "frame, why",
    [
        (b"\x07\x00", "unknown message type"),
        (b"\x00\x02\x10abc", "truncated update"),
        (b"\x00\x02\x05\xff\xff\xff\xff\xff", "garbage update"),
        (b"\x00\x09\x00", "unknown sync type"),
        (b"\x01\x03\x01\x02", "truncated awareness"),
        (b"\x01" + protocol.write_var_bytes(b"\x01\x05\x01\x03{x}"), "awareness not JSON"),
        (b"\x00\x02\x00extra", "trailing bytes"),
        (b"\xff\xff\xff\xff\xff\xff\xff\xff\xff", "varuint overflow"),
    ],
)
async def test_a_bad_message_closes_only_its_connection_and_changes_nothing(server, frame, why):
    bystander = await writer(server, "bad")
    await bystander.set("kept", True)
    before = rest_state(server, "bad")
    offender = await writer(server, "bad")
    await offender.ws.send(frame)
    assert await offender.closed_with() == 4400, why
    await bystander.set("after", 1)  # the bystander still works
    after = rest_state(server, "bad")
    assert after["state"]["$state"] == {"kept": True, "after": 1}
    assert after["version"] == before["version"] + 1  # nothing of the bad frame was logged
    await bystander.close()


async def test_a_text_frame_is_refused(server):
    peer = await writer(server, "text")
    await peer.ws.send("hello")
    assert await peer.closed_with() == 4400


async def test_an_oversized_message_is_refused_with_4413(tmp_path):
    server = ServerProcess(tmp_path, env={"CRDT_STATE_MAX_MESSAGE_BYTES": "65536"}).start()
    try:
        peer = await writer(server, "big")
        before = rest_state(server, "big")
        await peer.ws.send(protocol.sync_update(b"\x00" * 70_000))
        assert await peer.closed_with() == 4413
        assert rest_state(server, "big")["version"] == before["version"]
    finally:
        server.stop()


async def test_a_reader_cannot_open_a_panel_that_does_not_exist(server):
    reader = token("rita", {"ws": "read"})
    peer = await RawPeer.open(f"{server.yjs_url('ws')}/nothing-here?token={reader}")
    assert await peer.closed_with() == 4404


async def test_query_awareness_answers_with_everyone_present(server):
    a = await writer(server, "aw")
    b = await writer(server, "aw")
    entry = protocol.AwarenessEntry(client_id=42, clock=1, state='{"user":"a"}')
    await a.ws.send(protocol.awareness_message(protocol.encode_awareness([entry])))
    relayed = await b.recv()
    assert relayed.type == protocol.MessageType.AWARENESS
    assert protocol.decode_awareness(relayed.payload) == [entry]
    await b.ws.send(b"\x03")
    answer = await b.recv()
    assert protocol.decode_awareness(answer.payload) == [entry]
    await a.close()  # a leaves: its presence is removed, and b is told
    removal = protocol.decode_awareness((await b.recv()).payload)
    assert removal == [protocol.AwarenessEntry(42, 2, "null")]
    await b.close()


async def test_a_client_cannot_change_the_server_owned_meta(server):
    from pycrdt import Map

    peer = await writer(server, "meta")
    meta = peer.doc.get("$meta", type=Map)
    epoch = meta["epoch"]
    before = rest_state(server, "meta")
    updates: list[bytes] = []
    subscription = peer.doc.observe(lambda event: updates.append(event.update))
    meta["epoch"] = "forged"
    peer.doc.unobserve(subscription)
    await peer.ws.send(protocol.sync_update(updates[0]))
    assert await peer.closed_with() == 4400  # refused before the doc saw it
    other = await writer(server, "meta")
    assert other.doc.get("$meta", type=Map)["epoch"] == epoch
    after = rest_state(server, "meta")
    assert after["epoch"] == epoch and after["version"] == before["version"]


async def next_sync(peer: RawPeer, kind: protocol.SyncType) -> bytes:
    """The payload of the server's next sync message of `kind`, skipping other messages."""
    while True:
        message = await peer.recv()
        if message.type == protocol.MessageType.SYNC and message.sync_type == kind:
            return message.payload


async def test_edits_that_skip_what_the_client_made_offline_are_kept_not_refused(server):
    """A client back from an outage goes on editing before it has answered the server's sync
    step 1 with the edits it made offline (y-websocket sends each edit as it is made): the
    live edit skips clocks the room lacks. The socket stays open and the client's answer
    brings everything; with no question open, the server asks."""
    url = f"{server.yjs_url('ws')}/gap?token={token()}"
    first = await writer(server, "gap")
    await first.set("online", 1)
    await first.close()
    first.state["offline"] = 2  # made while disconnected: in the doc, never sent

    peer = await RawPeer.open(url)
    peer.doc, peer.state = first.doc, first.state  # the same client, reconnected
    question = await next_sync(peer, protocol.SyncType.STEP1)  # the join's step 1, not answered yet
    await peer.set("live", 3)  # skips "offline": dropped, the answer will hold it
    await peer.ws.send(protocol.sync_step2(peer.doc.get_update(question)))
    await peer.ws.send(protocol.sync_step1(peer.doc.get_state()))  # a round trip: all applied
    await next_sync(peer, protocol.SyncType.STEP2)
    assert rest_state(server, "gap")["state"]["$state"] == {"online": 1, "offline": 2, "live": 3}

    peer.state["offline2"] = 4  # not sent
    await peer.set("live2", 5)  # skips it, and no question is open: the server asks
    question = await next_sync(peer, protocol.SyncType.STEP1)
    await peer.ws.send(protocol.sync_step2(peer.doc.get_update(question)))
    await peer.ws.send(protocol.sync_step1(peer.doc.get_state()))
    await next_sync(peer, protocol.SyncType.STEP2)
    state = rest_state(server, "gap")["state"]["$state"]
    assert state == {"online": 1, "offline": 2, "live": 3, "offline2": 4, "live2": 5}
    await peer.close()


async def test_a_client_that_never_answers_loses_only_its_own_skipping_edits(server):
    """A client that keeps sending edits that skip clocks and never answers the server's step
    1: each is dropped for the cost of checking it, one question stays open (not one per
    edit), the socket stays open, and nothing of it is applied until it answers."""
    await (await writer(server, "mute")).close()  # the panel exists
    peer = await RawPeer.open(f"{server.yjs_url('ws')}/mute?token={token()}")
    question = await next_sync(peer, protocol.SyncType.STEP1)  # the join's: never answered
    peer.state["unsent"] = 0  # every edit below skips it
    for i in range(100):
        await peer.set(f"k{i}", i)
    await peer.ws.send(protocol.sync_step1(peer.doc.get_state()))
    asked = 0
    while True:  # the server's answer comes after it has read every edit above
        message = await peer.recv()
        if message.type == protocol.MessageType.SYNC:
            if message.sync_type == protocol.SyncType.STEP2:
                break
            asked += message.sync_type == protocol.SyncType.STEP1
    assert asked == 0, "the join's question is still open: the server does not ask again"
    assert rest_state(server, "mute")["state"]["$state"] == {}
    await peer.ws.send(protocol.sync_step2(peer.doc.get_update(question)))  # at last
    await peer.ws.send(protocol.sync_step1(peer.doc.get_state()))
    await next_sync(peer, protocol.SyncType.STEP2)
    state = rest_state(server, "mute")["state"]["$state"]
    assert state == {"unsent": 0} | {f"k{i}": i for i in range(100)}
    await peer.close()
