"""One Node process driving real JS clients over JSON lines: the plumbing the test clients
share (tests/yjs_client.py: y-websocket; tests/hocuspocus_client.py: @hocuspocus/provider).

A command is one line `{"id", "cmd", ...fields}` on Node's stdin; its reply one line with the
same id and `ok` on stdout. Every call has a timeout; a failed command, a timeout or a dead
Node process raises the client's error type (an ``AssertionError``) ending with Node's stderr
tail.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

JS_DIR = Path(__file__).resolve().parent / "js"
DEFAULT_TIMEOUT = 10.0
_STDERR_LINES = 200


class NodeProcess:
    """`node <script>` in tests/js, started by `start()` / `async with`, stopped by `close()`."""

    script = ""  # in tests/js
    requires = ""  # a package under tests/js/node_modules the script imports
    error: type[AssertionError] = AssertionError
    what = "the client tests"

    def __init__(
        self,
        *,
        node: str = "node",
        timeout: float = DEFAULT_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.node = node
        self.timeout = timeout
        self.env = dict(env) if env is not None else None
        self._proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self._tasks: list[asyncio.Task[None]] = []
        self._dead: str | None = None

    async def start(self) -> Self:
        node = shutil.which(self.node)
        if node is None:
            raise self.error(f"{self.node!r} not found on PATH; {self.what} need Node")
        if not (JS_DIR / "node_modules" / self.requires).is_dir():
            missing = JS_DIR / "node_modules" / self.requires
            raise self.error(f"{missing} is missing: run `npm ci --prefix tests/js`")
        self._proc = await asyncio.create_subprocess_exec(
            node,
            str(JS_DIR / self.script),
            cwd=str(JS_DIR),
            env={**os.environ, **(self.env or {})},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,  # a reply (doc JSON, raw frames) is one line
        )
        self._tasks = [
            asyncio.create_task(self._read_stdout(), name=f"{self.script}-stdout"),
            asyncio.create_task(self._read_stderr(), name=f"{self.script}-stderr"),
        ]
        await self.request("ping")
        return self

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()  # Node destroys its clients and exits when stdin closes
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        for task in self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(task, 2.0)
        self._fail_pending("the Node process was closed")

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def stderr_tail(self, lines: int = 40) -> str:
        """The last lines Node wrote to stderr."""
        return "\n".join(list(self._stderr)[-lines:])

    def _error(self, message: str) -> AssertionError:
        tail = self.stderr_tail()
        return self.error(f"{message}\n--- node stderr (tail) ---\n{tail or '(empty)'}")

    async def request(
        self, cmd: str, *, limit: float | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Send one command and return its reply without `id`/`ok`; raise unless it is ok."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise self._error(f"node command {cmd!r}: the Node process is not running")
        if self._dead is not None:
            raise self._error(f"node command {cmd!r}: {self._dead}")
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        line = json.dumps({"id": rid, "cmd": cmd, **fields}, separators=(",", ":"))
        limit = self.timeout if limit is None else limit
        try:
            proc.stdin.write(line.encode() + b"\n")
            await proc.stdin.drain()
            reply = await asyncio.wait_for(fut, limit)
        except TimeoutError:
            raise self._error(
                f"node command {cmd!r} (id {rid}) timed out after {limit:g} s"
            ) from None
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise self._error(f"node command {cmd!r}: cannot write to Node ({exc})") from None
        finally:
            self._pending.pop(rid, None)
        if not reply.get("ok"):
            raise self._error(f"node command {cmd!r} failed: {reply.get('error')}")
        reply.pop("id", None)
        reply.pop("ok", None)
        return reply

    async def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        while line := await stdout.readline():
            try:
                reply = json.loads(line)
            except ValueError:
                self._stderr.append(f"[{self.script}] unparsable stdout line: {line[:200]!r}")
                continue
            rid = reply.get("id") if isinstance(reply, dict) else None
            fut = self._pending.get(rid) if isinstance(rid, int) else None
            if fut is not None and not fut.done():
                fut.set_result(reply)
        code = await self._proc.wait() if self._proc is not None else None
        self._dead = f"the Node process exited (code {code})"
        self._fail_pending(self._dead)

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        stderr = self._proc.stderr
        while line := await stderr.readline():
            self._stderr.append(line.decode(errors="replace").rstrip("\n"))

    def _fail_pending(self, why: str) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(self._error(why))
