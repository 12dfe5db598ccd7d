"""Hostile Yjs updates against a real server: nesting that crashed the process (20,000 levels)
or poisoned a panel (300 and 1,100 levels, in one update or one level at a time), other
roots, `$meta` and `$computed` writes, values REST refuses, garbage after an update. Each is
refused (the socket closed with 4400/4413), nothing of it is applied, logged or relayed, the
process lives, and the panel keeps working for everyone else."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from crdt_state import protocol

from . import yjs_encoder as enc
from .conftest import token
from .server import ServerProcess
from .wire import RawPeer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("hostile-yjs")).start()
    yield process
    process.stop()


def rest(server: ServerProcess, panel: str) -> dict:
    headers = {"Authorization": f"Bearer {token('reader', {'ws': 'read'})}"}
    answer = httpx.get(f"{server.http}/api/state/ws/{panel}", headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def peer(server: ServerProcess, panel: str, subject: str = "mallory") -> RawPeer:
    opened = await RawPeer.open(f"{server.yjs_url('ws')}/{panel}?token={token(subject)}")
    await opened.sync()
    return opened


async def refused(server: ServerProcess, panel: str, update: bytes, code: int) -> None:
    """`update` from an attacker closes its socket with `code`; a bystander sees nothing of
    it, the log has nothing of it, and the panel works afterwards."""
    bystander = await peer(server, panel, "bystander")
    await bystander.set("before", 1)
    before = rest(server, panel)
    attacker = await peer(server, panel)
    await attacker.ws.send(protocol.sync_update(update))
    assert await attacker.closed_with() == code
    assert httpx.get(f"{server.http}/health", timeout=5).status_code == 200  # it lives
    await bystander.set("after", 2)  # the next frame the bystander gets is this echo-free...
    after = rest(server, panel)
    assert after["version"] == before["version"] + 1  # ...and only its own change was logged
    assert after["state"]["$state"] == {**before["state"]["$state"], "after": 2}
    await bystander.close()


@pytest.mark.parametrize("depth", [300, 1_100, 20_000])
async def test_deeply_nested_maps_are_refused_and_the_process_lives(
    server: ServerProcess, depth: int
) -> None:
    await refused(server, f"deep-{depth}", enc.nested_maps(depth, client=9_000 + depth), 4413)


async def test_nesting_grown_one_level_per_update_is_refused_at_the_limit(
    server: ServerProcess,
) -> None:
    attacker = await peer(server, "grow")
    parent: str | tuple[int, int] = "$state"
    for level in range(2, 65):  # a map at each level, each update hanging under the last one
        update = enc.nested_maps(1, client=4242, clock=level - 2, parent=parent, key="k")
        await attacker.ws.send(protocol.sync_update(update))
        parent = (4242, level - 2)
    assert await attacker.closed_with() == 4413  # the one reaching level 64
    state = rest(server, "grow")["state"]["$state"]
    depth, node = 1, state.get("k")
    while isinstance(node, dict) and "k" in node:
        depth, node = depth + 1, node["k"]
    assert depth == 62  # levels 2 to 63: what REST accepts, and not one more


@pytest.mark.parametrize(
    "update, why",
    [
        (enc.set_value(1, client=5001, parent="evil", key="x"), "another root"),
        (enc.set_value("forged", client=5002, parent="$meta", key="epoch"), "$meta"),
        (enc.set_value(1, client=5003, parent="$computed", key="x"), "$computed, no admin"),
        (enc.set_value(enc.BigInt(2**53 + 2), client=5004, key="big"), "beyond 2^53"),
        (enc.set_value(float("nan"), client=5005, key="nan"), "NaN"),
        (enc.set_value(b"\x00\x01", client=5006, key="bin"), "binary"),
        (enc.set_value(1, client=5007, key="x") + b"\x00" * 1024, "trailing garbage"),
    ],
)
async def test_what_rest_refuses_is_refused_over_yjs(
    server: ServerProcess, update: bytes, why: str
) -> None:
    await refused(server, f"rule-{abs(hash(why)) % 10_000}", update, 4400)
