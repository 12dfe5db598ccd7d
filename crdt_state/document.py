"""The panel document: root maps, JSON <-> Y conversion, rendering, epoch.

Y.Doc
├── $state     state the users and agents edit
├── $computed  derived values written by services
└── $meta      server-owned: schema, epoch
JSON view: {"$state": {...}, "$computed": {...}}
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from pycrdt import Array, Doc, Map

from .values import check_json

STATE = "$state"
COMPUTED = "$computed"
META = "$meta"
ROOTS = (STATE, COMPUTED, META)
VIEW_ROOTS = (STATE, COMPUTED)
SCHEMA_VERSION = 1


def new_epoch() -> str:
    return uuid.uuid4().hex[:16]


def to_y(value: Any) -> Any:
    """JSON -> Y: objects become Y.Map and arrays Y.Array, recursively, so fields merge."""
    if isinstance(value, dict):
        return Map({key: to_y(item) for key, item in value.items()})
    if isinstance(value, list):
        return Array([to_y(item) for item in value])
    return value


class PanelDoc:
    """A Y.Doc with the panel's root maps resolved once."""

    __slots__ = ("doc", "roots")

    def __init__(self, doc: Doc[Any] | None = None) -> None:
        self.doc = doc if doc is not None else Doc()
        self.roots: dict[str, Map[Any]] = {name: self.doc.get(name, type=Map) for name in ROOTS}

    def initialize(self, epoch: str, state: dict[str, Any] | None = None) -> None:
        """The panel's first transaction: server metadata and any initial state."""
        if state is not None:
            check_json(state)
        with self.doc.transaction(origin="server"):
            meta = self.roots[META]
            meta["schema"] = SCHEMA_VERSION
            meta["epoch"] = epoch
            for key, value in (state or {}).items():
                self.roots[STATE][key] = to_y(value)

    @property
    def epoch(self) -> str | None:
        value = self.roots[META].get("epoch")
        return value if isinstance(value, str) else None

    def render_root(self, name: str) -> Any:
        # str(Map) serializes on the Rust side: far faster than to_py() and keeps ints integral.
        return orjson.loads(str(self.roots[name]))

    def render(self) -> dict[str, Any]:
        """The panel's JSON view."""
        return {name: self.render_root(name) for name in VIEW_ROOTS}
