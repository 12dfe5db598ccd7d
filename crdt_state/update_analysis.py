"""One pass over a decoded update, in the order yrs 0.28 integrates it, planning what it adds.

yrs integrates a client's structs in clock order, each once its clock is next for that client
and the structs of other clients it names (origin, right origin, parent id) are present; the
rest stays pending. Structs the doc already has are skipped.

An item's parent is the one it names (a root name or the id of a type item), or, when it has an
origin or right origin, the parent of the item at its origin if that is an item, else that of
the item at its right origin, else none: the item is garbage (yrs stores a GC struct); it takes
its map key from the same neighbour. A parent id naming a GC'd range or a Deleted item (a
collected type) also makes garbage. The guard learns garbage only from GC structs and Deleted
items: a deletion makes nothing DEAD (whether yrs collected a deleted type is not in the update),
so deleted types still count for depth, a safe over-approximation.
"""

from __future__ import annotations

from heapq import heappop, heappush

from .guard_memory import (
    DEAD,
    META,
    TYPE_UNDEFINED,
    UNKNOWN,
    Container,
    Entry,
    KeyRanges,
    Memory,
    Plan,
    Ranges,
    Where,
    covered,
)
from .update_structs import ANY, DELETED, GC, SKIP, STRING, TYPE, DecodedUpdate, Struct

__all__ = ["Analysis", "pair_clocks"]

ID = tuple[int, int]


