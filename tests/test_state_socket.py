"""The JSON subscription socket: state_sync, then every version in order; resume by version."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from websockets.asyncio.client import connect

from crdt_state.jsonpatch import parse_patch
from crdt_state.patch_plan import apply_to_json

from .conftest import token
from .server import ServerProcess
from .yjs_client import YjsClients

AUTH = {"Authorization": f"Bearer {token('agent', {'ws': 'admin'})}"}


class Subscriber:
    def __init__(self, server: ServerProcess) -> None:
        self.url = f"{server.ws}/ws/state/ws?token={token('sub', {'ws': 'read'})}"

    async def __aenter__(self) -> Subscriber:
        self.ws = await connect(self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def next(self, kind: str | None = None) -> dict[str, Any]:
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
            if kind is None or message["type"] == kind:
                return message


def patch(server: ServerProcess, panel: str, path: str, value: Any) -> int:
    answer = httpx.patch(
        f"{server.http}/api/state/ws/{panel}",
        headers=AUTH,
        json={"patches": [{"op": "add", "path": path, "value": value}]},
    )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["version"])


async def test_subscribe_gets_the_state_then_every_change_in_order(server):
    httpx.put(
        f"{server.http}/api/state/ws/p", headers=AUTH, json={"state": {"$state": {"items": []}}}
    )
    async with Subscriber(server) as sub, YjsClients() as node:
        await sub.send({"type": "subscribe", "panelId": "p"})
        sync = await sub.next("state_sync")
        view = sync["state"]
        assert view["$state"] == {"items": []}
        browser = await node.connect("b", server.yjs_url("ws"), "p", params={"token": token("b")})
        last = sync["version"]
        for i in range(5):
            last = patch(server, "p", "/$state/items/-", f"agent{i}")
            await browser.push(["$state", "items"], f"browser{i}")
        while True:
            update = await sub.next("state_update")
            view = apply_to_json(view, parse_patch(update["patch"]))
            current = httpx.get(f"{server.http}/api/state/ws/p", headers=AUTH).json()
            if update["version"] == current["version"]:
                expected_final = current
                break
        assert view == expected_final["state"]
        assert last <= expected_final["version"]


async def test_resubscribing_with_a_version_delivers_exactly_the_missed_ones(server):
    httpx.put(f"{server.http}/api/state/ws/r", headers=AUTH, json={"state": {"$state": {"n": 0}}})
    async with Subscriber(server) as sub:
        await sub.send({"type": "subscribe", "panelId": "r"})
        have = (await sub.next("state_sync"))["version"]
    missed = [patch(server, "r", "/$state/n", i) for i in range(1, 6)]
    async with Subscriber(server) as sub:
        await sub.send({"type": "subscribe", "panelId": "r", "version": have})
        got = [(await sub.next("state_update"))["version"] for _ in missed]
        assert got == missed
        later = patch(server, "r", "/$state/n", 99)
        assert (await sub.next("state_update"))["version"] == later
        await sub.send({"type": "ping"})
        assert (await sub.next())["type"] in ("subscribed", "pong")


async def test_bad_messages_get_error_answers_and_the_socket_lives_on(server):
    async with Subscriber(server) as sub:
        await sub.ws.send("not json")
        assert (await sub.next("error"))["code"] == "bad_request"
        await sub.send({"type": "subscribe", "panelId": "missing"})
        error = await sub.next("error")
        assert error["code"] == "panel_not_found"
        await sub.send({"type": "ping"})
        assert (await sub.next("pong"))["type"] == "pong"
