"""Applying a JSON Patch to plain JSON in one pass, linear in its operations: the result,
the inverse and the steps the Y doc replays (doc_patch.py). Parsing is jsonpatch.py."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import InvalidValue, PatchTooLarge, PathNotFound, TestFailed
from .jsonpatch import (
    MISSING,
    Operation,
    array_index,
    child_at,
    fail,
    format_pointer,
    json_equal,
    json_type,
    short_repr,
    value_at,
)
from .values import CONTAINER_COST, MAX_DEPTH, count_values

# -- applying: one pass, linear in the operations --------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One primitive change of a patch (move = remove + add, copy = add): what the Y doc needs
    to replay it (doc_patch.py). `path` has array indices resolved ("-" is the index it
    meant); `old` is the value the step replaced or removed (MISSING: none). Values are never
    mutated after a step records them."""

    kind: str  # add | remove | replace
    path: list[str]
    value: Any
    old: Any


@dataclass(frozen=True, slots=True)
class PatchPlan:
    """A patch checked against a document: the result, the inverse, the primitive steps, and
    the JSON size of what it writes (the values it adds, copies and moves)."""

    after: Any
    inverse: list[dict[str, Any]]
    steps: list[Step]
    written_bytes: int
    written_values: int  # values.count_values of what it writes


class _Working:
    """The document being patched. Containers are copied the first time an operation writes
    into them (the input is never mutated) and written in place after that, so each
    operation costs the depth of its path, not the size of the containers on it."""

    def __init__(
        self,
        document: Any,
        record: bool,
        max_written: int | None = None,
        max_values: int | None = None,
    ) -> None:
        self.root = document
        self.record = record
        self.max_written = max_written
        self.max_values = max_values
        self.steps: list[Step] = []
        self.undo: list[dict[str, Any]] = []
        self.written = 0
        self.values = 0
        self._owned: dict[int, Any] = {}  # id -> container copied here (kept alive: ids stay)

    def apply(self, op: Operation) -> None:
        if op.op == "test":
            actual = value_at(self.root, op.path, op)
            if not json_equal(actual, op.value):
                fail(
                    TestFailed,
                    op,
                    f"the value is {short_repr(actual)}, not {short_repr(op.value)}.",
                )
            return
        if op.op in ("add", "replace"):
            self._step(op.op, op.path, op.value, op, size=self.record)
            return
        if op.op == "remove":
            self._step("remove", op.path, None, op)
            return
        assert op.from_path is not None
        value = value_at(self.root, op.from_path, op)
        if op.op == "move" and op.from_path == op.path:
            return
        value = self._snapshot(value, op)  # a value of the doc, now in a second place
        if op.op == "move":
            self._step("remove", op.from_path, None, op)
        self._step("add", op.path, value, op)

    def _snapshot(self, value: Any, op: Operation) -> Any:
        """`value`, about to sit in a second place: its size counted and checked; shared,
        not copied: one walk makes sure no container in it is written in place any more
        (a write through either place copies its path first)."""
        self._wrote(len(orjson.dumps(value)), MISSING)
        if not isinstance(value, dict | list):
            self._count(1)
            return value
        total, deepest, owned = 0, 0, self._owned
        stack: list[tuple[Any, int]] = [(value, 1)]
        while stack:
            node, depth = stack.pop()
            if isinstance(node, dict):
                children: Any = node.values()
            elif isinstance(node, list):
                children = node
            else:
                total += 1
                continue
            total += CONTAINER_COST
            deepest = max(deepest, depth)
            if owned:
                owned.pop(id(node), None)
            stack.extend([(child, depth + 1) for child in children])
        if len(op.path) + deepest > MAX_DEPTH:
            fail(InvalidValue, op, f"the value would nest deeper than {MAX_DEPTH} levels.")
        self._count(total)
        return value

    def _wrote(self, size: int, value: Any) -> None:
        # Checked as it grows: copies double a value each time, so a patch of a few KB could
        # otherwise take exponential time and memory before the total is known. Bytes bound
        # memory; values bound the time the doc takes (a few bytes of `{}` are a Y.Map).
        self.written += size
        if self.max_written is not None and self.written > self.max_written:
            raise PatchTooLarge(
                f"The patch would write more than {self.max_written} bytes (copies and moves "
                "count each time); nothing was changed.",
                limit=self.max_written,
            )
        if self.max_values is not None and value is not MISSING:
            self._count(count_values(value, self.max_values - self.values))

    def _count(self, values: int) -> None:
        self.values += values
        if self.max_values is not None and self.values > self.max_values:
            raise PatchTooLarge(
                f"The patch would write more than {self.max_values} values (an object or "
                f"array counts {CONTAINER_COST}; copies and moves count each time); nothing "
                "was changed.",
                limit=self.max_values,
                unit="values",
            )

    def _step(
        self, kind: str, tokens: list[str], value: Any, op: Operation, size: bool = False
    ) -> None:
        if size:
            self._wrote(len(orjson.dumps(value)), value)
        if not tokens:  # the whole document
            old, self.root = self.root, value
            self._note(kind, tokens, value, old, {"op": "replace", "path": "", "value": old})
            return
        parent = self._container(tokens[:-1], op)
        last = tokens[-1]
        if isinstance(parent, dict):
            old = (
                child_at(parent, last, tokens[:-1], op)
                if kind != "add"
                else parent.get(last, MISSING)
            )
            if kind == "remove":
                del parent[last]
            else:
                parent[last] = value
            path = tokens
        else:
            index = array_index(last, len(parent), tokens[:-1], op, append=kind == "add")
            path = [*tokens[:-1], str(index)]
            if kind == "add":
                old = MISSING
                parent.insert(index, value)
            elif kind == "remove":
                old = parent.pop(index)
            else:
                old = parent[index]
                parent[index] = value
        pointer = format_pointer(path)
        if kind == "remove":
            inverse = {"op": "add", "path": pointer, "value": old}
        elif old is MISSING:
            inverse = {"op": "remove", "path": pointer}
        else:
            inverse = {"op": "replace", "path": pointer, "value": old}
        self._note(kind, path, value, old, inverse)

    def _note(
        self, kind: str, path: list[str], value: Any, old: Any, inverse: dict[str, Any]
    ) -> None:
        if self.record:
            self.steps.append(Step(kind, path, value, old))
            self.undo.append(inverse)

    def _container(self, tokens: Sequence[str], op: Operation) -> Any:
        """The container at `tokens`, writable: copied (with every container above it) unless
        this patch copied it already."""
        node = self.root = self._own(self.root)
        for depth, token in enumerate(tokens):
            child = child_at(node, token, tokens[:depth], op)
            if not isinstance(child, dict | list):
                where = format_pointer(tokens[: depth + 1])
                fail(PathNotFound, op, f"{where} is {json_type(child)}, not a container.")
            owned = self._own(child)
            if owned is not child:
                node[token if isinstance(node, dict) else int(token)] = owned
            node = owned
        if not isinstance(node, dict | list):
            fail(PathNotFound, op, "the document is not a container.")
        return node

    def _own(self, node: Any) -> Any:
        if not isinstance(node, dict | list) or id(node) in self._owned:
            return node
        copy = dict(node) if isinstance(node, dict) else list(node)
        self._owned[id(copy)] = copy
        return copy


