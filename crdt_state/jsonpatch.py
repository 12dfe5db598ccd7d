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

from .errors import (
    InvalidPatch,
    InvalidValue,
    PathNotFound,
    StateError,
    TestFailed,
    TooManyOperations,
)
from .values import (
    MAX_DEPTH,
    check_json,
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


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def value_at(document: Any, tokens: Sequence[str], op: Operation) -> Any:
    node = document
    for depth, token in enumerate(tokens):
        node = child_at(node, token, tokens[:depth], op)
    return node


def child_at(node: Any, token: str, parent: Sequence[str], op: Operation) -> Any:
    if isinstance(node, dict):
        if token not in node:
            fail(PathNotFound, op, f"{format_pointer([*parent, token])} does not exist.")
        return node[token]
    if isinstance(node, list):
        return node[array_index(token, len(node), parent, op, append=False)]
    where = format_pointer(parent) or "the document"
    fail(PathNotFound, op, f"{where} is {json_type(node)}, which has no member {token!r}.")


def array_index(token: str, length: int, parent: Sequence[str], op: Operation, append: bool) -> int:
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
