"""Check a client's Yjs update against the structure of a panel doc before pycrdt sees it.

Some updates crash or poison pycrdt: 20,000 nested Y.Maps in one update overflow the native
stack when the doc is rendered (the process dies, no exception), a few hundred make rendering
fail, and nesting can grow one level per update under types created long ago. So every update
from a client goes through ``UpdateGuard.check`` first: it is decoded in pure Python
(``update_decoder``) and checked against what the guard knows of the doc. ``UpdateGuard.learn``
records every update the doc applied: the room calls it with each transaction's
``event.update`` (``doc.observe``), and a guard for a loaded doc starts with
``learn(doc.get_update())``. Give ``learn`` only what the doc integrated, never a raw client
update (yrs may keep part of that pending, and another struct may later take its ids).

What the guard remembers, per client: sorted clock ranges, each with the container its items
live in (adjacent ranges with the same container merged), plus every shared type it has seen
(its kind, level and root). A container is a root map (level 1) or a type; a type whose parent
is at level n is at level n+1. Memory is proportional to the doc (~2 MB for 10,000 entries).

How an item finds its parent, as yrs 0.28 does: the parent it names (a root name or the id of a
type item), or, when it has an origin or right origin, the parent of the item at its origin if
that is an item, else that of the item at its right origin, else none: the item is garbage (yrs
stores a GC struct). A parent id naming a GC'd range or a Deleted item (a collected type) also
makes garbage. The guard records garbage as DEAD: it holds nothing and counts for no depth. It
learns garbage only from GC structs and Deleted items; a deletion makes nothing DEAD (whether
yrs collected a deleted type is not in the update), so deleted types still count: a safe
over-approximation.

The structs of an update are followed in the order yrs integrates them: a client's structs in
clock order once their clock is next and the other clients' structs they name are present.
Structs the doc already has are skipped (as yrs skips them). A checked update may not skip
clocks (a struct after a gap, or a Skip struct): real clients never send one (their updates
hold what their doc integrated), and yrs's handling of such pending updates has left pycrdt docs
whose ``get_update()`` panics. Structs still waiting for another client's structs at the end
stay pending in yrs: they are checked, but nothing may rely on them, since another struct may
later take the ids they wait for.

Rules for a checked update (``check``): see ``_Analysis.resolve_and_check``. In short: roots
``$state``/``$computed``/``$meta`` only, each a Y.Map; ``$meta`` server-owned (no item and no
deletion in it); ``$computed`` only with ``may_write_computed``; no container at level >=
max_depth (types and JSON objects/arrays inside Any values alike, as the REST face's
``check_json`` counts them); Any values JSON-safe (no big integers, NaN/Infinity or binary);
only Any, String (in a Y.Text, which holds only strings), Type (Y.Map/Y.Array/Y.Text) and
Deleted content; a type whose parent cannot be determined now is refused, and so is a value
holding JSON containers there; an origin and right origin in different types are refused; no
reference to, or deletion of, clocks of the server's clients that the guard has not seen; no
gap in a client's clocks; no clock at 2^32 or above (yrs keeps 32 bits); nothing inserted or
deleted inside a surrogate pair of a Y.Text.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from heapq import heappop, heappush
from typing import Final

from .update_decoder import (
    ANY,
    DELETED,
    GC,
    KIND_NAMES,
    SKIP,
    STRING,
    TYPE,
    TYPE_ARRAY,
    TYPE_MAP,
    TYPE_NAMES,
    TYPE_TEXT,
    VALUE_BIG_INT,
    VALUE_BINARY,
    VALUE_NON_FINITE,
    AnyTooDeep,
    DecodedUpdate,
    MalformedUpdate,
    Struct,
    TypeContent,
    decode_update,
)
from .values import MAX_DEPTH

__all__ = [
    "CLOSE_INVALID_UPDATE",
    "CLOSE_UPDATE_TOO_LARGE",
    "COMPUTED",
    "MAX_CLOCK",
    "META",
    "ROOTS",
    "STATE",
    "UpdateGuard",
    "UpdateRefused",
]

STATE: Final = "$state"
COMPUTED: Final = "$computed"
META: Final = "$meta"
ROOTS: Final = (STATE, COMPUTED, META)

CLOSE_INVALID_UPDATE: Final = 4400
CLOSE_UPDATE_TOO_LARGE: Final = 4413

MAX_CLOCK: Final = 2**32 - 1
"""yrs 0.28 keeps clocks in 32 bits: larger ones are truncated, ranges across 2^32 panic."""
_TYPE_UNDEFINED: Final = 15  # a root yrs created by name (its kind is not in the update)
_LEARN_ANY_DEPTH: Final = 1_000_000  # trusted updates: decoded iteratively, no real limit
_ALLOWED_TYPES: Final = frozenset((TYPE_ARRAY, TYPE_MAP, TYPE_TEXT))
_KIND_NAMES: Final = {**TYPE_NAMES, _TYPE_UNDEFINED: "root"}

ID = tuple[int, int]


class UpdateRefused(Exception):
    """A client's update breaks a rule; the guard and the doc are unchanged.

    ``code`` is a stable word: ``malformed`` (not a Yjs v1 update, or a clock yrs cannot hold),
    ``too_deep``, ``root``, ``server_owned`` ($meta, or the server's future changes),
    ``computed``, ``value`` (not JSON-safe), ``content`` (a kind of content panels do not use),
    ``parent`` (no or the wrong parent), ``gap`` (skipped clocks) or ``split`` (inside a
    surrogate pair). ``too_large`` is True for size-related refusals (nesting too deep), whose
    ``close_code`` is 4413; every other refusal closes with 4400.
    """

    def __init__(self, reason: str, *, code: str, too_large: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.too_large = too_large

    @property
    def close_code(self) -> int:
        return CLOSE_UPDATE_TOO_LARGE if self.too_large else CLOSE_INVALID_UPDATE


class _Container:
    """A root map or a shared type: where items can live."""

    __slots__ = ("kind", "level", "root")

    def __init__(self, kind: int, level: int, root: str) -> None:
        self.kind = kind
        self.level = level
        self.root = root

    def __repr__(self) -> str:
        return f"<{_KIND_NAMES.get(self.kind, self.kind)} in {self.root} at level {self.level}>"


class _Mark:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


DEAD: Final = _Mark("DEAD")
"""Garbage in yrs (GC'd, or under a GC'd/collected parent): holds nothing, counts for nothing."""
UNKNOWN: Final = _Mark("UNKNOWN")
"""A parent the guard cannot determine (it depends on structs it has not seen)."""

_Where = _Container | _Mark


class _Ranges:
    """Sorted, non-overlapping clock ranges of one client, each with a value."""

    __slots__ = ("ends", "starts", "values")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.values: list[_Where] = []

    @property
    def end(self) -> int:
        return self.ends[-1] if self.ends else 0

    def find(self, clock: int) -> _Where | None:
        i = bisect_right(self.starts, clock) - 1
        if i >= 0 and clock < self.ends[i]:
            return self.values[i]
        return None

    def append(self, start: int, end: int, value: _Where) -> None:
        """Add [start, end) after every range held (merged with the last if it can be)."""
        if self.ends and self.ends[-1] == start and self.values[-1] is value:
            self.ends[-1] = end
        else:
            self.starts.append(start)
            self.ends.append(end)
            self.values.append(value)

    def extend(self, other: _Ranges) -> None:
        for start, end, value in zip(other.starts, other.ends, other.values, strict=True):
            self.append(start, end, value)

    def overlapping(self, start: int, end: int) -> Iterator[_Where]:
        starts = self.starts
        i = max(bisect_right(starts, start) - 1, 0)
        while i < len(starts) and starts[i] < end:
            if self.ends[i] > start:
                yield self.values[i]
            i += 1


class _Plan:
    """What an update would add to the guard (nothing is recorded until ``learn`` commits)."""

    __slots__ = ("pairs", "ranges", "roots", "server_clients", "tombs", "types")

    def __init__(self) -> None:
        self.pairs: dict[int, set[int]] = {}
        self.ranges: dict[int, _Ranges] = {}
        self.types: dict[ID, _Where] = {}
        self.tombs: dict[int, _Ranges] = {}
        self.roots: dict[str, _Container] = {}
        self.server_clients: set[int] = set()


class UpdateGuard:
    """Knows the structure of one live panel doc and checks client updates against it.

    ``server_clients``: client ids of the server's own docs (e.g. ``doc.client_id``). A client
    update may not refer to or delete clocks of theirs that the guard has not seen yet (it would
    bind to the server's future changes, `$meta` ones included). Clients that write `$meta` in a
    learned update are added automatically.
    """

    def __init__(self, max_depth: int = MAX_DEPTH, *, server_clients: Iterable[int] = ()) -> None:
        if max_depth < 2:
            raise ValueError("max_depth must be at least 2 (a root map is at level 1)")
        self.max_depth = max_depth
        self._roots: dict[str, _Container] = {name: _Container(TYPE_MAP, 1, name) for name in ROOTS}
        self._ranges: dict[int, _Ranges] = {}
        self._types: dict[ID, _Where] = {}
        self._tombs: dict[int, _Ranges] = {}  # Deleted items: a parent id there is garbage
        self._server_clients: set[int] = set(server_clients)
        # Per client, the clocks of Y.Text characters outside the BMP (two UTF-16 units): the
        # first unit's clock. Nothing may split such a pair (see _Analysis.check_split).
        self._pairs: dict[int, set[int]] = {}
        self._max_level = 1

    # --- public API ----------------------------------------------------------------------------

    def check(self, update: bytes, *, may_write_computed: bool) -> None:
        """Raise :class:`UpdateRefused` unless a client may apply ``update``; change nothing."""
        try:
            decoded = decode_update(update, max_any_depth=self.max_depth, max_clock=MAX_CLOCK)
        except AnyTooDeep as exc:
            raise UpdateRefused(
                f"a value nests deeper than {self.max_depth} levels",
                code="too_deep",
                too_large=True,
            ) from exc
        except MalformedUpdate as exc:
            raise UpdateRefused(f"malformed update: {exc}", code="malformed") from exc
        _Analysis(self, decoded, checking=True, may_write_computed=may_write_computed).run()

    def learn(self, update: bytes) -> None:
        """Record an update the doc has applied (trusted). Raises MalformedUpdate, changing
        nothing, if it cannot be decoded."""
        decoded = decode_update(update, max_any_depth=_LEARN_ANY_DEPTH, allow_empty_strings=True)
        plan = _Analysis(self, decoded, checking=False, may_write_computed=True).run()
        self._commit(plan)

    @property
    def max_level(self) -> int:
        """The deepest container level the guard knows of (1: only the roots)."""
        return self._max_level

    def level_of(self, type_id: ID) -> int | None:
        """The level of the shared type created by the item ``type_id`` (None: unknown/dead)."""
        where = self._types.get(type_id)
        return where.level if isinstance(where, _Container) else None

    def stats(self) -> dict[str, int]:
        return {
            "clients": len(self._ranges),
            "ranges": sum(len(r.starts) for r in self._ranges.values()),
            "types": len(self._types),
            "max_level": self._max_level,
        }

    # --- internals -----------------------------------------------------------------------------

    def _commit(self, plan: _Plan) -> None:
        for client, ranges in plan.ranges.items():
            held = self._ranges.get(client)
            if held is None:
                self._ranges[client] = ranges
            else:
                held.extend(ranges)
        for client, tombs in plan.tombs.items():
            held = self._tombs.get(client)
            if held is None:
                self._tombs[client] = tombs
            else:
                held.extend(tombs)
        self._types.update(plan.types)
        for where in plan.types.values():
            if isinstance(where, _Container) and where.level > self._max_level:
                self._max_level = where.level
        self._roots.update(plan.roots)
        self._server_clients |= plan.server_clients
        for client, pairs in plan.pairs.items():
            self._pairs.setdefault(client, set()).update(pairs)

    def _dump(self) -> object:
        """Everything the guard holds, comparable with ==: for tests."""

        def ranges(table: dict[int, _Ranges]) -> dict[int, list[tuple[int, int, object]]]:
            return {
                c: list(zip(r.starts, r.ends, map(self._describe, r.values), strict=True))
                for c, r in table.items()
            }

        return (
            ranges(self._ranges),
            ranges(self._tombs),
            {key: self._describe(value) for key, value in self._types.items()},
            sorted(self._roots),
            sorted(self._server_clients),
            {client: sorted(pairs) for client, pairs in self._pairs.items()},
            self._max_level,
        )

    @staticmethod
    def _describe(value: object) -> object:
        if isinstance(value, _Container):
            return (value.kind, value.level, value.root, id(value))
        return repr(value)


class _Analysis:
    """One pass over a decoded update, in the order yrs would integrate it.

    yrs integrates a client's structs in clock order, each once its clock is next for that
    client and the structs of other clients it refers to (origin, right origin, parent id) are
    present; the rest stays pending. Structs the doc already has are skipped. Pending structs
    are checked too (they may be integrated later) but nothing may rely on them.
    """

    def __init__(
        self,
        guard: UpdateGuard,
        decoded: DecodedUpdate,
        *,
        checking: bool,
        may_write_computed: bool,
    ) -> None:
        self.guard = guard
        self.decoded = decoded
        self.checking = checking
        self.may_write_computed = may_write_computed
        self.plan = _Plan()
        self.max_depth = guard.max_depth

    # --- driver --------------------------------------------------------------------------------

    def run(self) -> _Plan:
        structs_of = {s.client: s.structs for s in self.decoded.sections}
        next_index = dict.fromkeys(structs_of, 0)
        waiting: dict[int, list[tuple[int, int]]] = {}
        queue = list(structs_of)
        while queue:
            client = queue.pop()
            structs = structs_of[client]
            i = next_index[client]
            state = self.state(client)
            while i < len(structs):
                s = structs[i]
                if s.clock + s.length <= state:  # the doc has it: yrs skips it
                    i += 1
                    continue
                if s.clock > state or s.kind == SKIP:  # a gap: the rest is pending
                    if self.checking:  # real clients never do; pending updates upset yrs
                        upto = s.clock if s.clock > state else s.clock + s.length
                        raise self.refuse(
                            f"the update skips clocks {state}..{upto} of client {client}, "
                            "which the server does not have",
                            code="gap",
                        )
                    break
                missing = self.missing(s)
                if missing is not None:  # retried once that client reaches that clock
                    heappush(waiting.setdefault(missing[0], []), (missing[1], client))
                    break
                self.integrate(s, state)
                state = s.clock + s.length
                i += 1
            next_index[client] = i
            waiters = waiting.get(client)
            while waiters and waiters[0][0] < state:
                queue.append(heappop(waiters)[1])
        if self.checking:
            for client, structs in structs_of.items():
                for s in structs[next_index[client] :]:
                    if s.kind != SKIP and s.kind != GC:
                        self.resolve_and_check(s)
            self.check_deletes()
        return self.plan

    def state(self, client: int) -> int:
        """The next clock of ``client`` the doc expects (as far as the guard knows)."""
        ranges = self.plan.ranges.get(client)
        if ranges is not None:
            return ranges.end
        held = self.guard._ranges.get(client)
        return held.end if held is not None else 0

    def missing(self, s: Struct) -> ID | None:
        """A struct of another client that ``s`` refers to and the doc does not have yet."""
        if s.kind == GC:
            return None
        client = s.client
        for ref in (s.origin, s.right_origin, s.parent):
            if isinstance(ref, tuple) and ref[0] != client and ref[1] >= self.state(ref[0]):
                return ref
        return None

    def integrate(self, s: Struct, state: int) -> None:
        start = max(s.clock, state)
        end = s.clock + s.length
        if s.kind == GC:
            self.record(s.client, start, end, DEAD)
            return
        where = self.resolve_and_check(s)
        self.record(s.client, start, end, where)
        if s.kind == TYPE:
            content: TypeContent = s.content
            if isinstance(where, _Container):
                child: _Where = _Container(content.ref, where.level + 1, where.root)
            else:
                child = where
            self.plan.types[(s.client, s.clock)] = child
        elif s.kind == STRING:
            if not s.content.isascii():
                pairs = _pair_clocks(s.content, s.clock)
                pairs = {clock for clock in pairs if clock >= start}
                if pairs:
                    self.plan.pairs.setdefault(s.client, set()).update(pairs)
        elif s.kind == DELETED:
            tombs = self.plan.tombs.get(s.client)
            if tombs is None:
                tombs = self.plan.tombs[s.client] = _Ranges()
            tombs.append(start, end, DEAD)
        if not self.checking and isinstance(where, _Container) and where.root == META:
            self.plan.server_clients.add(s.client)

    def record(self, client: int, start: int, end: int, where: _Where) -> None:
        ranges = self.plan.ranges.get(client)
        if ranges is None:
            ranges = self.plan.ranges[client] = _Ranges()
        ranges.append(start, end, where)

    # --- lookups -------------------------------------------------------------------------------

    def lookup(self, ref: ID) -> _Where | None:
        """The container the item at ``ref`` lives in (or DEAD/UNKNOWN); None: not present."""
        client, clock = ref
        held = self.guard._ranges.get(client)
        if held is not None and clock < held.end:
            return held.find(clock)
        ranges = self.plan.ranges.get(client)
        return ranges.find(clock) if ranges is not None else None

    def is_tomb(self, ref: ID) -> bool:
        client, clock = ref
        for table in (self.guard._tombs, self.plan.tombs):
            ranges = table.get(client)
            if ranges is not None and ranges.find(clock) is not None:
                return True
        return False

    def root(self, name: str) -> _Where:
        root = self.guard._roots.get(name) or self.plan.roots.get(name)
        if root is None:
            if self.checking:
                raise self.refuse(f"root '{name}' is not one of {', '.join(ROOTS)}", code="root")
            root = self.plan.roots[name] = _Container(_TYPE_UNDEFINED, 1, name)
        return root

    def type_at(self, ref: ID, s: Struct) -> _Where:
        """The container created by the item ``ref`` that ``s`` names as its parent."""
        where = self.plan.types.get(ref)
        if where is None:
            where = self.guard._types.get(ref)
        if where is not None:
            return where
        found = self.lookup(ref)
        if found is None or found is UNKNOWN:
            return UNKNOWN
        if found is DEAD or self.is_tomb(ref):
            return DEAD  # yrs: the parent is GC'd or a collected type: garbage
        if self.checking:  # pycrdt fails mid-update: "block parent must be ... shared ref type"
            raise self.refuse(f"{_name(s)} names {ref[0]}:{ref[1]} as parent, not a type")
        return DEAD

    def parent_of(self, s: Struct) -> _Where:
        parent = s.parent
        if isinstance(parent, str):
            return self.root(parent)
        if parent is not None:
            return self.type_at(parent, s)
        left = self.lookup(s.origin) if s.origin is not None else DEAD
        right = self.lookup(s.right_origin) if s.right_origin is not None else DEAD
        if not self.checking:  # yrs: the left neighbour's parent if it is an item, else right's
            if left is not None and left is not DEAD:
                return left
            if right is not None and right is not DEAD:
                return right
            return DEAD
        if left is None or right is None or left is UNKNOWN or right is UNKNOWN:
            return UNKNOWN  # what yrs picks depends on structs the guard has not seen
        if left is DEAD:
            return right
        if right is not DEAD and right is not left:
            raise self.refuse(f"{_name(s)} has its origin and right origin in different types")
        return left

    # --- rules ---------------------------------------------------------------------------------

    def refuse(self, reason: str, *, code: str = "parent", too_large: bool = False) -> Exception:
        return UpdateRefused(reason, code=code, too_large=too_large)

    def resolve_and_check(self, s: Struct) -> _Where:
        checking = self.checking
        kind = s.kind
        if checking:
            self.check_content(s)
            self.check_server_refs(s)
            self.check_split(s)
        where = self.parent_of(s)
        if not checking or where is DEAD:
            return where
        if where is UNKNOWN:
            if kind == TYPE:
                raise self.refuse(
                    f"{_name(s)} creates a shared type whose parent cannot be determined "
                    "(it depends on changes the server does not have)"
                )
            if kind == ANY and s.nesting:
                raise self.refuse(
                    f"{_name(s)} holds a JSON object or array but its parent cannot be "
                    "determined, so neither can its depth",
                    code="too_deep",
                    too_large=True,
                )
            return where
        assert isinstance(where, _Container)
        root = where.root
        if root != STATE:
            if root == META:
                raise self.refuse(
                    f"{_name(s)} writes into {META}, which is server-owned", code="server_owned"
                )
            if root == COMPUTED:
                if not self.may_write_computed:
                    raise self.refuse(
                        f"{_name(s)} writes into {COMPUTED}, which this connection may not change",
                        code="computed",
                    )
            else:
                raise self.refuse(f"root '{root}' is not one of {', '.join(ROOTS)}", code="root")
        container = where.kind
        if container == TYPE_MAP:
            if s.parent is not None and s.parent_sub is None:
                if where.level == 1:
                    raise self.refuse(
                        f"{_name(s)} is in root {root} without a key: roots are Y.Maps"
                    )
                raise self.refuse(f"{_name(s)} is in a Y.Map without a key")
            if kind == STRING:
                raise self.refuse(f"{_name(s)} puts Y.Text characters in a Y.Map", code="content")
        elif container == TYPE_ARRAY or container == TYPE_TEXT:
            if s.parent_sub is not None:
                raise self.refuse(f"{_name(s)} has a map key but is in a {TYPE_NAMES[container]}")
            if container == TYPE_ARRAY and kind == STRING:
                raise self.refuse(f"{_name(s)} puts Y.Text characters in a Y.Array", code="content")
            if container == TYPE_TEXT and kind != STRING and kind != DELETED:
                raise self.refuse(
                    f"{_name(s)} puts {KIND_NAMES[kind]} content in a Y.Text "
                    "(a Y.Text holds only characters)",
                    code="content",
                )
        else:
            raise self.refuse(
                f"{_name(s)} is in a {_KIND_NAMES.get(container, 'shared type')}, which panels "
                "do not use",
                code="content",
            )
        limit = self.max_depth
        if kind == TYPE:
            level = where.level + 1
            if level >= limit:
                raise self.refuse(
                    f"{_name(s)} creates a {TYPE_NAMES[s.content.ref]} at level {level}; "
                    f"containers nest at most {limit - 1} levels",
                    code="too_deep",
                    too_large=True,
                )
        elif kind == ANY and s.nesting and where.level + s.nesting >= limit:
            raise self.refuse(
                f"{_name(s)} holds a value reaching level {where.level + s.nesting}; "
                f"containers nest at most {limit - 1} levels",
                code="too_deep",
                too_large=True,
            )
        return where

    def check_content(self, s: Struct) -> None:
        kind = s.kind
        if kind == ANY:
            flags = s.flags
            if flags & VALUE_BIG_INT:
                raise self.refuse(
                    f"{_name(s)} holds an integer outside ±(2^53−1); send it as a string",
                    code="value",
                )
            if flags & VALUE_NON_FINITE:
                raise self.refuse(
                    f"{_name(s)} holds NaN or Infinity, which JSON has not", code="value"
                )
            if flags & VALUE_BINARY:
                raise self.refuse(f"{_name(s)} holds binary data (Uint8Array)", code="value")
        elif kind == TYPE:
            ref = s.content.ref
            if ref not in _ALLOWED_TYPES:
                raise self.refuse(
                    f"{_name(s)} creates a {TYPE_NAMES[ref]}; panels hold only "
                    "Y.Map, Y.Array and Y.Text",
                    code="content",
                )
        elif kind != STRING and kind != DELETED:
            what = "a subdocument" if kind == 9 else f"{KIND_NAMES[kind]} content"
            raise self.refuse(f"{_name(s)} holds {what}, which panels do not use", code="content")

    def check_server_refs(self, s: Struct) -> None:
        servers = self.guard._server_clients
        if not servers:
            return
        for ref in (s.origin, s.right_origin, s.parent):
            if isinstance(ref, tuple) and ref[0] in servers and ref[1] >= self.state(ref[0]):
                raise self.refuse(
                    f"{_name(s)} refers to {ref[0]}:{ref[1]}, a change the server has not made yet",
                    code="server_owned",
                )

    def is_pair_start(self, client: int, clock: int) -> bool:
        """Is ``(client, clock)`` the first UTF-16 unit of a character outside the BMP?"""
        for table in (self.guard._pairs, self.plan.pairs):
            pairs = table.get(client)
            if pairs is not None and clock in pairs:
                return True
        return False

    def check_split(self, s: Struct) -> None:
        """Refuse an item that would split a surrogate pair of a Y.Text.

        Yjs replaces both halves with U+FFFD; yrs 0.28 keeps the character whole on one side
        and writes a zero-length string: Yjs clients and the server then show different text.
        """
        origin = s.origin
        if origin is not None and self.is_pair_start(*origin):
            raise self.refuse(
                f"{_name(s)} is inserted inside a character (a surrogate pair)", code="split"
            )
        right = s.right_origin
        if right is not None and self.is_pair_start(right[0], right[1] - 1):
            raise self.refuse(
                f"{_name(s)} is inserted inside a character (a surrogate pair)", code="split"
            )
        if s.kind == STRING and not s.content.isascii():
            state = self.state(s.client)
            if s.clock < state < s.clock + s.length and state - 1 in _pair_clocks(
                s.content, s.clock
            ):
                raise self.refuse(f"{_name(s)} overlaps the doc inside a character", code="split")

    def check_deletes(self) -> None:
        by_client: dict[int, list[tuple[int, int]]] = {}
        for client, clock, length in self.decoded.deletes:
            if length:
                by_client.setdefault(client, []).append((clock, clock + length))
        servers = self.guard._server_clients
        for client, spans in by_client.items():
            spans.sort()
            merged: list[list[int]] = []
            for start, end in spans:
                if merged and start <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], end)
                else:
                    merged.append([start, end])
            tables = [
                t
                for t in (self.guard._ranges.get(client), self.plan.ranges.get(client))
                if t is not None
            ]
            state = self.state(client)
            for start, end in merged:
                if self.is_pair_start(client, start - 1) or self.is_pair_start(client, end - 1):
                    raise self.refuse(
                        f"the update deletes {client}:{start}..{end}, which splits a character "
                        "(a surrogate pair)",
                        code="split",
                    )
                if client in servers and end > state:
                    raise self.refuse(
                        f"the update deletes {client}:{start}..{end}, changes the server has "
                        "not made yet",
                        code="server_owned",
                    )
                for table in tables:
                    for where in table.overlapping(start, end):
                        if isinstance(where, _Container):
                            self.check_delete_in(where, client, start, end)

    def check_delete_in(self, where: _Container, client: int, start: int, end: int) -> None:
        if where.root == META:
            raise self.refuse(
                f"the update deletes from {META} ({client}:{start}..{end}), which is server-owned",
                code="server_owned",
            )
        if where.root == COMPUTED and not self.may_write_computed:
            raise self.refuse(
                f"the update deletes from {COMPUTED} ({client}:{start}..{end}), which this "
                "connection may not change",
                code="computed",
            )


def _name(s: Struct) -> str:
    return f"item {s.client}:{s.clock}"


def _pair_clocks(text: str, clock: int) -> set[int]:
    """The clocks of the first UTF-16 unit of each character of ``text`` outside the BMP."""
    pairs = set()
    for char in text:
        if ord(char) > 0xFFFF:
            pairs.add(clock)
            clock += 2
        else:
            clock += 1
    return pairs
