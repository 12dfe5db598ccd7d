"""The rules a client's Yjs update must keep before pycrdt may apply it, and the refusal.

Roots ``$state``/``$computed``/``$meta`` only, each a Y.Map; ``$meta`` server-owned (no item and
no deletion in it); ``$computed`` only with ``may_write_computed``; no container at level >=
max_depth (types and JSON objects/arrays inside Any values alike, as the REST face's
``check_json`` counts them); Any values JSON-safe, as the doc renders them (no integer beyond
±(2^53−1), nor a whole float it would render as one; no NaN/Infinity, no binary); only Any,
String (in a Y.Text, which holds only strings), Type (Y.Map/Y.Array/Y.Text) and Deleted content;
a type whose parent cannot be determined now is refused, and so is a value holding JSON
containers there; an origin and right origin in different types are refused; no reference to,
or deletion of, clocks of the server's clients that the guard has not seen (they would bind to
the server's future changes); no gap in a client's clocks; nothing inserted or deleted inside a
surrogate pair of a Y.Text.

Gaps: real clients never send one (their updates hold what their doc integrated), and yrs's
handling of such pending updates has left pycrdt docs whose ``get_update()`` panics. Structs
still waiting for another client's structs at the end stay pending in yrs: they are checked,
but nothing may rely on them, since another struct may later take the ids they wait for.
"""

from __future__ import annotations

from typing import Final

from .guard_memory import (
    COMPUTED,
    CONTAINER_NAMES,
    DEAD,
    META,
    ROOTS,
    STATE,
    UNKNOWN,
    Container,
    Memory,
    Where,
)
from .lib0 import VALUE_BIG_INT, VALUE_BIG_WHOLE, VALUE_BINARY, VALUE_NON_FINITE
from .update_analysis import Analysis, pair_clocks
from .update_structs import (
    ANY,
    DELETED,
    DOC,
    GC,
    KIND_NAMES,
    SKIP,
    STRING,
    TYPE,
    TYPE_ARRAY,
    TYPE_MAP,
    TYPE_NAMES,
    TYPE_TEXT,
    DecodedUpdate,
    Struct,
)

__all__ = ["CLOSE_INVALID_UPDATE", "CLOSE_UPDATE_TOO_LARGE", "Check", "UpdateRefused"]

CLOSE_INVALID_UPDATE: Final = 4400
CLOSE_UPDATE_TOO_LARGE: Final = 4413

_ALLOWED_TYPES: Final = frozenset((TYPE_ARRAY, TYPE_MAP, TYPE_TEXT))

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


def _refuse(reason: str, *, code: str = "parent", too_large: bool = False) -> UpdateRefused:
    return UpdateRefused(reason, code=code, too_large=too_large)


def _too_deep(reason: str) -> UpdateRefused:
    return UpdateRefused(reason, code="too_deep", too_large=True)


