"""The server's stop does not wait on idle pauses (crdt_state/draining.py): a signal ends
uvicorn's main loop at once rather than at its next tick, and the shutdown goes on as soon as
the connections have closed. The full SIGTERM sequence (drain, 1012, flush) is
tests/test_shutdown.py's."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import uvicorn

from crdt_state import shutdown
from crdt_state.draining import DrainingServer

LONG = 60.0  # a tick or bound no test here may wait out


async def empty_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            kind = (await receive())["type"]
            await send({"type": f"{kind}.complete"})
            if kind == "lifespan.shutdown":
                return


def draining_server() -> DrainingServer:
    config = uvicorn.Config(empty_app, lifespan="on", timeout_graceful_shutdown=int(LONG))
    return DrainingServer(config)


async def test_a_signal_ends_the_main_loop_without_waiting_for_its_tick() -> None:
    server = draining_server()
    server.tick_seconds = LONG
    ticked = asyncio.Event()
    on_tick = server.on_tick

    async def first_tick(counter: int) -> bool:
        ticked.set()  # the loop goes on to its wait before this test runs again
        return await on_tick(counter)

    server.on_tick = first_tick  # type: ignore[method-assign]
    loop_task = asyncio.create_task(server.main_loop())
    await asyncio.wait_for(ticked.wait(), 5)
    assert server._waiter is not None
    # SIGINT, not SIGTERM: outside `capture_signals` nothing raises it again in this process.
    server.handle_exit(signal.SIGINT, None)
    await asyncio.wait_for(loop_task, 5)
    assert server.should_exit


async def test_the_main_loop_still_ticks_while_nothing_asks_it_to_stop() -> None:
    server = draining_server()
    server.tick_seconds = 0.001
    ticks = 0
    on_tick = server.on_tick

    async def counting(counter: int) -> bool:
        nonlocal ticks
        ticks += 1
        return await on_tick(counter) or ticks >= 5

    server.on_tick = counting  # type: ignore[method-assign]
    await asyncio.wait_for(server.main_loop(), 5)
    assert ticks == 5


async def test_shutdown_runs_the_drain_then_the_lifespan_and_stops_accepting() -> None:
    server = draining_server()
    config = server.config
    config.load()
    server.lifespan = config.lifespan_class(config)
    await server.lifespan.startup()
    listener = await asyncio.get_running_loop().create_server(asyncio.Protocol, "127.0.0.1", 0)
    server.servers = [listener]
    order: list[str] = []

    async def hook() -> None:
        order.append("drain" if not listener.is_serving() else "drain while accepting")

    remove = shutdown.on_drain(hook)
    try:
        await asyncio.wait_for(server.shutdown(), 5)
    finally:
        remove()
    assert order == ["drain"]
    assert server.lifespan.shutdown_event.is_set()
    assert not listener.is_serving()
