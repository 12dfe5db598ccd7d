"""REST and live Yjs clients on the same panel: agents' patches and people's edits merge."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from crdt_state.jsonpatch import parse_patch
from crdt_state.patch_plan import apply_to_json

from .conftest import token
from .server import ServerProcess
from .yjs_client import YjsClients


@pytest.fixture
async def node():
    async with YjsClients() as clients:
        yield clients


def api(server: ServerProcess) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token('agent', {'ws': 'admin'})}"}
    return httpx.Client(base_url=f"{server.http}/api/state/ws", headers=headers)


async def connect(node, server, name, panel):
    return await node.connect(name, server.yjs_url("ws"), panel, params={"token": token(name)})


async def test_a_stale_patch_and_a_live_edit_of_the_same_object_both_survive(node, server):
    with api(server) as rest:
        assert rest.put("/p", json={"state": {"$state": {"obj": {"a": 0, "b": 0}}}}).is_success
        old = rest.get("/p").json()["version"]
        browser = await connect(node, server, "browser", "p")
        watcher = await connect(node, server, "watcher", "p")
        await browser.set(["$state", "obj", "a"], "from the browser")
        await watcher.wait_for(["$state", "obj", "a"], "from the browser")
        patched = rest.patch(
            "/p",
            json={
                "version": old,
                "patches": [{"op": "replace", "path": "/$state/obj/b", "value": "from the agent"}],
            },
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["merged"] is True
        expected = {"obj": {"a": "from the browser", "b": "from the agent"}}
        await browser.wait_json_equals(expected)  # the REST change reached the client live
        assert rest.get("/p").json()["state"]["$state"] == expected


async def test_history_of_two_browsers_and_an_agent_replays_to_the_current_state(node, server):
    with api(server) as rest:
        ann = await connect(node, server, "ann", "h")
        bob = await connect(node, server, "bob", "h")
        await ann.set(["$state", "filters"], {"price": {"min": 0}, "tags": []})
        await bob.wait_for(["$state", "filters", "price", "min"], 0)
        for i in range(5):
            await ann.push(["$state", "filters", "tags"], f"a{i}")
            await bob.set(["$state", "filters", "price", "min"], i)
            answer = rest.patch(
                "/h",
                json={
                    "triggeredBy": "ai",
                    "patches": [
                        {"op": "add", "path": "/$state/filters/tags/0", "value": f"ai{i}"},
                        {"op": "add", "path": "/$computed/count", "value": i},
                    ],
                },
            )
            assert answer.status_code == 200, answer.text
        final = rest.get("/h").json()
        await ann.wait_json_equals(final["state"]["$state"])
        await bob.wait_json_equals(final["state"]["$state"])
        history = rest.get("/h/history", params={"limit": 1000}).json()["history"]
        versions = [entry["version"] for entry in reversed(history)]
        assert versions == list(range(1, final["version"] + 1))  # every version, no gap
        view: Any = rest.get("/h", params={"version": 1}).json()["state"]
        for entry in reversed(history[:-1]):  # from version 2 on, in order
            view = apply_to_json(view, parse_patch(entry["patch"]))
        assert view == final["state"]
        assert {entry["subject"] for entry in history} >= {"ann", "bob", "agent"}


async def test_time_travel_matches_what_a_client_saw_and_revert_reaches_clients(node, server):
    with api(server) as rest:
        ann = await connect(node, server, "ann", "tt")
        watcher = await connect(node, server, "watcher", "tt")
        seen: dict[int, Any] = {}
        for step in range(4):
            await ann.set(["$state", "step"], step)
            await ann.set(["$state", f"k{step}"], True)
            # Once another client has it, the server has applied it.
            await watcher.wait_for(["$state", f"k{step}"], True)
            current = rest.get("/tt").json()
            seen[current["version"]] = await ann.state()
            assert current["state"]["$state"] == seen[current["version"]]
        for version, state in seen.items():
            assert rest.get("/tt", params={"version": version}).json()["state"]["$state"] == state
        target = min(seen)
        assert rest.post("/tt/revert", json={"targetVersion": target}).status_code == 200
        await ann.wait_json_equals(seen[target])


async def test_deleting_a_panel_closes_its_clients_with_4404(node, server):
    with api(server) as rest:
        ann = await connect(node, server, "ann", "gone")
        await ann.set(["$state", "x"], 1)
        assert rest.delete("/gone").status_code == 200
        code, _ = await ann.wait_close()
        assert code == 4404
