"""What a panel can hold: JSON values the CRDT stores faithfully, checked before they touch a doc.

Some values make pycrdt panic with an exception `except Exception` does not catch (huge ints,
non-string keys); others would silently change (NaN, bytes). All are refused here, with the
JSON Pointer of the offending value, before any transaction starts.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import InvalidValue

MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 64
# yrs renders an integral float within the i64 range as an integer (saturating at the ends).
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def escape_token(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def check_json(value: Any, pointer: str = "", depth: int = 0) -> None:
    """Raise InvalidValue unless `value` is a JSON value the document can hold as is."""
    if _holdable(value, depth):
        return  # the usual case: no pointer built for every value on the way
    _check_json(value, pointer, depth)


def _holdable(value: Any, depth: int) -> bool:
    """check_json's question, answered fast (~3x): True when it would not raise."""
    kind = type(value)
    if kind is str:
        return value.isascii() or _utf8(value)
    if kind is int:
        return bool(-MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER)
    if kind is float:
        return math.isfinite(value) and not (
            MAX_SAFE_INTEGER < abs(value) <= 2**63 and value.is_integer()
        )
    if value is None or kind is bool:
        return True
    if depth >= MAX_DEPTH:
        return False
    depth += 1
    if kind is list:
        for item in value:
            if not _holdable(item, depth):
                return False
        return True
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not (key.isascii() or _utf8(key)):
                return False
            if not _holdable(item, depth):
                return False
        return True
    return False


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_json(value: Any, pointer: str, depth: int) -> None:
    if value is None or isinstance(value, bool | str):
        if isinstance(value, str):
            _check_text(value, pointer)
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise InvalidValue(
                f"The integer at '{pointer or '/'}' is outside ±(2^53−1); "
                "send it as a string to keep every digit.",
                path=pointer,
            )
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValue(
                f"The number at '{pointer or '/'}' is not finite; JSON has no NaN or Infinity.",
                path=pointer,
            )
        if MAX_SAFE_INTEGER < abs(value) <= 2**63 and value.is_integer():
            # The doc would show it as an integer beyond ±(2^53−1), which no JSON client can
            # hold exactly (and which this server refuses as input): refuse it here too.
            raise InvalidValue(
                f"The number at '{pointer or '/'}' is a whole number outside ±(2^53−1); "
                "send it as a string to keep every digit.",
                path=pointer,
            )
        return
    if depth >= MAX_DEPTH:
        raise InvalidValue(
            f"The value at '{pointer or '/'}' nests deeper than {MAX_DEPTH} levels.", path=pointer
        )
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidValue(
                    f"The object at '{pointer or '/'}' has a non-string key {key!r}; "
                    "JSON object keys are strings.",
                    path=pointer,
                )
            _check_text(key, pointer)
            _check_json(item, f"{pointer}/{escape_token(key)}", depth + 1)
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{pointer}/{index}", depth + 1)
        return
    raise InvalidValue(
        f"The value at '{pointer or '/'}' is a {type(value).__name__}, not a JSON value "
        "(object, array, string, number, boolean or null).",
        path=pointer,
    )


def _check_text(text: str, pointer: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValue(
            f"The string at '{pointer or '/'}' holds a lone surrogate, which is not valid UTF-8.",
            path=pointer,
        ) from None


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
