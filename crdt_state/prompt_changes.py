"""What changed in a workspace, for an LLM prompt (docs/AI-CONTEXT.md, "Changes"): which
changes a context lists (`changesSince` a version, a time or the versions an agent last
saw; or the `recentChanges` newest) and each as one readable line, derived from the JSON
Patch the log keeps with it: when, which panel and version, by whom (user, ai or system,
with the trigger source and the token's subject) and what.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

from .errors import PanelNotFound
from .model import LogEntry, PanelKey, PanelState
from .panels import PanelService
from .prompt_budget import READABLE_MARKS, Cuts, Limits, one_line, shorten
from .snapshot_records import bounded

MAX_CHANGES = 200  # listed at most per answer (newest first)
OPS_PER_CHANGE = 4  # operations spelled out per change line; the rest counted
VALUE_CHARS = 60  # an operation's value, shortened
HISTORY_CONCURRENCY = 8
_VALUE_LIMITS = Limits(40, 3, 6, 2)


@dataclass(frozen=True, slots=True)
class ChangesSince:
    """Which changes to list. `kind`: "recent" (the `count` newest), "version" (versions
    above `count` in each panel), "versions" (above each panel's own, `versions`; every
    change of a panel not named) or "time" (at or after `moment`)."""

    kind: str
    count: int = 0
    moment: datetime | None = None
    versions: tuple[tuple[str, int], ...] = ()

    def key(self) -> tuple[Any, ...]:
        moment = self.moment.isoformat() if self.moment is not None else None
        return (self.kind, self.count, moment, self.versions)

    def threshold(self, panel_id: str) -> int:
        if self.kind == "version":
            return self.count
        if self.kind == "versions":
            return dict(self.versions).get(panel_id, 0)
        return 0


def format_versions(pairs: list[tuple[str, int]]) -> str:
    """`p1=3,p2=7`: the panels' versions, ids percent-encoded (so a ',' or '=' in an id,
    or any non-ASCII character, cannot be misread): the `versions` of an answer, its
    X-Panel-Versions header, and what `changesSince` takes back."""
    return ",".join(f"{quote(panel_id, safe='')}={version}" for panel_id, version in pairs)


def parse_versions(text: str) -> tuple[tuple[str, int], ...] | None:
    """The pairs of a `format_versions` text; None when it is not one."""
    pairs = []
    for part in text.split(","):
        name, sep, number = part.rpartition("=")
        if not sep or not name or not number.isascii() or not number.isdigit():
            return None
        pairs.append((unquote(name, errors="strict"), int(number)))
    return tuple(pairs)


@dataclass(frozen=True, slots=True)
class Listed:
    """The changes a context lists, newest first; `more`: older ones exist that are not."""

    changes: list[tuple[str, LogEntry]]
    more: bool


async def read_changes(
    panels: PanelService, states: list[PanelState], since: ChangesSince
) -> Listed:
    """The changes `since` asks for, of the panels in `states` (their current epoch, up to
    the version each state is of), newest first, at most MAX_CHANGES (`count` for
    "recent")."""
    cap = min(since.count, MAX_CHANGES) if since.kind == "recent" else MAX_CHANGES
    if cap == 0 or not states:
        return Listed([], False)
    jobs = [functools.partial(_panel_changes, panels, s, since, cap) for s in states]
    found = await bounded(HISTORY_CONCURRENCY, jobs)
    merged = [
        (state.key.panel_id, entry)
        for state, (entries, _) in zip(states, found, strict=True)
        for entry in entries
    ]
    merged.sort(key=lambda item: (-item[1].occurred_at.timestamp(), item[0], -item[1].version))
    more = len(merged) > cap or any(truncated for _, truncated in found)
    return Listed(merged[:cap], more)


async def _panel_changes(
    panels: PanelService, state: PanelState, since: ChangesSince, cap: int
) -> tuple[list[LogEntry], bool]:
    threshold = since.threshold(state.key.panel_id)
    if threshold > state.version:  # versions of an earlier epoch: this one's are all new
        threshold = 0
    try:
        entries, total = await panels.history(
            PanelKey(state.key.workspace_id, state.key.panel_id),
            limit=cap,
            since=since.moment if since.kind == "time" else None,
        )
    except PanelNotFound:
        return [], False
    kept = [
        entry
        for entry in entries
        if entry.epoch == state.epoch and threshold < entry.version <= state.version
    ]
    # Older ones in this epoch may be left: the page was full and reached no older entry.
    truncated = total > len(entries) and bool(kept) and kept[-1] is entries[-1]
    return kept, truncated


# --- lines --------------------------------------------------------------------------------


def when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def author(entry: LogEntry) -> str:
    """`ai ("planner", subject "bot-1")`: the kind, then the source and the subject."""
    details = []
    if entry.trigger_source:
        details.append(_quoted(entry.trigger_source))
    if entry.subject:
        details.append(f"subject {_quoted(entry.subject)}")
    kind = entry.triggered_by.value
    return f"{kind} ({', '.join(details)})" if details else kind


def operations(entry: LogEntry) -> list[str]:
    """The change's operations as text (`replace /$state/a = 2`), at most OPS_PER_CHANGE
    then how many more."""
    patch = entry.patch or []
    texts = [_operation(op) for op in patch[:OPS_PER_CHANGE]]
    if len(patch) > OPS_PER_CHANGE:
        texts.append(f"(+{len(patch) - OPS_PER_CHANGE:,} more operations)")
    return texts


def summary(entry: LogEntry) -> str:
    kind = entry.change_type.value
    ops = operations(entry)
    if not ops:
        return kind
    text = "; ".join(ops)
    return text if kind == "updated" else f"{kind}: {text}"


def change_line(panel_id: str, entry: LogEntry) -> str:
    """One readable line: `- 2025-01-02T10:00:00Z "p1" v8 by ai ("planner"): replace …`."""
    return (
        f"- {when(entry.occurred_at)} {one_line(panel_id)} v{entry.version} "
        f"by {author(entry)}: {summary(entry)}"
    )


def change_json(panel_id: str, entry: LogEntry) -> dict[str, Any]:
    """A change in the JSON rendering (keys sorted)."""
    body: dict[str, Any] = {
        "at": when(entry.occurred_at),
        "by": entry.triggered_by.value,
        "change": entry.change_type.value,
        "ops": operations(entry),
        "panelId": panel_id,
        "version": entry.version,
    }
    if entry.trigger_source:
        body["source"] = entry.trigger_source
    if entry.subject:
        body["subject"] = entry.subject
    return body


def change_meta(panel_id: str, entry: LogEntry, shown: bool) -> dict[str, Any]:
    """A change in the answer's `changes` (metadata for the agent, not counted)."""
    return {
        "panelId": panel_id,
        "version": entry.version,
        "epoch": entry.epoch,
        "changeType": entry.change_type.value,
        "triggeredBy": entry.triggered_by.value,
        "triggerSource": entry.trigger_source,
        "subject": entry.subject,
        "occurredAt": entry.occurred_at.isoformat(),
        "summary": summary(entry),
        "shown": shown,
    }


def _operation(op: Any) -> str:
    if not isinstance(op, dict):
        return "?"
    kind, path = str(op.get("op", "?")), str(op.get("path", ""))
    if kind in ("move", "copy"):
        return f"{kind} {op.get('from', '')} → {path}"
    if "value" in op:
        return f"{kind} {path} = {_value(op['value'])}"
    return f"{kind} {path}"


def _quoted(text: str) -> str:
    return one_line(text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…")


def _value(value: Any) -> str:
    text = one_line(shorten(value, _VALUE_LIMITS, READABLE_MARKS, Cuts()))
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"
