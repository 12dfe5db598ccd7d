"""The panel document: root maps, JSON <-> Y conversion, rendering, epoch.

Y.Doc
├── $state     state the users and agents edit
├── $computed  derived values written by services
└── $meta      server-owned: schema, epoch
JSON view: {"$state": {...}, "$computed": {...}}
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from typing import Any

import orjson
from pycrdt import Array, Doc, Map, Text

from .values import check_json, normalize_numbers

STATE = "$state"
COMPUTED = "$computed"
META = "$meta"
ROOTS = (STATE, COMPUTED, META)
VIEW_ROOTS = (STATE, COMPUTED)
SCHEMA_VERSION = 1
# What the view shows for a value of the doc too deep (or otherwise impossible) to render.
UNRENDERABLE = "<unrenderable: nested too deep to show; remove or replace this entry>"


def new_epoch() -> str:
    return uuid.uuid4().hex[:16]


Fills = list[tuple[Array[Any], list[Any]]]


def to_y(value: Any, fills: Fills) -> Any:
    """JSON -> Y: objects become Y.Map and arrays Y.Array, recursively, so fields merge.
    Arrays are made empty and listed in `fills` with their elements: once the value is in the
    doc, `fill` fills them (pycrdt's own fill of a new array is quadratic in its length)."""
    if isinstance(value, dict):
        return Map({key: to_y(item, fills) for key, item in value.items()})
    if isinstance(value, list):
        array: Array[Any] = Array()
        fills.append((array, value))
        return array
    return value


def put(node: Map[Any] | Array[Any], key: Any, value: Any, insert: bool = False) -> None:
    """node[key] = value as Y types (insert: at index `key` of an array, shifting the rest)."""
    fills: Fills = []
    y = to_y(value, fills)
    if insert:
        assert isinstance(node, Array)
        node.insert(key, y)
    else:
        node[key] = y
    fill(fills)


def fill(fills: Fills) -> None:
    """Fill the arrays `to_y` left empty (now integrated), each element in its own
    transaction when none is open (a bulk write's scratch copy: time linear in their length);
    inside one, runs of scalars cost time quadratic in their length.

    An insert walks the array's items up to its index, and items merge with their neighbours
    when their transaction commits, if they can: a run of scalars inserted one after the other
    can (one item), a Y type never can (one item each). So each array is filled from its end:
    every Y type is inserted at index 0 (no walk), every run of scalars at 0, 1, 2, ... (the
    walk crosses the run inserted so far: one merged item)."""
    while fills:
        array, items = fills.pop()
        end = len(items)
        while end > 0:
            start = end
            while start > 0 and not isinstance(items[start - 1], dict | list):
                start -= 1
            if start == end:  # a Y type
                array.insert(0, to_y(items[end - 1], fills))
                end -= 1
                continue
            doc, integrated = array.doc, array.integrated
            for offset, item in enumerate(items[start:end]):
                # Array.insert's slice path, without its per-call checks (~3x faster).
                with doc.transaction() as txn:
                    integrated.insert(txn._txn, offset, item)
            end = start


class PanelDoc:
    """A Y.Doc with the panel's root maps resolved once."""

    __slots__ = ("bulk", "doc", "rendered_bytes", "roots")

    def __init__(self, doc: Doc[Any] | None = None, bulk: bool = False) -> None:
        self.doc = doc if doc is not None else Doc()
        # A scratch copy written without one enclosing transaction (Room.edit's bulk
        # path): new arrays are filled one transaction per element (see to_y).
        self.bulk = bulk
        self.roots: dict[str, Map[Any]] = {name: self.doc.get(name, type=Map) for name in ROOTS}
        self.rendered_bytes = 0  # the JSON text of the last render()

    def initialize(self, epoch: str, state: dict[str, Any] | None = None) -> None:
        """The panel's first transaction: server metadata and any initial state."""
        if state is not None:
            check_json(state)
        with self.doc.transaction(origin="server"):
            meta = self.roots[META]
            meta["schema"] = SCHEMA_VERSION
            meta["epoch"] = epoch
            for key, value in (state or {}).items():
                put(self.roots[STATE], key, value)

    @property
    def epoch(self) -> str | None:
        value = self.roots[META].get("epoch")
        return value if isinstance(value, str) else None

    def render_root(self, name: str, skip: Collection[str] = ()) -> Any:
        """The root's JSON. Entries named in `skip` (their values nest too deep to render:
        pycrdt's renderer recurses, and crashes the process past ~16,000 levels) and entries
        that fail to render show as UNRENDERABLE: a panel whose log holds such a value still
        answers with everything else, and the entry can be removed or replaced."""
        return self._render_root(name, skip)[0]

    def _render_root(self, name: str, skip: Collection[str]) -> tuple[Any, int]:
        """(the root's JSON, the length of its JSON text)."""
        root = self.roots[name]
        if not skip:
            try:
                # str(Map) serializes on the Rust side: far faster than to_py(), and keeps
                # integers integral.
                text = str(root)
                return orjson.loads(text), len(text)
            except (orjson.JSONDecodeError, RecursionError, ValueError):
                pass  # something in it cannot be rendered: entry by entry, below
        rendered: dict[str, Any] = {}
        size = 0
        for key in list(root.keys()):
            if key in skip:
                rendered[key] = UNRENDERABLE
                continue
            try:
                part = _json_of(root[key])
                rendered[key] = orjson.loads(part)
                size += len(part)
            except (orjson.JSONDecodeError, RecursionError, ValueError, TypeError):
                rendered[key] = UNRENDERABLE
        return rendered, size

    def render(self, skip: Collection[tuple[str, str]] = ()) -> dict[str, Any]:
        """The panel's JSON view; `skip`: (root, key) entries not to render (see render_root).
        Keeps the length of the view's JSON text (`rendered_bytes`): what a render costs."""
        view: dict[str, Any] = {}
        size = 0
        for name in VIEW_ROOTS:
            view[name], part = self._render_root(name, {key for root, key in skip if root == name})
            size += part
        self.rendered_bytes = size
        return view


def _json_of(value: Any) -> str | bytes:
    if isinstance(value, Map | Array | Text):
        return str(value)
    return orjson.dumps(normalize_numbers(value))  # a plain value, numbers as str() shows them
