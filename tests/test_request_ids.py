"""Request and connection ids (crdt_state/log_format.py `new_id`): 32 hex characters, never
repeated within a process, and never repeated by a forked worker of `serve --workers N`
(each reseeds its prefix at the fork)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from crdt_state import log_format
from crdt_state.log_format import new_id, request_id_of

from .conftest import token
from .inprocess import inprocess_client

HEX32 = re.compile(r"[0-9a-f]{32}")


def test_ids_are_32_hex_characters_and_never_repeat() -> None:
    ids = [new_id() for _ in range(50_000)]
    assert all(HEX32.fullmatch(i) for i in ids), ids[:3]
    assert len(set(ids)) == len(ids)


def test_a_forked_process_does_not_repeat_its_parents_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out without pytest's teardown
        try:
            os.write(write, " ".join(new_id() for _ in range(100)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode().split()
    os.waitpid(pid, 0)
    parent = [new_id() for _ in range(100)]
    assert len(child) == 100 and all(HEX32.fullmatch(i) for i in child)
    assert not set(child) & set(parent)
    assert {i[:20] for i in child}.isdisjoint(i[:20] for i in parent)  # its own prefix


def test_a_clients_sane_request_id_is_kept_and_anything_else_replaced() -> None:
    assert request_id_of("abc-123_XYZ") == "abc-123_XYZ"
    for bad in (None, "", "x" * 500, "two words", "ctl\x00char"):
        replaced = request_id_of(bad)
        assert HEX32.fullmatch(replaced), (bad, replaced)


async def test_a_request_binds_its_ids_for_itself_and_leaves_the_callers_as_they_were(
    tmp_path: Path,
) -> None:
    """httpx's ASGI transport runs the app in the caller's task: whatever a request binds
    (its id, its panel) must be undone when it ends, and what the caller had bound kept."""
    async with inprocess_client(tmp_path, token=token("alice", {"ws": "write"})) as api:
        bindings = log_format.bind_request("caller-1")
        log_format.bind_panel("outer", "outer-panel")
        try:
            answer = await api.put("/api/state/ws/p", json={"state": {"$state": {"a": 1}}})
            assert answer.status_code in (200, 201), answer.text
            assert HEX32.fullmatch(answer.headers["x-request-id"])
            assert log_format.request_id.get() == "caller-1"
            assert log_format.workspace_id.get() == "outer"
            assert log_format.panel_id.get() == "outer-panel"
        finally:
            log_format.unbind(bindings)
        assert log_format.request_id.get() is None
