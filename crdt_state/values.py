"""What a panel can hold: JSON values the CRDT stores faithfully, checked before they touch a doc.

Some values make pycrdt panic with an exception `except Exception` does not catch (huge ints,
non-string keys); others would silently change (NaN, bytes). All are refused here, with the
JSON Pointer of the offending value, before any transaction starts.
"""

from __future__ import annotations

import math
from typing import Any, Final

from .errors import InvalidValue

MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 64
# yrs renders an integral float within the i64 range as an integer (saturating at the ends).
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def escape_token(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def check_json(value: Any, pointer: str = "", depth: int = 0) -> None:
    """Raise InvalidValue unless `value` is a JSON value the document can hold as is. The
    message names the first value found that it cannot (its pointer, below `pointer`)."""
    found = _problem(value, depth)
    if found is None:
        return
    tokens, kind, detail = found
    where = pointer + "".join(f"/{escape_token(str(token))}" for token in reversed(tokens))
    raise InvalidValue(_MESSAGES[kind].format(where=where or "/", detail=detail), path=where)


_MESSAGES: Final = {
    "surrogate": "The string at '{where}' holds a lone surrogate, which is not valid UTF-8.",
    "integer": "The integer at '{where}' is outside ±(2^53−1); send it as a string to keep "
    "every digit.",
    "not finite": "The number at '{where}' is not finite; JSON has no NaN or Infinity.",
    # The doc would show it as an integer beyond ±(2^53−1), which no JSON client can hold
    # exactly (and which this server refuses as input): refused too.
    "whole": "The number at '{where}' is a whole number outside ±(2^53−1); send it as a "
    "string to keep every digit.",
    "deep": f"The value at '{{where}}' nests deeper than {MAX_DEPTH} levels.",
    "key": "The object at '{where}' has a non-string key {detail}; JSON object keys are strings.",
    "key surrogate": "The string at '{where}' holds a lone surrogate, which is not valid UTF-8.",
    "type": "The value at '{where}' is a {detail}, not a JSON value (object, array, string, "
    "number, boolean or null).",
}


def _problem(value: Any, depth: int) -> tuple[list[str | int], str, str] | None:
    """The first thing in `value` the document cannot hold: (the path to it, innermost
    first; its kind in _MESSAGES; a detail), or None. No pointer is built on the way."""
    kind = type(value)  # exact types first: this runs once per value of every write
    if kind is str:
        return None if value.isascii() or _utf8(value) else ([], "surrogate", "")
    if kind is int:
        return None if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else ([], "integer", "")
    if kind is float:
        if not math.isfinite(value):
            return [], "not finite", ""
        if MAX_SAFE_INTEGER < abs(value) <= 2**63 and value.is_integer():
            return [], "whole", ""
        return None
    if value is None or kind is bool:
        return None
    if kind is not list and kind is not dict:
        for base in (bool, str, int, float):  # a subclass (an IntEnum...) counts as its base
            if isinstance(value, base):
                return _problem(base(value), depth)
        if not isinstance(value, dict | list):
            return [], "type", kind.__name__
    if depth >= MAX_DEPTH:
        return [], "deep", ""
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _problem(item, depth + 1)
            if found is not None:
                found[0].append(index)
                return found
        return None
    for key, item in value.items():
        if not isinstance(key, str):
            return [], "key", repr(key)
        if not (key.isascii() or _utf8(key)):
            return [], "key surrogate", ""
        found = _problem(item, depth + 1)
        if found is not None:
            found[0].append(key)
            return found
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def rendered_number(value: float) -> int | float:
    """A float as the doc renders it: integral ones within the i64 range become integers."""
    if value.is_integer() and _I64_MIN <= value <= 2**63:
        return max(_I64_MIN, min(_I64_MAX, int(value)))
    return value


def normalize_numbers(value: Any) -> Any:
    """`value` with its floats as the doc renders them; the same object when none changes."""
    if isinstance(value, float):
        return rendered_number(value)
    if isinstance(value, list) and not _has_containers_or_floats(value):
        return value  # a list of scalars without floats (the usual long list): nothing to do
    if isinstance(value, dict):
        items = {key: normalize_numbers(item) for key, item in value.items()}
        changed = any(items[key] is not item for key, item in value.items())
        return items if changed else value
    if isinstance(value, list):
        listed = [normalize_numbers(item) for item in value]
        changed = any(new is not old for new, old in zip(listed, value, strict=True))
        return listed if changed else value
    return value


def nests_deeper(value: Any, limit: int) -> bool:
    """Whether `value` holds containers more than `limit` levels deep (without recursion:
    it is asked of values that may be far deeper than Python's stack allows)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


CONTAINER_COST = 5


def count_values(value: Any, limit: int) -> int:
    """What writing `value` into a doc costs, in values: each scalar counts 1, each object or
    array CONTAINER_COST (creating a Y type costs about five scalars, measured). Stops
    counting once past `limit`: the count is then more than `limit`, not exact."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, dict):
            total += CONTAINER_COST
            stack.extend(item.values())
        elif isinstance(item, list):
            total += CONTAINER_COST
            stack.extend(item)
        else:
            total += 1
    return total


MAX_INT64 = 2**63 - 1


def natural(text: str) -> int | None:
    """`text` as a non-negative integer of at most 2^63 - 1 (what the log stores), when it is
    one in ASCII digits; None otherwise. str.isdigit alone accepts digits int() refuses
    ("²", "①") and int() refuses more than 4,300 digits: both were 500s."""
    if not (0 < len(text) <= 19 and text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= MAX_INT64 else None


def _has_containers_or_floats(items: list[Any]) -> bool:
    for item in items:
        kind = type(item)
        if kind is float or kind is dict or kind is list:
            return True
    return False
