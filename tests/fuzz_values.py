"""JSON values for the fuzzer (tests/test_fuzz.py), hostile ones included, and their text.

orjson and json recurse (and refuse past a few hundred levels), cannot write integers past
64 bits, NaN or lone surrogates the way a hostile client would: ``to_json`` writes any of them,
and ``Deep`` stands for a value nested thousands of levels deep, written without recursion.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

INTERESTING_INTS = (
    0,
    -1,
    2**31 - 1,
    2**31,
    -(2**31),
    2**32,
    2**53 - 1,
    2**53,
    2**53 + 1,
    -(2**53 - 1),
    -(2**53),
    2**63 - 1,
    2**63,
    -(2**63),
    2**64,
    10**30,
    -(10**30),
)
INTERESTING_FLOATS = (
    -0.0,
    0.5,
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    2.0**53,
    2.0**53 + 2,
    -(2.0**53) - 2,
    1e16,
    1e300,
    3.0,
    0.1,
    math.inf,
    -math.inf,
    math.nan,
)
INTERESTING_STRINGS = (
    "",
    " ",
    "~",
    "~0",
    "~1",
    "~01",
    "~2",
    "/",
    "//",
    "-",
    "0",
    "01",
    "$state",
    "$computed",
    "$meta",
    "__proto__",
    "\x00",
    "\u202e",
    "\ufeff",
    "\U0001f600",
    "\ud800",
    "a/b~c",
    "\\",
    '"',
    "é",
    "x" * 300,
)
# Texts a client may send where a JSON value belongs: not quite JSON, or JSON that parsers
# read differently (duplicate keys, numbers past every range, lone surrogates).
ODD_JSON_TEXTS = (
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "-0",
    "1E400",
    "123456789012345678901234567890",
    "-123456789012345678901234567890.5e-3",
    '"\\ud800"',
    '"\\udc00x"',
    '"\\u0000"',
    '{"a":1,"a":2}',
    "01",
    ".5",
    "undefined",
    "[1,]",
    '{"a":1,}',
    "[",
    "\ufeff{}",
    "/* */ {}",
)


@dataclass(frozen=True)
class Deep:
    """A value nested ``depth`` containers deep around ``leaf``: objects with ``key``, arrays,
    or both in turn ("mixed")."""

    depth: int
    kind: str
    leaf: Any = 1
    key: str = "k"


@dataclass(frozen=True)
class RawJSON:
    """A text written as it is where a value belongs (often not valid JSON)."""

    text: str


def to_json(value: Any, *, ascii_only: bool = True) -> str:
    """JSON text of ``value`` (with ``Deep`` and ``RawJSON``; NaN as ``NaN``, ±inf as ±1e999,
    integers of any size)."""
    if isinstance(value, RawJSON):
        return value.text
    if isinstance(value, Deep):
        key = json.dumps(value.key, ensure_ascii=ascii_only)
        opening = {"object": "{" + key + ":", "array": "[", "mixed": "[{" + key + ":"}[value.kind]
        closing = {"object": "}", "array": "]", "mixed": "}]"}[value.kind]
        levels = value.depth if value.kind != "mixed" else (value.depth + 1) // 2
        return opening * levels + to_json(value.leaf, ascii_only=ascii_only) + closing * levels
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "1e999" if value > 0 else "-1e999"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=ascii_only)
    if isinstance(value, list | tuple):
        return "[" + ",".join(to_json(v, ascii_only=ascii_only) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(
                json.dumps(str(k), ensure_ascii=ascii_only)
                + ":"
                + to_json(v, ascii_only=ascii_only)
                for k, v in value.items()
            )
            + "}"
        )
    raise TypeError(f"no JSON text for {type(value).__name__}")


def to_body(value: Any, *, ascii_only: bool = True) -> bytes:
    """``to_json`` as bytes (lone surrogates written as they are: not valid UTF-8)."""
    return to_json(value, ascii_only=ascii_only).encode("utf-8", "surrogatepass")


def plain(value: Any) -> bool:
    """True when ``value`` is ordinary JSON (no Deep, RawJSON, NaN, ±inf, lone surrogates)."""
    if isinstance(value, Deep | RawJSON):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return all(plain(v) for v in value)
    if isinstance(value, dict):
        return all(plain(k) and plain(v) for k, v in value.items())
    return True


# --- strategies --------------------------------------------------------------------------------

keys = st.one_of(st.text(max_size=12), st.sampled_from(INTERESTING_STRINGS))
small_ints = st.integers(-1000, 1000)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    small_ints,
    st.integers(),
    st.sampled_from(INTERESTING_INTS),
    st.floats(),
    st.sampled_from(INTERESTING_FLOATS),
    st.text(max_size=30),
    st.sampled_from(INTERESTING_STRINGS),
)
depths = st.one_of(
    st.integers(1, 70),
    st.sampled_from((62, 63, 64, 65, 254, 255, 256, 300, 1023, 1024, 1100, 15_000, 20_000)),
    st.integers(70, 25_000),
)
deep_values = st.builds(
    Deep,
    depth=depths,
    kind=st.sampled_from(("object", "array", "mixed")),
    leaf=scalars,
    key=keys,
)
odd_values = st.builds(RawJSON, st.sampled_from(ODD_JSON_TEXTS))


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Ordinary JSON, mostly; now and then a deep value or a text that is not quite JSON."""
    leaves = st.one_of(scalars, scalars, scalars, deep_values, odd_values)
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=6), st.dictionaries(keys, children, max_size=6)
        ),
        max_leaves=max_leaves,
    )


plain_scalars = st.one_of(
    st.none(),
    st.booleans(),
    small_ints,
    st.integers(-(2**53) + 1, 2**53 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20).filter(plain),
)


def plain_values(max_leaves: int = 15) -> st.SearchStrategy[Any]:
    """JSON every face accepts (numbers within ±(2^53−1), shallow, no lone surrogates)."""
    plain_keys = st.text(max_size=8).filter(plain)
    return st.recursive(
        plain_scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(plain_keys, children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


plain_objects = st.dictionaries(st.text(max_size=8).filter(plain), plain_values(), max_size=5)


def mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], one_in: int = 5) -> Any:
    """``common``, and ``rare`` once in ``one_in`` draws (shrinking goes to ``common``)."""
    return st.integers(0, one_in - 1).flatmap(lambda n: rare if n == one_in - 1 else common)


def _long(kind: str, length: int) -> Any:
    """A long array: the cost of a write grows with it (found: quadratic in its length)."""
    if kind == "integers":
        return list(range(length))
    if kind == "objects":
        return [{} for _ in range(length)]
    if kind == "arrays":
        return [[] for _ in range(length)]
    if kind == "rows":
        return [{"x": n, "y": n / 2} for n in range(length)]
    if kind == "texts":
        return [f"t{n}" for n in range(length)]
    return [n if n % 3 else {"n": n} for n in range(length)]  # runs of scalars between objects


# Built, not drawn element by element: Hypothesis would take seconds to draw 100,000 values.
# 100,001 scalars or 20,000 rows are over the server's write limit (100,000 values, an
# object or array counting 5); the others are within it.
long_arrays = st.builds(
    _long,
    st.sampled_from(("integers", "objects", "arrays", "rows", "texts", "mixed")),
    st.sampled_from((999, 1000, 2500, 9000, 20_000, 100_001)),
)
