"""What an ``UpdateGuard`` remembers of its doc, and what one update would add to it (a plan).

Per client: sorted clock ranges, each with the container its items live in (adjacent ranges with
the same container merged); every shared type seen, with its kind, level and root; the clocks of
Deleted items (a parent id there is garbage) and of Y.Text characters outside the BMP (nothing
may split them). A container is a root map (level 1) or a type; a type whose parent is at level
n is at level n+1. Garbage in yrs (a GC'd range, or an item under a collected parent) is DEAD: it
holds nothing and counts for no depth. All of it is proportional to the doc: ~5 MB for 10,000
root map entries holding a Y.Map each, under 1 MB for 10,000 holding a number.

For ``too_deep``, learning also keeps the key of every item of a root map, and for every value
of a root map's entry that holds containers (an :class:`Entry`), the deepest level in it, until
it learns that this value was deleted.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator, MutableSequence
from typing import Any, Final, Generic, TypeVar

from .update_structs import TYPE_MAP, TYPE_NAMES

__all__ = [
    "COMPUTED",
    "CONTAINER_NAMES",
    "DEAD",
    "META",
    "ROOTS",
    "STATE",
    "TYPE_UNDEFINED",
    "UNKNOWN",
    "Container",
    "Entry",
    "KeyRanges",
    "Mark",
    "Memory",
    "Plan",
    "Ranges",
    "Where",
    "covered",
]

STATE: Final = "$state"
COMPUTED: Final = "$computed"
META: Final = "$meta"
ROOTS: Final = (STATE, COMPUTED, META)

TYPE_UNDEFINED: Final = 15  # a root yrs created by name (its kind is not in the update)
CONTAINER_NAMES: Final = {**TYPE_NAMES, TYPE_UNDEFINED: "root"}

ID = tuple[int, int]
T = TypeVar("T")
R = TypeVar("R", bound="Ranges[Any]")


class Entry:
    """A value of a root map's entry that holds containers: the item holding it (``client``,
    clocks ``clock``..``end``) and the deepest container level in it so far."""

    __slots__ = ("client", "clock", "deepest", "end", "key", "root")

    def __init__(
        self, root: str, key: str, client: int, clock: int, end: int, deepest: int
    ) -> None:
        self.root = root
        self.key = key
        self.client = client
        self.clock = clock
        self.end = end
        self.deepest = deepest

    def __repr__(self) -> str:
        return f"<{self.root}.{self.key} at {self.client}:{self.clock}, down to {self.deepest}>"


class Container:
    """A root map or a shared type: where items can live. ``entry``: the root map entry whose
    value it is part of (None for a root, and while checking)."""

    __slots__ = ("entry", "kind", "level", "root")

    def __init__(self, kind: int, level: int, root: str, entry: Entry | None = None) -> None:
        self.kind = kind
        self.level = level
        self.root = root
        self.entry = entry

    def __repr__(self) -> str:
        return f"<{CONTAINER_NAMES.get(self.kind, self.kind)} in {self.root} at level {self.level}>"


class Mark:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


DEAD: Final = Mark("DEAD")
"""Garbage in yrs (GC'd, or under a GC'd/collected parent): holds nothing, counts for nothing."""
UNKNOWN: Final = Mark("UNKNOWN")
"""A parent the guard cannot determine (it depends on structs it has not seen)."""

Where = Container | Mark


class Ranges(Generic[T]):
    """Sorted, non-overlapping clock ranges of one client, each with a value."""

    __slots__ = ("ends", "starts", "values")

    def __init__(self) -> None:
        self.starts: MutableSequence[int] = []
        self.ends: MutableSequence[int] = []
        self.values: list[T] = []

    @property
    def end(self) -> int:
        return self.ends[-1] if self.ends else 0

    def find(self, clock: int) -> T | None:
        i = bisect_right(self.starts, clock) - 1
        if i >= 0 and clock < self.ends[i]:
            return self.values[i]
        return None

    def append(self, start: int, end: int, value: T) -> None:
        """Add [start, end) after every range held (merged with the last if it can be)."""
        if self.ends and self.ends[-1] == start and self.values[-1] is value:
            self.ends[-1] = end
        else:
            self.starts.append(start)
            self.ends.append(end)
            self.values.append(value)

    def extend(self, other: Ranges[T]) -> None:
        for start, end, value in zip(other.starts, other.ends, other.values, strict=True):
            self.append(start, end, value)

    def overlapping(self, start: int, end: int) -> Iterator[T]:
        starts = self.starts
        i = max(bisect_right(starts, start) - 1, 0)
        while i < len(starts) and starts[i] < end:
            if self.ends[i] > start:
                yield self.values[i]
            i += 1


class KeyRanges(Ranges[str]):
    """The map keys of a client's items in root maps (ranges merged when their keys are equal).

    There is one range for most such items: the clocks are kept in arrays, not as int objects.
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__()
        self.starts = array("q")
        self.ends = array("q")

    def append(self, start: int, end: int, value: str) -> None:
        if self.ends and self.ends[-1] == start and self.values[-1] == value:
            self.ends[-1] = end
        else:
            self.starts.append(start)
            self.ends.append(end)
            self.values.append(value)


