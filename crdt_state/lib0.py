"""lib0, the binary encoding under Yjs updates: var-ints, strings, byte arrays and ``Any`` values.

Each reader takes ``(data, pos)`` and returns the value and the position after it. Reading past
the end raises IndexError (``decode_update`` reports it as a truncated update). Nothing here
recurses and nothing is allocated from a count the data announces: an ``Any`` value is decoded
with an explicit stack, bounded in depth, and a container announcing more elements than the
remaining bytes could hold is refused.
"""

from __future__ import annotations

import math
import struct as _struct
from typing import Any, Final

__all__ = [
    "MAX_SAFE_INTEGER",
    "UNDEFINED",
    "VALUE_BIG_INT",
    "VALUE_BIG_WHOLE",
    "VALUE_BINARY",
    "VALUE_NON_FINITE",
    "VALUE_UNDEFINED",
    "AnyTooDeep",
    "MalformedUpdate",
    "read_any",
    "read_bytes",
    "read_int",
    "read_string",
    "read_uint",
]

MAX_SAFE_INTEGER: Final = 2**53 - 1

# Facts about Any values, gathered while decoding them (the flags read_any returns).
VALUE_BIG_INT: Final = 1
"""An integer (var-int or lib0 bigint) outside ±(2^53−1)."""
VALUE_NON_FINITE: Final = 2
"""A float that is NaN or ±Infinity."""
VALUE_BINARY: Final = 4
"""A Uint8Array (decoded as ``bytes``)."""
VALUE_UNDEFINED: Final = 8
"""JavaScript ``undefined`` (decoded as :data:`UNDEFINED`)."""
VALUE_BIG_WHOLE: Final = 16
"""A whole float with 2^53−1 < |x| <= 2^63: yrs renders it as an integer beyond ±(2^53−1)."""

_MAX_VAR_BYTES: Final = 10
_SAFE_FLOAT: Final = float(MAX_SAFE_INTEGER)  # exact: compares floats without conversions
_WHOLE_AS_INTEGER: Final = 2.0**63  # yrs renders whole floats up to here (saturating) as i64

_unpack_f32 = _struct.Struct(">f").unpack_from
_unpack_f64 = _struct.Struct(">d").unpack_from
_unpack_i64 = _struct.Struct(">q").unpack_from


class MalformedUpdate(ValueError):
    """The bytes are not a well-formed Yjs v1 update (or exceed a decoding limit)."""

    def __init__(self, reason: str, offset: int | None = None) -> None:
        super().__init__(reason if offset is None else f"{reason} (at byte {offset})")
        self.reason = reason
        self.offset = offset


class AnyTooDeep(MalformedUpdate):
    """An Any value nests deeper than the decoder was told to accept."""


class _Undefined:
    """JavaScript ``undefined`` (lib0 Any tag 127)."""

    __slots__ = ()
    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = _Undefined()


# --- numbers, strings, bytes -------------------------------------------------------------------


def read_uint(data: bytes, pos: int) -> tuple[int, int]:
    """A var-uint: 7 bits a byte, low bits first, high bit = more (at most 2^53−1, as lib0)."""
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    b2 = data[pos + 1]
    if b2 < 0x80:
        return (b & 0x7F) | (b2 << 7), pos + 2
    value, end = _more_bits(data, pos + 2, (b & 0x7F) | ((b2 & 0x7F) << 7), 14, pos, "var-uint")
    if value > MAX_SAFE_INTEGER:
        raise MalformedUpdate("var-uint above 2^53−1", pos)
    return value, end


def read_int(data: bytes, pos: int) -> tuple[int, int]:
    """A var-int: first byte = more bit, sign bit, 6 value bits; then 7 bits a byte."""
    b = data[pos]
    value, end = b & 0x3F, pos + 1
    if b & 0x80:
        value, end = _more_bits(data, end, value, 6, pos, "var-int")
    return (-value if b & 0x40 else value), end


def _more_bits(
    data: bytes, pos: int, value: int, shift: int, start: int, what: str
) -> tuple[int, int]:
    """The rest of a var-int begun at `start`: 7 bits a byte from `pos` until a byte below
    0x80; at most _MAX_VAR_BYTES in all."""
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if pos - start >= _MAX_VAR_BYTES:
            raise MalformedUpdate(f"{what} longer than 10 bytes", start)


