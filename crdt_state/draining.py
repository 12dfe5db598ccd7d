"""uvicorn's server, stopping in the order crdt_state/shutdown.py describes, without idle pauses.

On SIGTERM: stop accepting, drain (the app's hooks: clients hand over what they sent, sockets
close with 1012), let the HTTP connections finish, then the app's lifespan (which flushes the
log). uvicorn's own loop notices a signal only at its next 0.1 s tick and its shutdown pauses
0.1 s before waiting for connections: together about 0.2 s of a restart spent waiting for
nothing (docs/OPERATIONS.md, "Shutdown"). Here the signal wakes the loop at once, and the
shutdown waits for the connections themselves, checking often.

Imported only by `crdt-state serve` (uvicorn is a server dependency, not a library one).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from types import FrameType

import uvicorn

from . import shutdown

log = logging.getLogger(__name__)

TICK_SECONDS = 0.1  # uvicorn's tick: the date header and max-requests checks
POLL_SECONDS = 0.01  # while waiting for connections and requests to end


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class DrainingServer(uvicorn.Server):
    """Stops as soon as it is told to, in the drain order (module docstring)."""

    tick_seconds = TICK_SECONDS

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        loop, waiter = self._loop, self._waiter
        if loop is not None and waiter is not None and not loop.is_closed():
            # A signal handler runs between two bytecodes of the loop's own thread: hand the
            # wake-up to the loop rather than touch the future here.
            loop.call_soon_threadsafe(_wake, waiter)

    async def main_loop(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(self.tick_seconds, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
            should_exit = await self.on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # no new connection from here on
        for sock in sockets or []:
            sock.close()
        await shutdown.drain()
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()  # idle keep-alive connections close; busy ones after their reply
        try:
            await asyncio.wait_for(self._settled(), self.config.timeout_graceful_shutdown)
        except TimeoutError:
            log.error("cancelling %d request(s): the shutdown's bound has passed", len(state.tasks))
            for task in state.tasks:
                task.cancel(msg="the shutdown's bound has passed")
        if not self.force_exit:
            await self.lifespan.shutdown()

    async def _settled(self) -> None:
        """Every connection closed and every request finished (uvicorn keeps no event for it)."""
        state = self.server_state
        while (state.connections or state.tasks) and not self.force_exit:  # noqa: ASYNC110
            await asyncio.sleep(POLL_SECONDS)
        for server in self.servers:
            await server.wait_closed()
