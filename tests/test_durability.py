"""What the server acknowledged survives a restart, and versions go on without a gap."""

from __future__ import annotations

import httpx

from .conftest import token
from .server import ServerProcess
from .wire import RawPeer


def get(server: ServerProcess, panel: str) -> dict:
    response = httpx.get(
        f"{server.http}/api/state/ws/{panel}", headers={"Authorization": f"Bearer {token()}"}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def edit(server: ServerProcess, panel: str, count: int, start: int = 0) -> None:
    peer = await RawPeer.open(f"{server.yjs_url('ws')}/{panel}?token={token()}")
    await peer.sync()
    for i in range(start, start + count):
        await peer.set(f"k{i % 7}", i)
    # A query-awareness round trip: the server has handled every update before it answers.
    await peer.ws.send(b"\x03")
    await peer.recv()
    await peer.close()


async def test_a_graceful_restart_keeps_every_update_and_versions_continue(tmp_path):
    server = ServerProcess(tmp_path / "data").start()
    await edit(server, "p", 300)
    before = get(server, "p")
    assert before["version"] == 301
    server.stop()
    server.start()
    after = get(server, "p")
    assert after["state"] == before["state"]
    assert after["version"] == before["version"]
    assert after["epoch"] == before["epoch"]
    await edit(server, "p", 1, start=1000)
    assert get(server, "p")["version"] == before["version"] + 1
    server.stop()


async def test_kill_9_loses_nothing_that_was_acknowledged(tmp_path):
    server = ServerProcess(tmp_path / "data").start()
    await edit(server, "p", 200)
    acknowledged = get(server, "p")  # a read answers once pending writes are committed
    server.kill()
    server.start()
    after = get(server, "p")
    assert after["version"] == acknowledged["version"]
    assert after["state"] == acknowledged["state"]
    server.stop()


async def test_a_restarted_server_loads_from_a_checkpoint(tmp_path):
    server = ServerProcess(tmp_path / "data", env={"CRDT_STATE_CHECKPOINT_EVERY": "50"}).start()
    await edit(server, "p", 220)
    before = get(server, "p")
    server.stop()

    import sqlite3

    db = sqlite3.connect(tmp_path / "data" / "crdt-state.sqlite3")
    checkpoints = [row[0] for row in db.execute("select version from state_checkpoints")]
    db.close()
    # A checkpoint at every 50 versions when the room has a quiet moment, and at least every
    # 2 x 50 while it never has one (as here: one client writing flat out).
    assert checkpoints and 221 - max(checkpoints) < 2 * 50
    server.start()
    assert get(server, "p")["state"] == before["state"]
    server.stop()
