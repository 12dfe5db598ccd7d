"""pycrdt-websocket as its documentation serves it: `WebsocketServer` behind `ASGIServer`, on
uvicorn (the same uvicorn and websockets implementation as crdt-state). Documents in memory.

    .bench/pycrdt-websocket/bin/python pycrdt_websocket_server.py --port P

Run by bench/launchers.py with the venv the bench installs; not importable from crdt-state.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

import uvicorn
from pycrdt.websocket import ASGIServer, WebsocketServer


def keep_serving(exception: Exception, log: logging.Logger) -> bool:
    """Log a client's error and serve on (a client leaving is not worth a line)."""
    errors = exception.exceptions if isinstance(exception, BaseExceptionGroup) else [exception]
    if any(type(error).__name__ != "ClientDisconnected" for error in errors):
        log.warning("client error: %r", exception)
    return True


async def main(host: str, port: int) -> None:
    async with WebsocketServer(exception_handler=keep_serving) as websocket_server:
        app = ASGIServer(websocket_server)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            ws="websockets-sansio",
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        await uvicorn.Server(config).serve()
        # In memory: nothing to save. Leaving the WebsocketServer context can wait on rooms
        # whose clients are gone; the bench only needs the process to end.
        os._exit(0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
