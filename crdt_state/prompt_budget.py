"""Fitting a workspace's state into a token budget (docs/AI-CONTEXT.md): the token estimate,
the levels of detail a value is shortened to (with a marker for every cut), the two ways a
value is written (readable, for markdown; compact JSON) and the plan that gives each panel
the richest level the budget allows.

Pure functions over plain JSON: no I/O, safe on a worker thread.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

ESTIMATOR = "chars-v1"  # named in every answer: what `tokenEstimate` means
_SORTED = orjson.OPT_SORT_KEYS

# The estimate's character classes (docs/AI-CONTEXT.md, "The token estimate").
_HEX = re.compile(
    r"(?<![A-Za-z0-9])(?=[0-9a-fA-F]*[0-9])(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}(?![A-Za-z0-9])"
)
_CHUNKS = re.compile(
    r"[A-Za-z]{1,5}"  # letters, up to five at a time
    r"|[0-9]{1,3}"  # digits, up to three (as the BPE tokenizers split numbers)
    r"|[!-/:-@\[-`{-~]{1,2}"  # ASCII punctuation, up to two
    r"|\n[ \t]*|[ \t]{2,}| (?=[0-9])"  # a line break with its indent, a run of blanks,
)  # a space before a digit (a lone space before a word or a sign is part of it)
_MARGIN = 1.05


def estimate_tokens(text: str) -> int:
    """The documented token estimate (ESTIMATOR): chunks of characters by class, each
    counted as one token (up to 5 letters, 3 digits, 2 punctuation marks; a line break with
    its indentation; a run of blanks); hex strings of 8+ characters at 0.65 a character;
    other characters at one token per 2 bytes of their UTF-8; plus 5%. At or above what
    the cl100k and o200k tokenizers count on JSON, markdown, prose, numbers, ids and CJK
    text (calibrated in docs/AI-CONTEXT.md)."""
    if not text:
        return 0
    hex_tokens = 0.0
    if _HEX.search(text) is not None:
        hex_chars = sum(len(run) for run in _HEX.findall(text))
        hex_tokens = hex_chars * 0.65
        text = _HEX.sub(" ", text)
    ascii_chars = len(text.encode("ascii", "ignore")) if not text.isascii() else len(text)
    other_bytes = len(text.encode()) - ascii_chars
    raw = len(_CHUNKS.findall(text)) + hex_tokens + (other_bytes + 1) // 2
    return math.ceil(raw * _MARGIN)


# --- levels of detail ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """How far a level shortens: strings to `chars` characters, arrays to their first
    `items` items, objects to their first `keys` members (by key), and containers at
    `depth` (the root is at depth 0) to their size. None: no limit."""

    chars: int | None
    items: int | None
    keys: int | None
    depth: int | None


# Each level shortens at least as much as the one before, in every respect. The last, an
# outline, is the least a panel is shown with: below it, the panel is left out (and named,
# with its version, in the marker that lists what was left out).
LEVELS: tuple[Limits, ...] = (
    Limits(None, None, None, None),  # 0: everything
    Limits(2000, 100, 200, 12),
    Limits(500, 30, 100, 8),
    Limits(200, 12, 50, 6),
    Limits(100, 6, 30, 5),
    Limits(60, 3, 20, 4),
    Limits(32, 2, 12, 3),
    Limits(16, 1, 12, 1),  # 7: the root's members, containers as their sizes
)
FULL = 0
OUTLINE = len(LEVELS) - 1


@dataclass(slots=True)
class Cuts:
    """What a shortening left out, counted: strings shortened, arrays and objects shortened
    or collapsed."""

    strings: int = 0
    arrays: int = 0
    objects: int = 0

    def __bool__(self) -> bool:
        return bool(self.strings or self.arrays or self.objects)

    def add(self, other: Cuts) -> None:
        self.strings += other.strings
        self.arrays += other.arrays
        self.objects += other.objects

    def to_json(self) -> dict[str, int]:
        return {"strings": self.strings, "arrays": self.arrays, "objects": self.objects}


class Marks(Protocol):
    """How a rendering marks a cut (markdown: Cut objects its writer prints; JSON: objects
    with a "$cut" member)."""

    def string(self, head: str, chars: int) -> Any: ...
    def collapsed(self, kind: str, size: int) -> Any: ...
    def more_items(self, more: int) -> Any: ...
    def more_keys(self, members: dict[str, Any], more: int) -> Any: ...


class Cut:
    """A marker in a shortened value, for the readable writer."""

    __slots__ = ("head", "kind", "size")

    def __init__(self, kind: str, size: int, head: str = "") -> None:
        self.kind, self.size, self.head = kind, size, head

    def text(self) -> str:
        if self.kind == "string":
            return f"{_dumps(self.head + '…')} ({self.size:,} chars)"
        if self.kind == "object":
            return f"{{… {counted(self.size, 'key')}}}"
        if self.kind == "array":
            return f"[… {counted(self.size, 'item')}]"
        return f"… {self.size:,} more"  # the end of a shortened array


def counted(size: int, noun: str) -> str:
    return f"{size:,} {noun}{'' if size == 1 else 's'}"


class Trimmed:
    """An object shortened to its first `members` (by key); `more` were left out."""

    __slots__ = ("members", "more")

    def __init__(self, members: dict[str, Any], more: int) -> None:
        self.members, self.more = members, more


class ReadableMarks:
    def string(self, head: str, chars: int) -> Any:
        return Cut("string", chars, head)

    def collapsed(self, kind: str, size: int) -> Any:
        return Cut(kind, size)

    def more_items(self, more: int) -> Any:
        return Cut("items", more)

    def more_keys(self, members: dict[str, Any], more: int) -> Any:
        return Trimmed(members, more)


class JsonMarks:
    def string(self, head: str, chars: int) -> Any:
        return {"$head": head, "$chars": chars}

    def collapsed(self, kind: str, size: int) -> Any:
        return {("$keys" if kind == "object" else "$items"): size}

    def more_items(self, more: int) -> Any:
        return {"$more": more}

    def more_keys(self, members: dict[str, Any], more: int) -> Any:
        members["$more"] = more
        return members


READABLE_MARKS = ReadableMarks()
JSON_MARKS = JsonMarks()


def shorten(value: Any, limits: Limits, marks: Marks, cuts: Cuts, depth: int = 0) -> Any:
    """`value` shortened to `limits`, every cut marked by `marks` and counted in `cuts`.
    Objects come out with their keys sorted."""
    if isinstance(value, str):
        if limits.chars is not None and len(value) > limits.chars:
            cuts.strings += 1
            return marks.string(value[: limits.chars], len(value))
        return value
    if isinstance(value, dict):
        if not value:
            return value
        if limits.depth is not None and depth >= limits.depth:
            cuts.objects += 1
            return marks.collapsed("object", len(value))
        keys = sorted(value)
        kept = keys if limits.keys is None else keys[: limits.keys]
        members = {k: shorten(value[k], limits, marks, cuts, depth + 1) for k in kept}
        if len(kept) < len(keys):
            cuts.objects += 1
            return marks.more_keys(members, len(keys) - len(kept))
        return members
    if isinstance(value, list):
        if not value:
            return value
        if limits.depth is not None and depth >= limits.depth:
            cuts.arrays += 1
            return marks.collapsed("array", len(value))
        head = value if limits.items is None else value[: limits.items]
        items = [shorten(item, limits, marks, cuts, depth + 1) for item in head]
        if len(head) < len(value):
            cuts.arrays += 1
            items.append(marks.more_items(len(value) - len(head)))
        return items
    return value


# --- writing values -----------------------------------------------------------------------

WIDTH = 80  # a container whose compact form is at most this long stays on one line


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=_SORTED).decode()


def compact_json(value: Any) -> str:
    """Compact JSON, keys sorted (stable), for values with no Cut markers."""
    return _dumps(value)


def readable(value: Any, indent: str = "") -> str:
    """JSON for a reader: a container on one line (compact) when that fits WIDTH, else one
    member per line, indented by two; Cut markers written as such; keys sorted."""
    flat = _flat(value, WIDTH - len(indent))
    if flat is not None:
        return flat
    inner = indent + "  "
    if isinstance(value, dict | Trimmed):
        lines = [f"{inner}{_dumps(k)}: {readable(v, inner)}" for k, v in _members(value)]
        if isinstance(value, Trimmed):
            lines.append(f"{inner}… {value.more:,} more")
        return "{\n" + ",\n".join(lines) + "\n" + indent + "}"
    if isinstance(value, list):
        if not any(isinstance(item, dict | list) for item in value):
            lines = _packed([_scalar(item) for item in value], inner)
        else:
            lines = [inner + readable(item, inner) for item in value]
        return "[\n" + ",\n".join(lines) + "\n" + indent + "]"
    return _scalar(value)


def _packed(texts: list[str], indent: str) -> list[str]:
    """Scalars several to a line, up to WIDTH."""
    lines: list[str] = []
    line = ""
    for text in texts:
        if line and len(indent) + len(line) + len(text) + 2 > WIDTH:  # "," and the one after
            lines.append(indent + line)
            line = ""
        line = f"{line},{text}" if line else text
    lines.append(indent + line)
    return lines


def one_line(value: Any) -> str:
    """The compact form of a (shortened) value, however long."""
    text = _flat(value, 1 << 62)
    assert text is not None
    return text


def _members(value: dict[str, Any] | Trimmed) -> list[tuple[str, Any]]:
    if isinstance(value, Trimmed):
        return list(value.members.items())
    return sorted(value.items())


def _scalar(value: Any) -> str:
    return value.text() if isinstance(value, Cut) else _dumps(value)


def _marked(value: Any) -> Any:
    raise TypeError  # a marker: the value is written member by member


def _flat(value: Any, room: int) -> str | None:
    """The compact form of `value` when at most `room` characters, else None (given up as
    soon as it is longer)."""
    if isinstance(value, dict | list) and 1 + 2 * len(value) <= room:
        try:  # no marker inside: orjson writes the same text, at C speed
            whole = orjson.dumps(value, default=_marked, option=_SORTED).decode()
        except orjson.JSONEncodeError:
            pass
        else:
            return whole if len(whole) <= room else None
    if isinstance(value, dict | Trimmed):
        if 2 + 4 * len(_members(value)) > room:
            return None
        parts = []
        used = 2
        for key, member in _members(value):
            key_text = _dumps(key)
            text = _flat(member, room - used - len(key_text) - 1)
            if text is None:
                return None
            parts.append(f"{key_text}:{text}")
            used += len(key_text) + len(text) + 2
        if isinstance(value, Trimmed):
            parts.append(f"… {value.more:,} more")
            used += len(parts[-1]) + 1
        return "{" + ",".join(parts) + "}" if used - 1 <= room else None
    if isinstance(value, list):
        if 1 + 2 * len(value) > room:
            return None
        parts = []
        used = 2
        for item in value:
            text = _flat(item, room - used)
            if text is None:
                return None
            parts.append(text)
            used += len(text) + 1
        return "[" + ",".join(parts) + "]" if used - 1 <= room else None
    scalar = _scalar(value)
    return scalar if len(scalar) <= room else None


# --- the plan -----------------------------------------------------------------------------

Cost = Callable[[int, int], int]  # (panel index, level) -> tokens of its part


def fit_panels(
    count: int, cost: Cost, floor: Callable[[int], int], available: int, marker_cap: int
) -> list[int | None]:
    """A level for each of `count` panels (None: omitted) whose parts add up to at most
    `available` tokens, `marker_cap` of them kept for the omitted-panels marker when any are
    omitted. Omits panels last first, only when the outlines of all do not fit; then gives
    each kept panel its fair share, smallest first (what a small one leaves goes to the
    larger ones), at the richest level within it. `floor(i)`: about the least panel i's
    full part may cost (cheap), which spares rendering it where it cannot fit."""
    if sum(map(floor, range(count))) <= available:  # all in full, perhaps
        if sum(cost(i, FULL) for i in range(count)) <= available:
            return [FULL] * count
    heads: list[int] = []  # the outlines' costs, of the first panels as far as they fit
    total = 0
    while len(heads) < count and total <= available:
        heads.append(cost(len(heads), OUTLINE))
        total += heads[-1]
    room, kept = available, count
    if total > available:  # not all: keep room for the marker
        room, kept, used = available - marker_cap, 0, 0
        while kept < len(heads) and used + heads[kept] <= room:
            used += heads[kept]
            kept += 1
    levels: list[int | None] = [None] * count
    later = sum(heads[:kept])  # the outlines of the panels not given a level yet
    order = sorted(range(kept), key=lambda i: (floor(i), i))
    for position, index in enumerate(order):
        later -= heads[index]
        share = room // (kept - position)
        limit = min(max(share, heads[index]), room - later)
        level = _richest(index, cost, floor(index), limit)
        levels[index] = level
        room -= cost(index, level)
    for index in range(kept):  # what is left, to the first panels that can use it
        current = levels[index]
        assert current is not None
        richer = _richest(index, cost, floor(index), cost(index, current) + room, current)
        room -= cost(index, richer) - cost(index, current)
        levels[index] = richer
    return levels


def _richest(index: int, cost: Cost, floor: int, limit: int, poorest: int = OUTLINE) -> int:
    """The richest level up to `poorest` within `limit` (`poorest` when none is). The
    levels' costs fall as they shorten more, so the shortened ones are searched by halves."""
    if poorest > FULL and floor <= limit and cost(index, FULL) <= limit:
        return FULL
    low, high = min(FULL + 1, poorest), poorest
    while low < high:
        middle = (low + high) // 2
        if cost(index, middle) <= limit:
            high = middle
        else:
            low = middle + 1
    return low