class Analysis:
    """Plans what a decoded update adds to the guard's memory, following yrs exactly.

    This is what ``learn`` runs on updates the doc applied. ``update_rules.Check`` extends it
    for clients' updates: it refuses wherever a rule is broken or yrs's choice would depend on
    structs the guard has not seen, and records only what later structs of the update need.
    """

    def __init__(self, memory: Memory, decoded: DecodedUpdate) -> None:
        self.memory = memory
        self.decoded = decoded
        self.plan = Plan()

    # --- the order of integration --------------------------------------------------------------

    def run(self) -> Plan:
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
                    self.gap(s, state)
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
        pending: list[Struct] = []
        for client, structs in structs_of.items():
            pending += structs[next_index[client] :]
        self.finish(pending)
        return self.plan

    def state(self, client: int) -> int:
        """The next clock of ``client`` the doc expects (as far as the guard knows)."""
        ranges = self.plan.ranges.get(client)
        if ranges is not None:
            return ranges.end
        held = self.memory.ranges.get(client)
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
        kind = s.kind
        if kind == GC:
            self.record(s.client, start, end, DEAD)
            return
        where = self.place(s)
        self.record(s.client, start, end, where)
        if kind == TYPE:
            if isinstance(where, Container):
                child: Where = Container(s.content.ref, where.level + 1, where.root, where.entry)
            else:
                child = where
            self.plan.types[(s.client, s.clock)] = child
        elif kind == STRING:
            if not s.content.isascii():
                pairs = {clock for clock in pair_clocks(s.content, s.clock) if clock >= start}
                if pairs:
                    self.plan.pairs.setdefault(s.client, set()).update(pairs)
        elif kind == DELETED:
            tombs = self.plan.tombs.get(s.client)
            if tombs is None:
                tombs = self.plan.tombs[s.client] = Ranges()
            tombs.append(start, end, DEAD)
        if isinstance(where, Container):
            self.remember(s, where, start, end)

    def record(self, client: int, start: int, end: int, where: Where) -> None:
        ranges = self.plan.ranges.get(client)
        if ranges is None:
            ranges = self.plan.ranges[client] = Ranges()
        ranges.append(start, end, where)

    # --- where a check parts from learning (update_rules.Check overrides these) ----------------

    def place(self, s: Struct) -> Where:
        """The container the item ``s`` lands in."""
        return self.parent_of(s)

    def gap(self, s: Struct, state: int) -> None:
        """``s`` comes after clocks the doc does not have: yrs keeps it and the rest pending."""

    def unknown_root(self, name: str) -> Where:
        root = self.plan.roots[name] = Container(TYPE_UNDEFINED, 1, name)
        return root

    def not_a_type(self, ref: ID, s: Struct) -> Where:
        """``s`` names an item that is not a type as its parent: yrs fails part-way through the
        update ("block parent must be ... shared ref type"); what it applied counts as nothing."""
        return DEAD

    def neighbours_parent(self, s: Struct) -> Where:
        """The parent ``s`` inherits: its left neighbour's if that is an item, else its right
        neighbour's, else none (garbage)."""
        left = self.lookup(s.origin) if s.origin is not None else None
        if left is not None and left is not DEAD:
            return left
        right = self.lookup(s.right_origin) if s.right_origin is not None else None
        if right is not None and right is not DEAD:
            return right
        return DEAD

    def remember(self, s: Struct, where: Container, start: int, end: int) -> None:
        """What only learning records: who writes ``$meta`` (the server), the keys of root map
        items, and the values of root map entries holding containers, with their depth."""
        plan = self.plan
        if where.root == META:
            plan.server_clients.add(s.client)
        kind = s.kind
        if where.level == 1:
            key = self.key_of(s)
            if key is None:  # not a map entry: a map does not render it
                return
            keys = plan.keys.get(s.client)
            if keys is None:
                keys = plan.keys[s.client] = KeyRanges()
            keys.append(start, end, key)
            if kind == TYPE:
                entry = Entry(where.root, key, s.client, start, end, 2)
                child = plan.types[(s.client, s.clock)]
                assert isinstance(child, Container)
                child.entry = entry
            elif kind == ANY and s.nesting:
                entry = Entry(where.root, key, s.client, start, end, 1 + s.nesting)
            else:
                return
            plan.entries.setdefault(s.client, {})[start] = entry
            return
        value = where.entry
        if value is None:
            return
        if kind == TYPE:
            level = where.level + 1
        elif kind == ANY:
            level = where.level + s.nesting
        else:
            return
        if level > value.deepest and level > plan.raised.get(value, 0):
            plan.raised[value] = level

    def finish(self, pending: list[Struct]) -> None:
        """After the structs: the values of root map entries the update deletes whole."""
        plan = self.plan
        for client, clock, length in self.decoded.deletes:
            for entries in (self.memory.entries.get(client), plan.entries.get(client)):
                if entries:
                    plan.dropped.extend(covered(entries, clock, clock + length))

    # --- lookups -------------------------------------------------------------------------------

    def lookup(self, ref: ID) -> Where | None:
        """The container the item at ``ref`` lives in (or DEAD/UNKNOWN); None: not present."""
        client, clock = ref
        held = self.memory.ranges.get(client)
        if held is not None and clock < held.end:
            return held.find(clock)
        ranges = self.plan.ranges.get(client)
        return ranges.find(clock) if ranges is not None else None

    def is_tomb(self, ref: ID) -> bool:
        client, clock = ref
        for table in (self.memory.tombs, self.plan.tombs):
            ranges = table.get(client)
            if ranges is not None and ranges.find(clock) is not None:
                return True
        return False

    def is_pair_start(self, client: int, clock: int) -> bool:
        """Is ``(client, clock)`` the first UTF-16 unit of a character outside the BMP?"""
        for table in (self.memory.pairs, self.plan.pairs):
            pairs = table.get(client)
            if pairs is not None and clock in pairs:
                return True
        return False

    def root(self, name: str) -> Where:
        root = self.memory.roots.get(name) or self.plan.roots.get(name)
        return root if root is not None else self.unknown_root(name)

    def type_at(self, ref: ID, s: Struct) -> Where:
        """The container created by the item ``ref`` that ``s`` names as its parent."""
        where = self.plan.types.get(ref)
        if where is None:
            where = self.memory.types.get(ref)
        if where is not None:
            return where
        found = self.lookup(ref)
        if found is None or found is UNKNOWN:
            return UNKNOWN
        if found is DEAD or self.is_tomb(ref):
            return DEAD  # yrs: the parent is GC'd or a collected type: garbage
        return self.not_a_type(ref, s)

    def parent_of(self, s: Struct) -> Where:
        parent = s.parent
        if isinstance(parent, str):
            return self.root(parent)
        if parent is not None:
            return self.type_at(parent, s)
        return self.neighbours_parent(s)

    def key_of(self, s: Struct) -> str | None:
        """The map key of ``s``: the one it names, or its neighbour's (as ``neighbours_parent``
        picks the neighbour)."""
        if s.parent is not None:
            return s.parent_sub
        for ref in (s.origin, s.right_origin):
            if ref is not None:
                where = self.lookup(ref)
                if where is not None and where is not DEAD:
                    return self.key_at(ref)
        return None

    def key_at(self, ref: ID) -> str | None:
        client, clock = ref
        for table in (self.memory.keys, self.plan.keys):
            keys = table.get(client)
            if keys is not None:
                key = keys.find(clock)
                if key is not None:
                    return key
        return None


def pair_clocks(text: str, clock: int) -> set[int]:
    """The clocks of the first UTF-16 unit of each character of ``text`` outside the BMP."""
    pairs = set()
    for char in text:
        if ord(char) > 0xFFFF:
            pairs.add(clock)
            clock += 2
        else:
            clock += 1
    return pairs
