"""The text of an AI context (docs/AI-CONTEXT.md): a workspace's panels, in markdown or
compact JSON, within a token budget. Every panel is shown in full when all fit; else
large strings, arrays and deep levels are shortened (prompt_budget.LEVELS), and past that
whole panels are omitted, last first; every cut is marked in the text and listed in the
answer. Pure: runs on a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .model import LogEntry, PanelState
from .prompt_budget import (
    FULL,
    JSON_MARKS,
    LEVELS,
    READABLE_MARKS,
    Cuts,
    compact_json,
    counted,
    estimate_tokens,
    fit_panels,
    one_line,
    readable,
    shorten,
)
from .prompt_changes import Listed, change_json, change_line

ROOTS = ("$state", "$computed")  # first, in this order; any other root after, sorted


@dataclass(slots=True)
class Shown:
    """How one panel appears: at `level` (None: omitted), with what was cut."""

    state: PanelState
    level: int | None
    cuts: Cuts = field(default_factory=Cuts)


@dataclass(slots=True)
class Rendered:
    text: str
    tokens: int
    panels: list[Shown]
    changes_shown: int  # of the listed changes, the newest this many are in the text
    truncated: bool


class Style(Protocol):
    def header(self, workspace: str | None, count: int) -> str: ...
    def legend(self) -> str: ...
    def change(self, panel_id: str, entry: LogEntry) -> str: ...
    def changes(self, items: list[str], not_shown: int, more: bool) -> str: ...
    def no_changes(self, count: int, more: bool) -> str: ...
    def panel(self, state: PanelState, level: int) -> tuple[str, Cuts]: ...
    def marker(self, omitted: list[PanelState], cap: int) -> str: ...
    def missing(self, ids: list[str], cap: int) -> str: ...
    def assemble(self, parts: Parts) -> str: ...
    def closing(self) -> str: ...
    def fallback(self, count: int) -> str: ...


@dataclass(slots=True)
class Parts:
    header: str
    legend: str = ""
    changes: str = ""
    panels: list[str] = field(default_factory=list)
    marker: str = ""
    missing: str = ""
    truncated: bool = False


def render_context(
    workspace: str,
    states: list[PanelState],
    missing: list[str],
    listed: Listed | None,
    style: Style,
    max_tokens: int,
) -> Rendered:
    """The context of `states` (in this order) in `style`, its estimate within
    `max_tokens`. The parts' estimates add up to about the whole's; should the whole come
    out over, it is planned again with the overshoot taken off, and as a last resort it is
    one line saying that nothing fits."""
    panels = _PanelCosts(states, style)
    items = [style.change(panel_id, entry) for panel_id, entry in listed.changes] if listed else []
    budget = max_tokens
    for _ in range(RETRIES):
        rendered = _attempt(workspace, panels, missing, listed, items, style, budget)
        if rendered is not None and rendered.tokens <= max_tokens:
            return rendered
        over = rendered.tokens - max_tokens if rendered is not None else max_tokens
        budget -= max(over, max_tokens // 20, 1)
    text = style.fallback(len(states))
    return Rendered(text, estimate_tokens(text), [Shown(s, None) for s in states], 0, True)


RETRIES = 5


def _attempt(
    workspace: str,
    panels: _PanelCosts,
    missing: list[str],
    listed: Listed | None,
    items: list[str],
    style: Style,
    budget: int,
) -> Rendered | None:
    """One plan within `budget` (None when not even the markers fit)."""
    states, count = panels.states, len(panels.states)
    header = style.header(workspace, count)
    if estimate_tokens(header) > budget // 4:  # a long workspace id is not worth it
        header = style.header(None, count)
    parts = Parts(header, missing=style.missing(missing, max(budget // 10, 1)))
    legend = style.legend()
    if estimate_tokens(legend) > budget // 10:  # the markers speak for themselves
        legend = ""
    fixed = (header, parts.missing, legend, style.closing())
    available = budget - sum(map(estimate_tokens, fixed))
    shown_changes = 0
    if listed is not None:
        floor = sum(panels.floor(i) for i in range(count))
        parts.changes, shown_changes = _fit_changes(style, items, listed.more, available, floor)
        available -= estimate_tokens(parts.changes)
    marker_cap = max(available // 10, estimate_tokens(style.marker(states, 0)))
    if available < 0:
        return None
    levels = fit_panels(count, panels.cost, panels.floor, available, marker_cap)
    shown = [Shown(state, level) for state, level in zip(states, levels, strict=True)]
    for index, item in enumerate(shown):
        if item.level is not None:
            text, item.cuts = panels.render(index, item.level)
            parts.panels.append(text)
            available -= panels.cost(index, item.level)
    omitted = [item.state for item in shown if item.level is None]
    if omitted:  # all that the panels left, for listing what they are
        parts.marker = style.marker(omitted, max(available, marker_cap))
    cut_any = any(item.cuts for item in shown)
    parts.legend = legend if cut_any else ""
    parts.truncated = bool(omitted) or cut_any or shown_changes < len(items)
    text = style.assemble(parts)
    return Rendered(text, estimate_tokens(text), shown, shown_changes, parts.truncated)


def _fit_changes(
    style: Style, items: list[str], more: bool, available: int, panels_floor: int
) -> tuple[str, int]:
    """The changes section with the newest changes that fit: all of them when they and
    every panel in full may fit, else within 30% of what is available."""
    costs = [estimate_tokens(item) + 1 for item in items]
    frame = estimate_tokens(style.changes([], len(items), more))
    everything = frame + sum(costs)
    cap = everything if everything + panels_floor <= available else available * 3 // 10
    if items and frame + costs[0] > cap:
        return style.no_changes(len(items), more), 0
    shown, used = 0, frame
    while shown < len(items) and used + costs[shown] <= cap:
        used += costs[shown]
        shown += 1
    return style.changes(items[:shown], len(items) - shown, more), shown


class _PanelCosts:
    """The panels' parts at each level, rendered once when first needed."""

    def __init__(self, states: list[PanelState], style: Style) -> None:
        self.states, self.style = states, style
        self._parts: dict[tuple[int, int], tuple[str, Cuts, int]] = {}
        self._floors: dict[int, int] = {}
        self._whole: dict[int, int] = {}  # the poorest level known to cut nothing

    def render(self, index: int, level: int) -> tuple[str, Cuts]:
        text, cuts, _ = self._part(index, level)
        return text, cuts

    def cost(self, index: int, level: int) -> int:
        return self._part(index, level)[2]

    def floor(self, index: int) -> int:
        """About the least the full part may cost, cheaply: the compact JSON of its roots
        at 6 characters a token (the estimate counts 5 letters a token at most; only runs
        of blanks inside strings go further)."""
        if index not in self._floors:
            view = self.states[index].view
            self._floors[index] = sum(len(compact_json(v)) for v in view.values()) // 6
        return self._floors[index]

    def _part(self, index: int, level: int) -> tuple[str, Cuts, int]:
        key = (index, level)
        if key not in self._parts:
            whole = self._whole.get(index)
            if whole is not None and level <= whole:  # nothing to cut at `whole` already
                self._parts[key] = self._parts[index, whole]
                return self._parts[key]
            text, cuts = self.style.panel(self.states[index], level)
            self._parts[key] = (text, cuts, estimate_tokens(text))
            if not cuts and (whole is None or level > whole):
                self._whole[index] = level  # the same text as every richer level
        return self._parts[key]


