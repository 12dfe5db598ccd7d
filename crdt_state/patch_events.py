"""CRDT change events -> the JSON Patch a change made to the panel's JSON view.

pycrdt (0.14.13) fires one deep-event batch per transaction and root, after the transaction
is committed; each event sums up what one Y type changed in that transaction:
- MapEvent.keys: {key: {"action": "add" | "update" | "delete", "newValue"?, ...}}. newValue
  is the transaction's final value of the key (numbers as floats, Y types as live objects:
  render_value turns both into the view's JSON); without it the value is read from
  event.target, which already holds the transaction's final state.
- ArrayEvent.delta: [{"retain": n} | {"insert": [items]} | {"delete": n}] against the array
  as it was before the transaction.
- event.path: keys and indices from the observed root to the target, in the state AFTER
  the transaction. Types created in the transaction get no event of their own (their content
  is in the parent's insert), nor do types deleted in it.
So applying the events parent-first (shorter paths first) walks the JSON from its state
before the transaction through states whose ancestors already sit at their final indices,
which is exactly what the after-transaction paths of deeper events assume.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from pycrdt import Array, ArrayEvent, Map, MapEvent, Subscription, Text, TextEvent

from .document import VIEW_ROOTS, PanelDoc
from .values import escape_token, rendered_number

log = logging.getLogger(__name__)


class PatchRecorder:
    """Records the JSON Patch of every change to a panel's view roots, local or remote."""

    def __init__(self, panel: PanelDoc, roots: Sequence[str] = VIEW_ROOTS) -> None:
        self._panel = panel
        self._ops: dict[str, list[dict[str, Any]]] = {root: [] for root in roots}
        self._broken: set[str] = set()
        self._subscriptions: dict[str, Subscription] = {
            root: panel.roots[root].observe_deep(self._observer(root)) for root in roots
        }

    def _observer(self, root: str) -> Callable[[list[Any]], None]:
        prefix = "/" + escape_token(root)

        def on_events(events: list[Any]) -> None:
            # Never raise into pycrdt (it would fail the writer's transaction), never write.
            if root in self._broken:
                return
            try:
                self._ops[root].extend(events_to_patch(prefix, events))
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:  # pycrdt's PanicException is a BaseException
                log.exception("cannot turn the change events of %s into a patch", root)
                self._broken.add(root)

        return on_events

    def take(self) -> list[dict[str, Any]]:
        """The ops of every change since the last take. Call outside a transaction.

        In order within each root; roots follow one another, which is just as exact since
        no op touches two roots.
        """
        patch: list[dict[str, Any]] = []
        for root, ops in self._ops.items():
            if root in self._broken:
                # Correct whatever happened before: the root as it is now.
                value = self._panel.render_root(root)
                patch.append({"op": "replace", "path": "/" + escape_token(root), "value": value})
            else:
                patch.extend(ops)
            self._ops[root] = []
        self._broken.clear()
        return patch

    def close(self) -> None:
        for root, subscription in self._subscriptions.items():
            self._panel.roots[root].unobserve(subscription)
        self._subscriptions.clear()

    def __enter__(self) -> PatchRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def events_to_patch(prefix: str, events: Iterable[Any]) -> list[dict[str, Any]]:
    """The JSON Patch of one deep-event batch, paths under `prefix` (the observed root)."""
    ops: list[dict[str, Any]] = []
    for event in sorted(events, key=lambda event: len(event.path)):
        base = prefix + "".join("/" + escape_token(str(step)) for step in event.path)
        if isinstance(event, MapEvent):
            ops.extend(_map_ops(base, event))
        elif isinstance(event, ArrayEvent):
            ops.extend(_array_ops(base, event))
        elif isinstance(event, TextEvent):
            # A Y.Text a client created (the server never does) shows as a string: replace it.
            text: Text = event.target  # type: ignore[attr-defined]
            ops.append({"op": "replace", "path": base, "value": str(text)})
        else:
            raise TypeError(f"no JSON Patch for a {type(event).__name__} at {base}")
    return ops


def _map_ops(base: str, event: MapEvent) -> list[dict[str, Any]]:
    target: Map[Any] = event.target  # type: ignore[attr-defined]
    keys: dict[str, dict[str, Any]] = event.keys  # type: ignore[attr-defined]
    ops: list[dict[str, Any]] = []
    for key, change in keys.items():
        path = f"{base}/{escape_token(key)}"
        action = change["action"]
        if action == "delete":
            ops.append({"op": "remove", "path": path})
        else:
            op = "add" if action == "add" else "replace"
            # The event carries the new value: no read of the map needed.
            value = change["newValue"] if "newValue" in change else target[key]
            ops.append({"op": op, "path": path, "value": render_value(value)})
    return ops


def _array_ops(base: str, event: ArrayEvent) -> list[dict[str, Any]]:
    delta: list[dict[str, Any]] = event.delta  # type: ignore[attr-defined]
    ops: list[dict[str, Any]] = []
    index = 0  # in the array as it is after the parts of the delta seen so far
    for part in delta:
        if "retain" in part:
            index += part["retain"]
        elif "insert" in part:
            # The delta carries the inserted values (live Y types for containers, so their
            # final state): no lookup by index, which costs the array's length in pycrdt.
            for item in part["insert"]:
                # The inserted item sits at `index` in the final array too.
                ops.append({"op": "add", "path": f"{base}/{index}", "value": render_value(item)})
                index += 1
        elif "delete" in part:
            ops.extend({"op": "remove", "path": f"{base}/{index}"} for _ in range(part["delete"]))
    return ops


def render_value(value: Any) -> Any:
    """One value as the panel's JSON view shows it (the same as str(ymap) + orjson)."""
    if isinstance(value, Map | Array):
        return orjson.loads(str(value))
    if isinstance(value, Text):
        return str(value)
    if isinstance(value, float):
        return rendered_number(value)
    # A plain object or array stored whole (as browsers may do): pycrdt reads its numbers
    # back as floats too.
    if isinstance(value, dict):
        return {key: render_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [render_value(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"no JSON for a {type(value).__name__}")
