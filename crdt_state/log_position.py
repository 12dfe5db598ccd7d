"""Where a room's doc stands against the log: is it exactly the log's first `base` entries
(plus this room's own changes waiting to commit)?

Only then is the JSON Patch a room records for a change the patch of that change in log
order. A change committed under another version than expected (another replica wrote in
between), or any update applied from another replica, breaks that; patches are then left for
readers to compute in log order, until the room re-baselines against the log.
"""

from __future__ import annotations

from collections import OrderedDict


class LogPosition:
    def __init__(self, version: int) -> None:
        self.base = version
        self.exact = True
        self._outstanding: OrderedDict[str, int] = OrderedDict()  # change id -> expected

    def expect(self, change_id: str) -> int:
        """The version a new local change must get for its patch to be exact (0: none can)."""
        if not self.exact:
            return 0
        expected = self.base + len(self._outstanding) + 1
        self._outstanding[change_id] = expected
        return expected

    def committed(self, change_id: str, version: int | None) -> None:
        expected = self._outstanding.pop(change_id, None)
        if expected is not None and version == expected:
            self.base = version
        elif expected is not None:
            self._lose()

    def foreign_applied(self) -> None:
        self._lose()

    def rebaseline(self, version: int) -> None:
        """The doc was checked equal to the log's first `version` entries."""
        if not self._outstanding:
            self.base = version
            self.exact = True

    @property
    def settled(self) -> bool:
        return not self._outstanding

    def _lose(self) -> None:
        self.exact = False
        self._outstanding.clear()