def _roots(view: dict[str, Any]) -> list[str]:
    return [r for r in ROOTS if r in view] + sorted(r for r in view if r not in ROOTS)


def _listing(
    head: str, names: list[str], cap: int, tail: Callable[[int, int], str], sep: str = ", "
) -> str:
    """`head`, then as many of `names` (`sep`-separated) as keep it within `cap` tokens,
    then `tail(how many were listed, how many were not)`."""
    used = estimate_tokens(head) + estimate_tokens(tail(1, len(names)))
    taken = 0
    for name in names:
        cost = estimate_tokens(name + sep)
        if used + cost > cap:
            break
        used += cost
        taken += 1
    return head + sep.join(names[:taken]) + tail(taken, len(names) - taken)


def _markdown_listing(head: str, names: list[str], cap: int) -> str:
    """`[head: a, b and 3 more]`, or `[head]` when no name fits."""
    text = _listing(head + ": ", names, cap, _and_more)
    return text if not text.endswith(": ]\n") else head + "]\n"


def _and_more(taken: int, rest: int) -> str:
    return f" and {rest:,} more]\n" if rest and taken else "]\n"


# --- markdown -----------------------------------------------------------------------------

LEGEND = (
    'Shortened to fit the token budget: "…" (N chars), [… N items], {… N keys} and '
    '"… N more" stand for what was left out.\n'
)