class Plan:
    """What an update would add to the guard (nothing is recorded until ``learn`` commits).

    ``entries``: new values holding containers, per client and clock; ``raised``: the deeper
    levels reached in values; ``dropped``: the values the update deletes.
    """

    __slots__ = (
        "dropped",
        "entries",
        "keys",
        "pairs",
        "raised",
        "ranges",
        "roots",
        "server_clients",
        "tombs",
        "types",
    )

    def __init__(self) -> None:
        self.pairs: dict[int, set[int]] = {}
        self.ranges: dict[int, Ranges[Where]] = {}
        self.types: dict[ID, Where] = {}
        self.tombs: dict[int, Ranges[Where]] = {}
        self.roots: dict[str, Container] = {}
        self.server_clients: set[int] = set()
        self.keys: dict[int, KeyRanges] = {}
        self.entries: dict[int, dict[int, Entry]] = {}
        self.raised: dict[Entry, int] = {}
        self.dropped: list[Entry] = []


class Memory:
    """Everything the guard knows of its doc (see the module docstring)."""

    def __init__(self, server_clients: Iterable[int]) -> None:
        self.roots: dict[str, Container] = {name: Container(TYPE_MAP, 1, name) for name in ROOTS}
        self.ranges: dict[int, Ranges[Where]] = {}
        self.types: dict[ID, Where] = {}
        self.tombs: dict[int, Ranges[Where]] = {}
        self.server_clients: set[int] = set(server_clients)
        self.pairs: dict[int, set[int]] = {}  # per client, the first unit's clock of each pair
        self.keys: dict[int, KeyRanges] = {}
        self.entries: dict[int, dict[int, Entry]] = {}  # values holding containers, not deleted
        self.max_level = 1

    def commit(self, plan: Plan) -> None:
        _merge(self.ranges, plan.ranges)
        _merge(self.tombs, plan.tombs)
        _merge(self.keys, plan.keys)
        self.types.update(plan.types)
        for where in plan.types.values():
            if isinstance(where, Container) and where.level > self.max_level:
                self.max_level = where.level
        self.roots.update(plan.roots)
        self.server_clients |= plan.server_clients
        for client, pairs in plan.pairs.items():
            self.pairs.setdefault(client, set()).update(pairs)
        for client, entries in plan.entries.items():
            held_entries = self.entries.get(client)
            if held_entries is None:
                self.entries[client] = entries
            else:
                held_entries.update(entries)
        for entry, level in plan.raised.items():
            entry.deepest = max(entry.deepest, level)
        for entry in plan.dropped:
            held = self.entries.get(entry.client)
            if held is not None and held.get(entry.clock) is entry:
                del held[entry.clock]
                if not held:
                    del self.entries[entry.client]

    def too_deep(self, min_level: int) -> set[tuple[str, str]]:
        return {
            (entry.root, entry.key)
            for entries in self.entries.values()
            for entry in entries.values()
            if entry.deepest >= min_level
        }

    def dump(self) -> object:
        """Everything held, comparable with ==: for tests."""

        def ranges(table: dict[int, Ranges[Where]]) -> dict[int, list[tuple[int, int, object]]]:
            return {
                c: list(zip(r.starts, r.ends, map(_describe, r.values), strict=True))
                for c, r in table.items()
            }

        return (
            ranges(self.ranges),
            ranges(self.tombs),
            {key: _describe(value) for key, value in self.types.items()},
            sorted(self.roots),
            sorted(self.server_clients),
            {client: sorted(pairs) for client, pairs in self.pairs.items()},
            {c: list(zip(r.starts, r.ends, r.values, strict=True)) for c, r in self.keys.items()},
            {
                (client, clock, entry.root, entry.key, entry.end, entry.deepest)
                for client, entries in self.entries.items()
                for clock, entry in entries.items()
            },
            self.max_level,
        )


def covered(entries: dict[int, Entry], start: int, end: int) -> Iterator[Entry]:
    """The values (of one client) whose items lie wholly in the clocks ``start``..``end``."""
    if end - start <= len(entries):
        for clock in range(start, end):
            entry = entries.get(clock)
            if entry is not None and entry.end <= end:
                yield entry
    else:
        for entry in entries.values():
            if start <= entry.clock and entry.end <= end:
                yield entry


def _merge(held: dict[int, R], new: dict[int, R]) -> None:
    for client, ranges in new.items():
        mine = held.get(client)
        if mine is None:
            held[client] = ranges
        else:
            mine.extend(ranges)


def _describe(value: object) -> object:
    if isinstance(value, Container):
        return (value.kind, value.level, value.root, id(value))
    return repr(value)