def read_string(data: bytes, pos: int) -> tuple[str, int]:
    """A var-uint byte length, then UTF-8."""
    n = data[pos]
    if n < 0x80:
        pos += 1
    else:
        n, pos = read_uint(data, pos)
    end = pos + n
    if end > len(data):
        raise MalformedUpdate("string runs past the end", pos)
    try:
        return data[pos:end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise MalformedUpdate("invalid UTF-8 in a string", pos) from None


def read_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = read_uint(data, pos)
    end = pos + n
    if end > len(data):
        raise MalformedUpdate("byte array runs past the end", pos)
    return data[pos:end], end


# --- Any ---------------------------------------------------------------------------------------


def read_any(data: bytes, pos: int, max_depth: int) -> tuple[Any, int, int, int]:
    """One Any value: ``(value, pos, nesting, flags)``.

    ``nesting`` is how deep its arrays/objects nest (0: a scalar; [] or {} is 1, [[]] is 2);
    ``flags`` the ``VALUE_*`` facts about it. Deeper than ``max_depth``: :class:`AnyTooDeep`.
    """
    tag = data[pos]
    pos += 1
    if tag == 119:  # string
        text, pos = read_string(data, pos)
        return text, pos, 0, 0
    if tag == 125:  # var-int
        value, pos = read_int(data, pos)
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return value, pos, 0, 0
        return value, pos, 0, VALUE_BIG_INT
    if tag == 124 or tag == 123:  # float32 / float64
        if tag == 124:
            if pos + 4 > len(data):
                raise MalformedUpdate("float32 runs past the end", pos)
            number = _unpack_f32(data, pos)[0]
            pos += 4
        else:
            if pos + 8 > len(data):
                raise MalformedUpdate("float64 runs past the end", pos)
            number = _unpack_f64(data, pos)[0]
            pos += 8
        if -_SAFE_FLOAT <= number <= _SAFE_FLOAT:
            return number, pos, 0, 0
        return number, pos, 0, _float_flags(number)
    if tag == 120:
        return True, pos, 0, 0
    if tag == 121:
        return False, pos, 0, 0
    if tag == 126:
        return None, pos, 0, 0
    if tag == 127:
        return UNDEFINED, pos, 0, VALUE_UNDEFINED
    if tag == 122:  # bigint (int64, big-endian)
        if pos + 8 > len(data):
            raise MalformedUpdate("bigint runs past the end", pos)
        value = _unpack_i64(data, pos)[0]
        pos += 8
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return value, pos, 0, 0
        return value, pos, 0, VALUE_BIG_INT
    if tag == 116:  # Uint8Array
        raw, pos = read_bytes(data, pos)
        return raw, pos, 0, VALUE_BINARY
    if tag == 117 or tag == 118:
        return _read_container(data, pos - 1, max_depth)
    raise MalformedUpdate(f"unknown Any tag {tag}", pos - 1)


def _float_flags(number: float) -> int:
    """The facts about a float outside ±(2^53−1) (or NaN)."""
    if not math.isfinite(number):
        return VALUE_NON_FINITE
    if abs(number) <= _WHOLE_AS_INTEGER and number.is_integer():
        return VALUE_BIG_WHOLE
    return 0


def _read_container(data: bytes, pos: int, max_depth: int) -> tuple[Any, int, int, int]:
    """An Any array (117) or object (118), decoded with an explicit stack (never recursion)."""
    size = len(data)
    # Frames: [container, remaining elements, is object, pending key].
    stack: list[list[Any]] = []
    nesting = 0
    flags = 0
    while True:
        key = None
        if stack and stack[-1][2]:
            key, pos = read_string(data, pos)
        tag = data[pos]
        if tag == 117 or tag == 118:
            start = pos
            count, pos = read_uint(data, pos + 1)
            depth = len(stack) + 1
            if depth > max_depth:
                raise AnyTooDeep(f"Any value nested deeper than {max_depth} levels", start)
            if depth > nesting:
                nesting = depth
            if tag == 118:
                if count * 2 > size - pos:
                    raise MalformedUpdate("Any object announces more entries than bytes", start)
                container: Any = {}
            else:
                if count > size - pos:
                    raise MalformedUpdate("Any array announces more elements than bytes", start)
                container = []
            if count:
                stack.append([container, count, tag == 118, key])
                continue
            value: Any = container
        else:
            value, pos, _, more = read_any(data, pos, 0)  # a scalar: max_depth is never reached
            flags |= more
        # Attach the finished value to its parents, closing those that are now complete.
        while True:
            if not stack:
                return value, pos, nesting, flags
            frame = stack[-1]
            if frame[2]:
                frame[0][key] = value
            else:
                frame[0].append(value)
            frame[1] -= 1
            if frame[1]:
                break
            stack.pop()
            value = frame[0]
            key = frame[3]