def plan_patch(
    before: Any,
    ops: Iterable[Operation],
    max_written_bytes: int | None = None,
    max_written_values: int | None = None,
) -> PatchPlan:
    """Apply `ops` to plain JSON once, keeping what every consumer needs of that pass.

    Raises (PathNotFound, TestFailed, InvalidValue, InvalidPatch) naming the failing
    operation, before anything could have been touched. The input is never mutated. The
    inverse turns the result back into `before`: each step's inverse is taken against the
    document just before it, and the inverses run in reverse order. A patch that would write
    more than `max_written_bytes`, or more than `max_written_values` values
    (values.count_values), is refused (PatchTooLarge) as soon as it gets there.
    """
    work = _Working(
        before, record=True, max_written=max_written_bytes, max_values=max_written_values
    )
    for op in ops:
        work.apply(op)
    work.undo.reverse()
    return PatchPlan(work.root, work.undo, work.steps, work.written, work.values)


def apply_to_json(document: Any, ops: Iterable[Operation]) -> Any:
    """Apply a parsed patch to plain JSON and return the new document (the input is never
    mutated; the result shares unchanged subtrees with it). Raises like plan_patch."""
    work = _Working(document, record=False)
    for op in ops:
        work.apply(op)
    return work.root


def inverse_patch(before: Any, ops: Iterable[Operation]) -> list[dict[str, Any]]:
    """A JSON Patch that turns the result of `ops` on `before` back into `before`."""
    return plan_patch(before, ops).inverse