class Markdown:
    def header(self, workspace: str | None, count: int) -> str:
        name = f" {one_line(workspace)}" if workspace is not None else ""
        return f"# Workspace{name} · {count:,} panel{'' if count == 1 else 's'}\n"

    def legend(self) -> str:
        return LEGEND

    def change(self, panel_id: str, entry: LogEntry) -> str:
        return change_line(panel_id, entry)

    def changes(self, items: list[str], not_shown: int, more: bool) -> str:
        lines = ["", "## Changes, newest first", *items]
        if not_shown:
            lines.append(f"… {counted(not_shown, 'older change')} (left out: token budget)")
        if more:
            lines.append("… older changes not listed")
        if not items and not not_shown and not more:
            lines.append("(none)")
        return "\n".join(lines) + "\n"

    def no_changes(self, count: int, more: bool) -> str:
        return f"\n[Left out to fit the token budget: {counted(count, 'change')}]\n"

    def panel(self, state: PanelState, level: int) -> tuple[str, Cuts]:
        cuts = Cuts()
        lines = [""]
        body = []
        for root in _roots(state.view):
            value = state.view[root]
            if level != FULL:
                value = shorten(value, LEVELS[level], READABLE_MARKS, cuts)
            text = readable(value)
            if "\n" not in text:
                body.append(f"{root}: {text}")
                continue
            fence = "```"
            while fence in text:
                fence += "`"
            body += [f"{root}:", f"{fence}json", text, fence]
        note = " · shortened" if cuts else ""
        lines.append(f"## Panel {one_line(state.key.panel_id)} · version {state.version}{note}")
        return "\n".join(lines + body) + "\n", cuts

    def marker(self, omitted: list[PanelState], cap: int) -> str:
        names = [f"{one_line(s.key.panel_id)} v{s.version}" for s in omitted]
        head = f"\n[Left out to fit the token budget: {counted(len(omitted), 'panel')}"
        return _markdown_listing(head, names, cap)

    def missing(self, ids: list[str], cap: int) -> str:
        if not ids:
            return ""
        names = [one_line(panel_id) for panel_id in ids]
        return _markdown_listing(f"\n[Not found: {counted(len(ids), 'panel')}", names, cap)

    def assemble(self, parts: Parts) -> str:
        return "".join(
            [parts.header, parts.legend, parts.changes, *parts.panels, parts.marker, parts.missing]
        )

    def closing(self) -> str:
        return ""

    def fallback(self, count: int) -> str:
        return f"[All {count:,} panels left out: they do not fit the token budget.]\n"


# --- JSON ---------------------------------------------------------------------------------


JSON_LEGEND = (
    'Left out to fit the token budget: {"$keys":N} an object of N keys, {"$items":N} an '
    'array of N items, {"$more":N} or "$more":N N more, {"$head":…,"$chars":N} a string '
    "of N characters."
)


class Json:
    """One compact JSON object: {workspaceId, panelCount, panels: [{panelId, shortened?,
    state, version}], omitted?, missing?, changes?, changesNotShown?,
    olderChangesNotListed?, legend?, truncated}; keys in this order, within a panel in
    sorted order."""

    def header(self, workspace: str | None, count: int) -> str:
        name = f'"workspaceId":{compact_json(workspace)},' if workspace is not None else ""
        return f'{{{name}"panelCount":{count},"panels":['

    def legend(self) -> str:
        return f'"legend":{compact_json(JSON_LEGEND)},'

    def change(self, panel_id: str, entry: LogEntry) -> str:
        return compact_json(change_json(panel_id, entry))

    def changes(self, items: list[str], not_shown: int, more: bool) -> str:
        text = f'"changes":[{",".join(items)}],'
        if not_shown:
            text += f'"changesNotShown":{not_shown},'
        if more:
            text += '"olderChangesNotListed":true,'
        return text

    def no_changes(self, count: int, more: bool) -> str:
        return self.changes([], count, more)[len('"changes":[],') :]

    def panel(self, state: PanelState, level: int) -> tuple[str, Cuts]:
        cuts = Cuts()
        view = state.view
        if level != FULL:
            view = {r: shorten(v, LEVELS[level], JSON_MARKS, cuts) for r, v in view.items()}
        body: dict[str, Any] = {"panelId": state.key.panel_id, "version": state.version}
        body["state"] = view
        if cuts:
            body["shortened"] = True
        return compact_json(body) + ",", cuts

    def marker(self, omitted: list[PanelState], cap: int) -> str:
        names = [f"{compact_json(s.key.panel_id)}:{s.version}" for s in omitted]
        head = f'"omitted":{{"count":{len(omitted)},"panels":{{'
        return _listing(head, names, cap, lambda _, __: "}},", ",")

    def missing(self, ids: list[str], cap: int) -> str:
        if not ids:
            return ""
        names = [compact_json(panel_id) for panel_id in ids]
        head = f'"missing":{{"count":{len(ids)},"ids":['
        return _listing(head, names, cap, lambda _, __: "]},", ",")

    def assemble(self, parts: Parts) -> str:
        panels = ",".join(part[:-1] for part in parts.panels)
        rest = "".join([parts.marker, parts.missing, parts.changes, parts.legend])
        end = f'"truncated":{"true" if parts.truncated else "false"}}}'
        return f"{parts.header}{panels}],{rest}{end}"

    def closing(self) -> str:
        return '],"truncated":false}'

    def fallback(self, count: int) -> str:
        return f'{{"omitted":{{"count":{count}}},"truncated":true}}'


STYLES: dict[str, Style] = {"markdown": Markdown(), "json": Json()}
