"""Check a client's Yjs update against the structure of a panel doc before pycrdt sees it.

Some updates crash or poison pycrdt: 20,000 nested Y.Maps in one update overflow the native
stack when the doc is rendered (the process dies, no exception), a few hundred make rendering
fail, and nesting can grow one level per update under types created long ago. So every update
from a client goes through ``UpdateGuard.check`` first: it is decoded in pure Python
(``update_decoder``) and checked (``update_rules``) against what the guard knows of the doc
(``guard_memory``), following it in the order yrs would integrate it (``update_analysis``).

``UpdateGuard.learn`` records every update the doc applied: the room calls it with each
transaction's ``event.update`` (``doc.observe``), and a guard for a loaded doc starts with
``learn(doc.get_update())``. Give ``learn`` only what the doc integrated, never a raw client
update (yrs may keep part of that pending, and another struct may later take its ids).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from .guard_memory import COMPUTED, META, ROOTS, STATE, Container, Memory, Plan
from .lib0 import (
    AnyTooDeep,
    MalformedUpdate,
)
from .update_analysis import Analysis
from .update_decoder import (
    decode_update,
)
from .update_rules import CLOSE_INVALID_UPDATE, CLOSE_UPDATE_TOO_LARGE, Check, UpdateRefused
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

MAX_CLOCK: Final = 2**32 - 1
"""yrs 0.28 keeps clocks in 32 bits: larger ones are truncated, ranges across 2^32 panic."""
_LEARN_ANY_DEPTH: Final = 1_000_000  # trusted updates: decoded iteratively, no real limit

ID = tuple[int, int]


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
        self._memory = Memory(server_clients)

    def check(self, update: bytes, *, may_write_computed: bool) -> Plan:
        """Raise :class:`UpdateRefused` unless a client may apply ``update``; change nothing.
        Returns what learning it would record: once the doc applied it, ``commit`` that
        instead of learning the update again (the same analysis, decoded once)."""
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
        return Check(self._memory, decoded, self.max_depth, may_write_computed).run()

    def commit(self, plan: Plan) -> None:
        """Record a checked update (``check``'s result) that the doc has applied."""
        self._memory.commit(plan)

    def learn(self, update: bytes) -> None:
        """Record an update the doc has applied (trusted). Raises MalformedUpdate, changing
        nothing, if it cannot be decoded."""
        decoded = decode_update(update, max_any_depth=_LEARN_ANY_DEPTH, allow_empty_strings=True)
        self._memory.commit(Analysis(self._memory, decoded).run())

    @property
    def max_level(self) -> int:
        """The deepest container level the guard knows of (1: only the roots)."""
        return self._memory.max_level

    def level_of(self, type_id: ID) -> int | None:
        """The level of the shared type created by the item ``type_id`` (None: unknown/dead)."""
        where = self._memory.types.get(type_id)
        return where.level if isinstance(where, Container) else None

    def too_deep(self, min_level: int) -> set[tuple[str, str]]:
        """The entries ``(root name, key)`` of the root maps whose value holds a container (a
        type, or a JSON object/array inside an Any value) at level ``min_level`` or deeper.

        For rendering a doc whose log holds structures too deep to render safely: use it after
        ``learn(doc.get_update())``. Levels are the guard's: a root map is at level 1, the value
        of one of its entries at level 2. An entry leaves the result when the guard learns that
        its value was deleted or replaced. What it cannot tell: that the deep part of a value
        was deleted while the value stayed (the entry stays listed until a guard learns the
        doc's state afresh), or that a value spread over several Any elements was deleted piece
        by piece (Yjs and pycrdt write one element a map entry). Items of a root that have no
        key (a root used as an array) are not entries: a map does not render them.
        """
        return self._memory.too_deep(min_level)

    def stats(self) -> dict[str, int]:
        memory = self._memory
        return {
            "clients": len(memory.ranges),
            "ranges": sum(len(r.starts) for r in memory.ranges.values()),
            "types": len(memory.types),
            "max_level": memory.max_level,
            "keys": sum(len(r.starts) for r in memory.keys.values()),
            "entries": sum(len(entries) for entries in memory.entries.values()),
        }

    def _dump(self) -> object:
        """Everything the guard holds, comparable with ==: for tests."""
        return self._memory.dump()
