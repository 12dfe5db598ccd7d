"""A room's actor: work in order, one step at a time; `call_first` and `post_first` go ahead
of what is queued (a join barrier's question and answer must not wait for a backlog)."""

from __future__ import annotations

import asyncio

from crdt_state.actor import Actor


async def test_work_runs_in_order_and_first_work_ahead_of_the_queue() -> None:
    actor = Actor("test", 100)
    ran: list[str] = []
    # Something is queued: the actor's task runs it, and what follows queues behind it.
    await actor.submit(ran.append, "a")  # idle: runs at once, in this task
    assert ran == ["a"]
    assert actor.post(ran.append, "b") and actor.post(ran.append, "c")
    assert actor.post_first(ran.append, "first")
    answer = asyncio.ensure_future(actor.call_first(lambda: list(ran)))
    assert not answer.done()
    await asyncio.wait_for(answer, 5)
    assert answer.result() == ["a", "first"]  # both went ahead of b and c
    await actor.call(lambda: None)
    assert ran == ["a", "first", "b", "c"]
    await actor.finish()


async def test_first_work_on_an_idle_or_closed_actor() -> None:
    actor = Actor("test", 10)
    ran: list[int] = []
    assert actor.post_first(ran.append, 1) and ran == [1]  # idle: at once
    assert await actor.call_first(lambda: 2) == 2
    await actor.finish()
    assert not actor.post_first(ran.append, 3) and ran == [1]


async def test_a_failing_first_call_raises_to_its_caller_and_the_actor_goes_on() -> None:
    actor = Actor("test", 10)
    ran: list[str] = []
    actor.post(ran.append, "queued")

    def fails() -> None:
        raise ValueError("no")

    try:
        await actor.call_first(fails)
    except ValueError as exc:
        assert str(exc) == "no"
    else:
        raise AssertionError("call_first swallowed the error")
    assert await actor.call(lambda: list(ran)) == ["queued"]
    await actor.finish()
