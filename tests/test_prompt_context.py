"""The AI context's parts in-process: the token estimate, shortening and its markers, the
two renderings, the budget plan, change lines, the versions format and the cache."""

from __future__ import annotations

import asyncio
import functools
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crdt_state.model import ChangeType, LogEntry, PanelKey, PanelState, TriggeredBy
from crdt_state.prompt_budget import (
    FULL,
    JSON_MARKS,
    LEVELS,
    OUTLINE,
    READABLE_MARKS,
    Cuts,
    estimate_tokens,
    fit_panels,
    readable,
    shorten,
)
from crdt_state.prompt_changes import Listed, change_line, format_versions, parse_versions
from crdt_state.prompt_context import ContextAnswer, ContextCache
from crdt_state.prompt_document import STYLES, render_context

WORDS = "sprint review deploy invoice budget quarter design customer notes follow up".split()
CJK = "数据分析报告客户会议记录预算设计评审部署发布计划任务完成进度"
BUDGETS = [200, 350, 500, 1000, 2000, 5000, 10000, 20000, 50000]


def panel_view(rng: random.Random, index: int) -> dict[str, Any]:
    """A panel of one of a few shapes: tasks, long notes, numbers, ids, CJK text, deep."""
    kind = index % 6
    if kind == 0:
        state: dict[str, Any] = {
            "tasks": [
                {
                    "id": str(uuid.UUID(int=rng.getrandbits(128))),
                    "title": " ".join(rng.choice(WORDS) for _ in range(6)),
                    "done": rng.random() < 0.5,
                    "priority": rng.randint(1, 5),
                }
                for _ in range(rng.randint(1, 60))
            ]
        }
    elif kind == 1:
        state = {"notes": " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 3000)))}
    elif kind == 2:
        state = {"series": [round(rng.uniform(-1e4, 1e5), 3) for _ in range(rng.randint(5, 800))]}
    elif kind == 3:
        state = {"ids": {f"k{i}": uuid.UUID(int=rng.getrandbits(128)).hex for i in range(40)}}
    elif kind == 4:
        state = {"标题": "".join(rng.choice(CJK) for _ in range(rng.randint(5, 500)))}
    else:
        state = {"tree": deep(rng, 0)}
    return {"$state": {"title": f"Panel {index}", **state}, "$computed": {"n": index}}


def deep(rng: random.Random, level: int) -> Any:
    if level >= 7:
        return rng.randint(0, 9)
    return {"name": rng.choice(WORDS), "kids": [deep(rng, level + 1) for _ in range(2)]}


def workspace(count: int, seed: int = 1) -> list[PanelState]:
    rng = random.Random(seed)
    return [
        PanelState(PanelKey("ws", f"panel-{i:03d}"), panel_view(rng, i), i + 1, "epoch")
        for i in range(count)
    ]


def entry(version: int, by: TriggeredBy, patch: list[dict[str, Any]], **extra: Any) -> LogEntry:
    values: dict[str, Any] = {
        "version": version,
        "epoch": "epoch",
        "update": b"",
        "change_type": ChangeType.UPDATED,
        "triggered_by": by,
        "trigger_source": None,
        "subject": None,
        "patch": patch,
        "occurred_at": datetime(2025, 1, 2, 10, 0, version, tzinfo=UTC),
        **extra,
    }
    return LogEntry(**values)


# --- the estimate -------------------------------------------------------------------------


def test_the_estimate_counts_dense_text_heavier_than_prose() -> None:
    assert estimate_tokens("") == 0
    prose = "the quick brown fox jumps over the lazy dog " * 10
    digits = "1234567890" * 44
    hexes = uuid.uuid4().hex * 14
    cjk = CJK * 15
    assert estimate_tokens(prose) < estimate_tokens(digits) < estimate_tokens(cjk)
    assert estimate_tokens(prose) < estimate_tokens(hexes)
    assert estimate_tokens("a" * 10) < estimate_tokens("a" * 10 + "é")


def test_the_estimate_of_parts_bounds_the_whole() -> None:
    rng = random.Random(3)
    for state in workspace(30):
        text = readable(state.view)
        cut = rng.randrange(len(text))
        assert estimate_tokens(text) <= estimate_tokens(text[:cut]) + estimate_tokens(text[cut:])


def test_the_estimate_is_at_least_what_real_tokenizers_count() -> None:
    """Against the cl100k and o200k BPE tokenizers (bpe-openai ships their data; it is not a
    dependency of the project: the test runs where it is installed)."""
    bpe = pytest.importorskip("bpe_openai")
    encodings = [bpe.get_encoding(name) for name in ("cl100k_base", "o200k_base")]
    states = workspace(60, seed=5)
    for style in STYLES.values():
        for budget in BUDGETS:
            text = render_context("ws", states, [], None, style, budget).text
            for encoding in encodings:
                assert len(encoding.encode(text)) <= estimate_tokens(text)


# --- shortening ---------------------------------------------------------------------------


def test_shortening_marks_every_cut_with_its_size() -> None:
    value = {"s": "x" * 500, "a": list(range(50)), "deep": {"b": {"c": {"d": 1}}}}
    cuts = Cuts()
    short = shorten(value, LEVELS[6], READABLE_MARKS, cuts)
    text = readable(short)
    assert '"' + "x" * 32 + '…" (500 chars)' in text
    assert "[0,1,… 48 more]" in text  # 2 items kept of 50
    assert '"deep": {"b":{"c":{… 1 key}}}' in text  # collapsed at depth 3
    assert (cuts.strings, cuts.arrays, cuts.objects) == (1, 1, 1)


def test_json_marks_keep_the_value_json() -> None:
    value = {"s": "y" * 300, "a": list(range(20)), "o": {f"k{i}": i for i in range(40)}}
    cuts = Cuts()
    short = shorten(value, LEVELS[6], JSON_MARKS, cuts)
    assert short["s"] == {"$head": "y" * 32, "$chars": 300}
    assert short["a"] == [0, 1, {"$more": 18}]
    assert short["o"]["$more"] == 28 and len(short["o"]) == 13
    outline = shorten(value, LEVELS[OUTLINE], JSON_MARKS, Cuts())
    assert outline == {
        "a": {"$items": 20},
        "o": {"$keys": 40},
        "s": {"$head": "y" * 16, "$chars": 300},
    }
    assert shorten(value, LEVELS[FULL], JSON_MARKS, Cuts()) == value


def test_readable_json_stays_on_one_line_when_short_and_packs_scalars() -> None:
    assert readable({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    long = readable({"items": list(range(100))})
    lines = long.split("\n")
    assert lines[0] == "{" and lines[-1] == "}"
    assert all(len(line) <= 80 for line in lines) and len(lines) < 20


# --- the plan -----------------------------------------------------------------------------


def test_the_plan_stays_within_what_is_available() -> None:
    rng = random.Random(11)
    for _ in range(200):
        count = rng.randint(1, 40)
        costs = {(i, lv): 0 for i in range(count) for lv in range(len(LEVELS))}
        for i in range(count):
            value = rng.randint(5, 30)  # the outline
            for level in reversed(range(len(LEVELS))):
                costs[i, level] = value
                value += rng.randint(0, 400)
        available = rng.randint(20, 8000)
        cost = functools.partial(lambda table, i, lv: table[i, lv], costs)
        floor = functools.partial(lambda table, i: table[i, FULL] // 2, costs)
        levels = fit_panels(count, cost, floor, available, 15)
        kept = [lv for lv in levels if lv is not None]
        assert levels[: len(kept)] == kept  # panels are omitted last first
        used = sum(costs[i, lv] for i, lv in enumerate(levels) if lv is not None)
        assert used <= available - (15 if len(kept) < count else 0)


def test_everything_is_shown_in_full_when_it_fits() -> None:
    states = workspace(6)
    for name, style in STYLES.items():
        rendered = render_context("ws", states, [], None, style, 1_000_000)
        assert not rendered.truncated
        assert all(item.level == FULL and not item.cuts for item in rendered.panels)
        if name == "json":
            body = json.loads(rendered.text)
            assert [p["state"] for p in body["panels"]] == [s.view for s in states]
        else:
            assert '"Panel 5"' in rendered.text and "shortened" not in rendered.text


@pytest.mark.parametrize("name", sorted(STYLES))
def test_fifty_panels_fit_every_budget_and_every_cut_is_marked(name: str) -> None:
    states = workspace(50)
    style = STYLES[name]
    for budget in BUDGETS:
        rendered = render_context("ws", states, ["gone"], None, style, budget)
        assert rendered.tokens == estimate_tokens(rendered.text) <= budget, budget
        shown = [item for item in rendered.panels if item.level is not None]
        omitted = [item for item in rendered.panels if item.level is None]
        assert rendered.panels[: len(shown)] == shown  # omitted last first
        assert shown, f"budget {budget}: no panel at all"
        assert rendered.truncated  # 50 such panels never fit 50,000 tokens
        text = rendered.text
        if name == "json":
            body = json.loads(text)
            listed = {p["panelId"]: p for p in body["panels"]}
            assert [p.state.key.panel_id for p in shown] == list(listed)
            assert all(listed[p.state.key.panel_id]["version"] == p.state.version for p in shown)
            assert all(("shortened" in listed[p.state.key.panel_id]) == bool(p.cuts) for p in shown)
            if omitted:
                assert body["omitted"]["count"] == len(omitted)
            assert body["missing"]["count"] == 1 and body["truncated"] is True
        else:
            for item in shown:
                heading = f'## Panel "{item.state.key.panel_id}" · version {item.state.version}'
                assert heading in text
                assert (heading + " · shortened" in text) == bool(item.cuts)
            if omitted:
                assert f"[Left out to fit the token budget: {len(omitted)} panel" in text
            assert "[Not found: 1 panel" in text


def test_a_larger_budget_shows_more() -> None:
    states = workspace(50)
    shown = []
    for budget in BUDGETS:
        rendered = render_context("ws", states, [], None, STYLES["markdown"], budget)
        shown.append(sum(1 for item in rendered.panels if item.level is not None))
    assert shown == sorted(shown) and shown[0] < shown[-1] == 50


def test_rendering_is_deterministic() -> None:
    first = render_context("ws", workspace(20), [], None, STYLES["markdown"], 3000)
    again = render_context("ws", workspace(20), [], None, STYLES["markdown"], 3000)
    assert first.text == again.text


def test_a_tiny_budget_says_that_nothing_fits() -> None:
    states = [PanelState(PanelKey("w" * 200, "p"), {"$state": {"a": 1}}, 1, "e")]
    rendered = render_context("w" * 200, states, [], None, STYLES["markdown"], 50)
    assert rendered.tokens <= 50
    assert "w" * 200 not in rendered.text  # the header went short


# --- changes ------------------------------------------------------------------------------


def test_change_lines_say_when_what_and_who() -> None:
    ai = entry(
        7,
        TriggeredBy.AI,
        [
            {"op": "replace", "path": "/$state/a", "value": "z" * 200},
            {"op": "remove", "path": "/b"},
        ],
        trigger_source="planner",
        subject="bot-1",
    )
    line = change_line("p1", ai)
    assert line.startswith('- 2025-01-02T10:00:07Z "p1" v7 by ai ("planner", subject "bot-1"): ')
    assert 'replace /$state/a = "zzz' in line and "(200 chars)" in line
    assert line.endswith("remove /b")
    many = entry(
        8, TriggeredBy.SYSTEM, [{"op": "add", "path": f"/$state/{i}", "value": i} for i in range(9)]
    )
    assert change_line("p1", many).endswith("add /$state/3 = 3; (+5 more operations)")
    assert " by system: " in change_line("p1", many)


def test_changes_are_listed_newest_first_within_their_share() -> None:
    states = workspace(3)
    changes = [
        ("panel-001", entry(v, TriggeredBy.USER, [{"op": "add", "path": "/$state/x", "value": v}]))
        for v in range(40, 0, -1)
    ]
    listed = Listed(changes, more=True)
    small = render_context("ws", states, [], listed, STYLES["markdown"], 400)
    large = render_context("ws", states, [], listed, STYLES["markdown"], 50_000)
    assert 0 < small.changes_shown < 40 and large.changes_shown == 40
    assert f"… {40 - small.changes_shown} older changes (left out: token budget)" in small.text
    assert "… older changes not listed" in large.text
    lines = [line for line in large.text.split("\n") if line.startswith("- ")]
    assert lines[0].startswith("- 2025-01-02T10:00:40Z") and len(lines) == 40
    assert small.tokens <= 400


def test_versions_round_trip_any_panel_id() -> None:
    pairs = [("p1", 3), ("a,b=c", 7), ("数据 %", 12)]
    text = format_versions(pairs)
    assert text.isascii() and text.count(",") == 2
    assert parse_versions(text) == tuple(pairs)
    assert parse_versions("p1") is None and parse_versions("p1=x") is None


# --- the cache ----------------------------------------------------------------------------


def answer(tag: str, size: int) -> ContextAnswer:
    return ContextAnswer(b"x" * size, tag, "")


def test_the_cache_is_bounded_by_entries_and_bytes() -> None:
    cache = ContextCache(max_entries=3, max_bytes=1000)
    for tag in "abcd":
        cache.put(tag, answer(tag, 10))
    assert cache.get("a") is None and cache.get("d") is not None
    cache.get("b")  # used: "c" is the oldest now
    cache.put("e", answer("e", 240))
    cache.put("f", answer("f", 240))
    cache.put("g", answer("g", 240))
    stats = cache.stats()
    assert stats["bytes"] <= 1000 and stats["entries"] <= 3
    assert cache.get("c") is None and stats["contextEvictions"] >= 3
    cache.put("huge", answer("huge", 251))  # over a quarter of the bytes: not kept
    assert cache.get("huge") is None


async def test_one_rendering_serves_concurrent_requests() -> None:
    cache = ContextCache()
    started = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    async def produce() -> ContextAnswer:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        result = answer("t", 5)
        cache.put("t", result)
        return result

    first = asyncio.ensure_future(cache.obtain("t", produce))
    await started.wait()
    second = asyncio.ensure_future(cache.obtain("t", produce))  # first runs before release
    release.set()
    (one, how_one), (two, how_two) = await asyncio.gather(first, second)
    assert calls == 1 and one is two
    assert (how_one, how_two) == ("rendered", "joined")
    third, how = await cache.obtain("t", produce)
    assert how == "hit" and third is one and calls == 1


def test_time_in_changes_is_utc() -> None:
    moment = datetime(2025, 1, 2, 12, 0, tzinfo=UTC) + timedelta(hours=1)
    line = change_line("p", entry(1, TriggeredBy.USER, [], occurred_at=moment))
    assert "2025-01-02T13:00:00Z" in line and line.endswith(": updated")