class Check(Analysis):
    """An analysis of a client's update that raises :class:`UpdateRefused` on a broken rule."""

    def __init__(
        self, memory: Memory, decoded: DecodedUpdate, max_depth: int, may_write_computed: bool
    ) -> None:
        super().__init__(memory, decoded)
        self.max_depth = max_depth
        self.may_write_computed = may_write_computed

    # --- where the analysis follows yrs, a check refuses ---------------------------------------

    def place(self, s: Struct) -> Where:
        self.check_content(s)
        self.check_server_refs(s)
        self.check_split(s)
        where = self.parent_of(s)
        if where is DEAD:
            return where
        if where is UNKNOWN:
            if s.kind == TYPE:
                raise _refuse(
                    f"{_name(s)} creates a shared type whose parent cannot be determined "
                    "(it depends on changes the server does not have)"
                )
            if s.kind == ANY and s.nesting:
                raise _too_deep(
                    f"{_name(s)} holds a JSON object or array but its parent cannot be "
                    "determined, so neither can its depth"
                )
            return where
        assert isinstance(where, Container)
        self.check_place(s, where)
        self.check_depth(s, where)
        return where

    def gap(self, s: Struct, state: int) -> None:
        upto = s.clock if s.clock > state else s.clock + s.length
        raise _refuse(
            f"the update skips clocks {state}..{upto} of client {s.client}, "
            "which the server does not have",
            code="gap",
        )

    def unknown_root(self, name: str) -> Where:
        raise _refuse(f"root '{name}' is not one of {', '.join(ROOTS)}", code="root")

    def not_a_type(self, ref: ID, s: Struct) -> Where:
        raise _refuse(f"{_name(s)} names {ref[0]}:{ref[1]} as parent, not a type")

    def neighbours_parent(self, s: Struct) -> Where:
        left = self.lookup(s.origin) if s.origin is not None else DEAD
        right = self.lookup(s.right_origin) if s.right_origin is not None else DEAD
        if left is None or right is None or left is UNKNOWN or right is UNKNOWN:
            return UNKNOWN  # what yrs picks depends on structs the guard has not seen
        if left is DEAD:
            return right
        if right is not DEAD and right is not left:
            raise _refuse(f"{_name(s)} has its origin and right origin in different types")
        return left

    def remember(self, s: Struct, where: Container, start: int, end: int) -> None:
        """A checked update is never learned: nothing to remember beyond what later structs of
        the update need."""

    def finish(self, pending: list[Struct]) -> None:
        for s in pending:
            if s.kind != SKIP and s.kind != GC:
                self.place(s)
        self.check_deletes()

    # --- rules ---------------------------------------------------------------------------------

    def check_content(self, s: Struct) -> None:
        kind = s.kind
        if kind == ANY:
            flags = s.flags
            if flags & VALUE_BIG_INT:
                raise _refuse(
                    f"{_name(s)} holds an integer outside ±(2^53−1); send it as a string",
                    code="value",
                )
            if flags & VALUE_BIG_WHOLE:
                raise _refuse(
                    f"{_name(s)} holds a whole number outside ±(2^53−1), which the doc would "
                    "show as such an integer; send it as a string",
                    code="value",
                )
            if flags & VALUE_NON_FINITE:
                raise _refuse(f"{_name(s)} holds NaN or Infinity, which JSON has not", code="value")
            if flags & VALUE_BINARY:
                raise _refuse(f"{_name(s)} holds binary data (Uint8Array)", code="value")
        elif kind == TYPE:
            ref = s.content.ref
            if ref not in _ALLOWED_TYPES:
                raise _refuse(
                    f"{_name(s)} creates a {TYPE_NAMES[ref]}; panels hold only "
                    "Y.Map, Y.Array and Y.Text",
                    code="content",
                )
        elif kind != STRING and kind != DELETED:
            what = "a subdocument" if kind == DOC else f"{KIND_NAMES[kind]} content"
            raise _refuse(f"{_name(s)} holds {what}, which panels do not use", code="content")

    def check_server_refs(self, s: Struct) -> None:
        servers = self.memory.server_clients
        if not servers:
            return
        for ref in (s.origin, s.right_origin, s.parent):
            if isinstance(ref, tuple) and ref[0] in servers and ref[1] >= self.state(ref[0]):
                raise _refuse(
                    f"{_name(s)} refers to {ref[0]}:{ref[1]}, a change the server has not made yet",
                    code="server_owned",
                )

    def check_split(self, s: Struct) -> None:
        """Refuse an item that would split a surrogate pair of a Y.Text.

        Yjs replaces both halves with U+FFFD; yrs 0.28 keeps the character whole on one side
        and writes a zero-length string: Yjs clients and the server then show different text.
        """
        origin = s.origin
        right = s.right_origin
        if (origin is not None and self.is_pair_start(*origin)) or (
            right is not None and self.is_pair_start(right[0], right[1] - 1)
        ):
            raise _refuse(
                f"{_name(s)} is inserted inside a character (a surrogate pair)", code="split"
            )
        if s.kind == STRING and not s.content.isascii():
            state = self.state(s.client)
            if s.clock < state < s.clock + s.length and state - 1 in pair_clocks(
                s.content, s.clock
            ):
                raise _refuse(f"{_name(s)} overlaps the doc inside a character", code="split")

    def check_place(self, s: Struct, where: Container) -> None:
        """The item's root may be written by this connection, and its container may hold it."""
        root = where.root
        if root != STATE:
            if root == META:
                raise _refuse(
                    f"{_name(s)} writes into {META}, which is server-owned", code="server_owned"
                )
            if root != COMPUTED:
                raise _refuse(f"root '{root}' is not one of {', '.join(ROOTS)}", code="root")
            if not self.may_write_computed:
                raise _refuse(
                    f"{_name(s)} writes into {COMPUTED}, which this connection may not change",
                    code="computed",
                )
        kind = s.kind
        container = where.kind
        if container == TYPE_MAP:
            if s.parent is not None and s.parent_sub is None:
                if where.level == 1:
                    raise _refuse(f"{_name(s)} is in root {root} without a key: roots are Y.Maps")
                raise _refuse(f"{_name(s)} is in a Y.Map without a key")
            if kind == STRING:
                raise _refuse(f"{_name(s)} puts Y.Text characters in a Y.Map", code="content")
        elif container == TYPE_ARRAY or container == TYPE_TEXT:
            if s.parent_sub is not None:
                raise _refuse(f"{_name(s)} has a map key but is in a {TYPE_NAMES[container]}")
            if container == TYPE_ARRAY and kind == STRING:
                raise _refuse(f"{_name(s)} puts Y.Text characters in a Y.Array", code="content")
            if container == TYPE_TEXT and kind != STRING and kind != DELETED:
                raise _refuse(
                    f"{_name(s)} puts {KIND_NAMES[kind]} content in a Y.Text "
                    "(a Y.Text holds only characters)",
                    code="content",
                )
        else:
            raise _refuse(
                f"{_name(s)} is in a {CONTAINER_NAMES.get(container, 'shared type')}, which panels "
                "do not use",
                code="content",
            )

    def check_depth(self, s: Struct, where: Container) -> None:
        limit = self.max_depth
        if s.kind == TYPE:
            level = where.level + 1
            if level >= limit:
                raise _too_deep(
                    f"{_name(s)} creates a {TYPE_NAMES[s.content.ref]} at level {level}; "
                    f"containers nest at most {limit - 1} levels"
                )
        elif s.kind == ANY and s.nesting and where.level + s.nesting >= limit:
            raise _too_deep(
                f"{_name(s)} holds a value reaching level {where.level + s.nesting}; "
                f"containers nest at most {limit - 1} levels"
            )

    def check_deletes(self) -> None:
        by_client: dict[int, list[tuple[int, int]]] = {}
        for client, clock, length in self.decoded.deletes:
            if length:
                by_client.setdefault(client, []).append((clock, clock + length))
        servers = self.memory.server_clients
        for client, spans in by_client.items():
            tables = [
                t
                for t in (self.memory.ranges.get(client), self.plan.ranges.get(client))
                if t is not None
            ]
            state = self.state(client)
            for start, end in _merged(spans):
                if self.is_pair_start(client, start - 1) or self.is_pair_start(client, end - 1):
                    raise _refuse(
                        f"the update deletes {client}:{start}..{end}, which splits a character "
                        "(a surrogate pair)",
                        code="split",
                    )
                if client in servers and end > state:
                    raise _refuse(
                        f"the update deletes {client}:{start}..{end}, changes the server has "
                        "not made yet",
                        code="server_owned",
                    )
                for table in tables:
                    for where in table.overlapping(start, end):
                        if isinstance(where, Container):
                            self.check_delete_in(where, client, start, end)

    def check_delete_in(self, where: Container, client: int, start: int, end: int) -> None:
        if where.root == META:
            raise _refuse(
                f"the update deletes from {META} ({client}:{start}..{end}), which is server-owned",
                code="server_owned",
            )
        if where.root == COMPUTED and not self.may_write_computed:
            raise _refuse(
                f"the update deletes from {COMPUTED} ({client}:{start}..{end}), which this "
                "connection may not change",
                code="computed",
            )


def _merged(spans: list[tuple[int, int]]) -> list[list[int]]:
    """Clock spans sorted, overlapping or touching ones merged."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def _name(s: Struct) -> str:
    return f"item {s.client}:{s.clock}"
