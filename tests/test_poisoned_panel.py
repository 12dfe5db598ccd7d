"""A panel whose stored log holds values nested too deep to render (written before updates
were checked) still loads, answers with everything else, and can be repaired: a removal or a
revert of the entry works, and afterwards the panel is whole again, reloaded or not.

The log is built directly in the store, as an older server would have left it."""

from __future__ import annotations

from pathlib import Path

import httpx

from adapters.sqlite import SqliteUpdateLog
from crdt_state.document import UNRENDERABLE, PanelDoc, new_epoch
from crdt_state.model import Change, ChangeType, PanelKey

from .conftest import token
from .inprocess import client_of, running_app
from .yjs_encoder import nested_any, nested_maps, set_value

DEPTH = 1_100  # past orjson's limits (254 to write, 1,023 to read): "Recursion limit reached"


async def poisoned_log(data_dir: Path, panel: str) -> None:
    """Version 1: created; 2: `deep`, 1,100 nested Y.Maps; 3: `blob`, a 1,100-deep plain
    object; 4: `ok`: 1."""
    store = await SqliteUpdateLog.open(data_dir / "crdt-state.sqlite3")
    key = PanelKey("ws", panel)
    doc = PanelDoc()
    updates: list[bytes] = []
    doc.doc.observe(lambda event: updates.append(event.update))
    epoch = new_epoch()
    doc.initialize(epoch)
    await store.create(Change(key, epoch, updates[0], ChangeType.CREATED))
    poison = [
        nested_maps(DEPTH, client=7001, key="k", first_key="deep"),
        set_value(nested_any(DEPTH), client=7002, key="blob"),
        set_value(1, client=7003, key="ok"),
    ]
    await store.append([Change(key, epoch, update) for update in poison])
    await store.close()


def api_of(app: object) -> httpx.AsyncClient:
    return client_of(app, token("fixer", {"ws": "admin"}))  # type: ignore[arg-type]


async def test_a_poisoned_panel_loads_shows_what_it_can_and_is_repaired_by_removal(
    tmp_path: Path,
) -> None:
    await poisoned_log(tmp_path, "p")
    async with running_app(tmp_path) as app, api_of(app) as api:
        shown = await api.get("/api/state/ws/p")
        assert shown.status_code == 200, shown.text
        assert shown.json()["state"]["$state"] == {
            "ok": 1,
            "deep": UNRENDERABLE,
            "blob": UNRENDERABLE,
        }
        assert shown.json()["version"] == 4
        assert (await api.get("/api/state/ws/snapshot")).status_code == 200
        assert (await api.get("/api/state/ws/p/history")).status_code == 200

        repair = [
            {"op": "remove", "path": "/$state/deep"},
            {"op": "remove", "path": "/$state/blob"},
        ]
        fixed = await api.patch("/api/state/ws/p", json={"patches": repair})
        assert fixed.status_code == 200, fixed.text
        assert (await api.get("/api/state/ws/p")).json()["state"]["$state"] == {"ok": 1}
        edited = await api.patch(
            "/api/state/ws/p", json={"patches": [{"op": "add", "path": "/$state/n", "value": 2}]}
        )
        assert edited.status_code == 200
    async with running_app(tmp_path) as app, api_of(app) as api:  # reloaded from the log
        assert (await api.get("/api/state/ws/p")).json()["state"]["$state"] == {"ok": 1, "n": 2}


async def test_a_poisoned_panel_is_repaired_by_a_revert(tmp_path: Path) -> None:
    await poisoned_log(tmp_path, "r")
    async with running_app(tmp_path) as app, api_of(app) as api:
        reverted = await api.post("/api/state/ws/r/revert", json={"targetVersion": 1})
        assert reverted.status_code == 200, reverted.text
        shown = (await api.get("/api/state/ws/r")).json()
        assert shown["state"]["$state"] == {} and shown["version"] == 5
    async with running_app(tmp_path) as app, api_of(app) as api:
        assert (await api.get("/api/state/ws/r")).json()["state"]["$state"] == {}
