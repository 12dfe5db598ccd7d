"""The SQLite log's own thread (adapters/sqlite_thread.py): calls in order, outcomes to the
caller, and what an executor of one worker promised: cancelled calls skipped, no call after
stop, the thread gone with its owner."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from adapters.sqlite_thread import SerialThread

T = TypeVar("T")


def _threads(name: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == name]


async def test_calls_run_one_after_the_other_in_order_and_answer_their_caller() -> None:
    worker = SerialThread("t-order")
    seen: list[int] = []
    callers: set[int] = set()

    def call(n: int) -> int:
        callers.add(threading.get_ident())
        seen.append(n)
        return n * 10

    answers = await _within(
        asyncio.gather(*(worker.submit(lambda n=n: call(n)) for n in range(200)))
    )
    assert answers == [n * 10 for n in range(200)]
    assert seen == list(range(200))
    assert callers == {_threads("t-order")[0].ident} != {threading.get_ident()}

    def fail() -> None:
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        await _within(worker.submit(fail))
    assert await _within(worker.submit(lambda: "still serving")) == "still serving"
    worker.stop()


async def test_a_call_cancelled_before_the_thread_takes_it_does_not_run() -> None:
    worker = SerialThread("t-cancel")
    release = threading.Event()
    ran: list[str] = []
    busy = worker.submit(lambda: release.wait(10))
    waiting = worker.submit(lambda: ran.append("cancelled one"))
    waiting.cancel()
    after = worker.submit(lambda: ran.append("next one"))
    release.set()
    assert await _within(busy) is True
    await _within(after)
    assert ran == ["next one"]
    worker.stop()


async def test_after_stop_new_calls_are_refused_and_queued_ones_still_run() -> None:
    worker = SerialThread("t-stop")
    release = threading.Event()
    busy = worker.submit(lambda: release.wait(10))
    queued = worker.submit(lambda: "queued before stop")
    worker.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        worker.submit(lambda: None)
    release.set()
    assert await _within(busy) is True
    assert await _within(queued) == "queued before stop"
    for thread in _threads("t-stop"):
        thread.join(5)
        assert not thread.is_alive()


def test_the_thread_ends_when_its_owner_is_dropped_without_stop() -> None:
    worker = SerialThread("t-dropped")
    assert asyncio.run(_answer(worker)) == 1
    [thread] = _threads("t-dropped")
    del worker
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()


def test_an_answer_for_a_loop_that_has_closed_does_not_stop_the_thread() -> None:
    worker = SerialThread("t-closed-loop")
    release = threading.Event()

    async def leave_a_call_behind() -> None:
        worker.submit(lambda: release.wait(10))

    asyncio.run(leave_a_call_behind())  # that loop is closed before the call ends
    release.set()
    assert asyncio.run(_answer(worker)) == 1  # a later loop is served all the same
    worker.stop()


async def _answer(worker: SerialThread) -> int:
    return await _within(worker.submit(lambda: 1))


async def _within(waited: Awaitable[T]) -> T:
    """Bounded: a thread that died must fail the test, not hang it."""
    return await asyncio.wait_for(waited, 5)
