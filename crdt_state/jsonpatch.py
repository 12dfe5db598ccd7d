"""RFC 6902 JSON Patch: parse, apply to plain JSON, invert; its Y-doc half is doc_patch.py.

A request is checked in full on the JSON view (`plan_patch`, pure) before anything touches
the doc, because CRDT transactions cannot roll back. That one pass gives the result, the
inverse and the steps the doc replays.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import orjson

from .errors import (
    InvalidPatch,
    InvalidValue,
    PatchTooLarge,
    PathNotFound,
    StateError,
    TestFailed,
    TooManyOperations,
)
from .values import (
    CONTAINER_COST,
    MAX_DEPTH,
    check_json,
    count_values,
    escape_token,
    normalize_numbers,
)

OPS = ("add", "remove", "replace", "move", "copy", "test")
PATCH_ERRORS = (InvalidPatch, PathNotFound, TestFailed, InvalidValue)
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")
_BAD_ESCAPE = re.compile(r"~(?![01])")


class _Missing:
    """Marks an absent object member (None is JSON null, a real value)."""


MISSING: Any = _Missing()


@dataclass(frozen=True, slots=True)
class Operation:
    """One validated operation; `path`/`from_path` are unescaped RFC 6901 tokens."""

    index: int
    op: str
    path: list[str]
    pointer: str
    from_path: list[str] | None = None
    from_pointer: str | None = None
    value: Any = None

    def label(self) -> str:
        return f"operation {self.index} ({self.op} {self.pointer or '(root)'})"

    def to_json(self) -> dict[str, Any]:
        """The operation as RFC 6902 JSON (what a history entry stores)."""
        out: dict[str, Any] = {"op": self.op, "path": self.pointer}
        if self.from_pointer is not None:
            out["from"] = self.from_pointer
        if self.op in ("add", "replace", "test"):
            out["value"] = self.value
        return out


def fail(cls: type[StateError], op: Operation, reason: str) -> NoReturn:
    raise cls(f"{op.label()}: {reason}", operation=op.index, path=op.pointer)


# -- parsing -----------------------------------------------------------------------------------


def parse_pointer(pointer: str) -> list[str]:
    """RFC 6901: "" is the whole document, otherwise "/"-separated tokens with ~0 ~1 escapes."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise ValueError(f"JSON Pointer {pointer!r} must be empty or start with '/'")
    if _BAD_ESCAPE.search(pointer):
        raise ValueError(f"JSON Pointer {pointer!r} uses '~' other than as ~0 or ~1")
    # ~1 before ~0, so that "~01" decodes to "~1" and not "/".
    return [token.replace("~1", "/").replace("~0", "~") for token in pointer[1:].split("/")]


def format_pointer(tokens: Iterable[str | int]) -> str:
    return "".join("/" + escape_token(str(token)) for token in tokens)


def parse_patch(raw: object, max_operations: int | None = None) -> list[Operation]:
    """Check a JSON Patch's shape (not its paths against a document) and its values; a patch
    of more than `max_operations` is refused before any is looked at."""
    if not isinstance(raw, list):
        raise InvalidPatch(f"A JSON Patch is an array of operations, not {json_type(raw)}.")
    if max_operations is not None and len(raw) > max_operations:
        raise TooManyOperations(
            f"A patch holds at most {max_operations} operations; this one has {len(raw)}. "
            "Split it, or PUT the new state.",
            limit=max_operations,
        )
    return [_parse_operation(index, item) for index, item in enumerate(raw)]


def derived_patch(raw: list[dict[str, Any]]) -> list[Operation]:
    """The operations of a patch this server derived from CRDT change events: its shape and
    values are known good, so parse_patch's checks are skipped (they are the cost of a
    change's view upkeep otherwise)."""
    return [
        Operation(
            index, item["op"], parse_pointer(item["path"]), item["path"], value=item.get("value")
        )
        for index, item in enumerate(raw)
    ]


def _parse_operation(index: int, item: object) -> Operation:
    where = f"operation {index}"
    if not isinstance(item, dict):
        raise InvalidPatch(f"{where} is {json_type(item)}, not an object.", operation=index)
    name = item.get("op")
    if name not in OPS:
        raise InvalidPatch(
            f"{where}: 'op' is {name!r}; expected one of {', '.join(OPS)}.", operation=index
        )
    pointer = _member_pointer(item, "path", f"{where} ({name})", index)
    op = Operation(index, name, parse_pointer(pointer), pointer)
    if name in ("move", "copy"):
        from_pointer = _member_pointer(item, "from", op.label(), index)
        op = replace(op, from_path=parse_pointer(from_pointer), from_pointer=from_pointer)
    if name in ("add", "replace", "test"):
        if "value" not in item:
            fail(InvalidPatch, op, "the 'value' member is missing.")
        op = replace(op, value=item["value"])
    _check_operation(op)
    if name in ("add", "replace", "test"):
        # Integral floats as the doc renders them (1.0 -> 1): the view kept from this patch
        # must read exactly as a fresh render of the doc would.
        op = replace(op, value=normalize_numbers(op.value))
    return op


def _member_pointer(item: dict[str, Any], member: str, where: str, index: int) -> str:
    pointer = item.get(member)
    if not isinstance(pointer, str):
        found = "missing" if member not in item else f"{json_type(pointer)}, not a string"
        raise InvalidPatch(f"{where}: the '{member}' member is {found}.", operation=index)
    try:
        tokens = parse_pointer(pointer)
    except ValueError as exc:
        raise InvalidPatch(f"{where}: {exc}.", operation=index, path=pointer) from None
    if len(tokens) > MAX_DEPTH:
        raise InvalidPatch(
            f"{where}: '{member}' is deeper than the {MAX_DEPTH} levels a document can hold.",
            operation=index,
        )
    return pointer


def _check_operation(op: Operation) -> None:
    if op.op == "remove" and not op.path:
        fail(InvalidPatch, op, "the whole document cannot be removed.")
    if op.op == "move" and op.from_path is not None and _is_proper_prefix(op.from_path, op.path):
        fail(InvalidPatch, op, f"cannot move {op.from_pointer} into its own child.")
    if op.op in ("add", "replace", "test"):
        try:
            check_json(op.value, op.pointer, len(op.path))
        except InvalidValue as exc:
            details = {**exc.details, "operation": op.index}
            raise InvalidValue(f"{op.label()}: {exc.message}", **details) from None


def _is_proper_prefix(prefix: list[str], tokens: list[str]) -> bool:
    return len(prefix) < len(tokens) and tokens[: len(prefix)] == prefix


def json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), f"a {type(value).__name__}")


# -- plain JSON --------------------------------------------------------------------------------


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true != 1, and object member order does not matter."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def value_at(document: Any, tokens: Sequence[str], op: Operation) -> Any:
    node = document
    for depth, token in enumerate(tokens):
        node = _child(node, token, tokens[:depth], op)
    return node


def _child(node: Any, token: str, parent: Sequence[str], op: Operation) -> Any:
    if isinstance(node, dict):
        if token not in node:
            fail(PathNotFound, op, f"{format_pointer([*parent, token])} does not exist.")
        return node[token]
    if isinstance(node, list):
        return node[_index(token, len(node), parent, op, append=False)]
    where = format_pointer(parent) or "the document"
    fail(PathNotFound, op, f"{where} is {json_type(node)}, which has no member {token!r}.")


def _index(token: str, length: int, parent: Sequence[str], op: Operation, append: bool) -> int:
    """An array index token: digits without leading zeros, or "-" (the end) where adding."""
    if append and token == "-":
        return length
    where = format_pointer(parent) or "the document"
    if not _ARRAY_INDEX.fullmatch(token):
        fail(PathNotFound, op, f"{token!r} is not an index of the array {where}.")
    # Long digit strings are out of range anyway, and int() refuses over 4300 digits.
    index = int(token) if len(token) <= 18 else length + 1
    if index > (length if append else length - 1):
        fail(PathNotFound, op, f"index {token} is out of range (length {length}).")
    return index


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
                fail(TestFailed, op, f"the value is {_short(actual)}, not {_short(op.value)}.")
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
                _child(parent, last, tokens[:-1], op)
                if kind != "add"
                else parent.get(last, MISSING)
            )
            if kind == "remove":
                del parent[last]
            else:
                parent[last] = value
            path = tokens
        else:
            index = _index(last, len(parent), tokens[:-1], op, append=kind == "add")
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
            child = _child(node, token, tokens[:depth], op)
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
