"""Drive `node bench/js/loadgen.mjs` for one workload run.

The Node process prints a barrier at each phase boundary and waits; `run()` calls
`on_barrier(name, info)` there (the workload samples the server's and the load generator's
counters, or restarts the server) and sends back `go` with whatever fields it returned.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .machine import JS_DIR

SCRIPT = JS_DIR / "loadgen.mjs"
# A larger young generation: fewer scavenges (pauses) in a process holding hundreds of docs.
# BENCH_NODE_EXTRA: more flags for the load generator's Node (e.g. --trace-gc) when debugging.
NODE_FLAGS = ["--max-semi-space-size=64", *os.environ.get("BENCH_NODE_EXTRA", "").split()]
Barrier = Callable[[str, dict[str, Any]], dict[str, Any] | None]


class LoadGenError(RuntimeError):
    pass


def check_installed() -> None:
    if shutil.which("node") is None:
        raise LoadGenError("node is not on PATH: the load generator needs Node 20+")
    if not (JS_DIR / "node_modules" / "y-websocket").is_dir():
        raise LoadGenError("bench/js/node_modules is missing: run `npm ci --prefix bench/js`")


class LoadGen:
    def __init__(self, spec: dict[str, Any], log_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def run(self, on_barrier: Barrier, timeout: float) -> dict[str, Any]:
        """Run the workload to its result; raise LoadGenError on error or after `timeout` s."""
        check_installed()
        with open(self.log_path, "ab") as stderr:
            self.process = subprocess.Popen(
                ["node", *NODE_FLAGS, str(SCRIPT), json.dumps(self.spec)],
                cwd=JS_DIR,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        try:
            return self._loop(on_barrier, time.monotonic() + timeout)
        finally:
            self._finish()

    def _loop(self, on_barrier: Barrier, deadline: float) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        selector = selectors.DefaultSelector()
        selector.register(stdout, selectors.EVENT_READ)
        buffer = b""
        try:
            while True:
                while b"\n" not in buffer:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise LoadGenError(f"the load generator timed out\n{self.stderr_tail()}")
                    if not selector.select(min(remaining, 1.0)):
                        continue
                    chunk = os.read(stdout.fileno(), 1 << 16)
                    if not chunk:
                        code = self.process.wait()
                        raise LoadGenError(
                            f"the load generator exited ({code}) before its result\n"
                            f"{self.stderr_tail()}"
                        )
                    buffer += chunk
                line, buffer = buffer.split(b"\n", 1)
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except ValueError:  # Node itself printed something (e.g. --trace-gc)
                    print(f"[node] {line.decode(errors='replace')}", file=sys.stderr, flush=True)
                    continue
                event = message.get("event")
                if event == "barrier":
                    name = message.pop("name")
                    extra = on_barrier(name, message) or {}
                    self._send({"cmd": "go", **extra})
                elif event == "result":
                    return dict(message["result"])
                elif event == "error":
                    raise LoadGenError(f"the load generator failed: {message.get('message')}")
                elif event == "log":
                    print(f"[loadgen] {message.get('message')}", file=sys.stderr, flush=True)
        finally:
            selector.close()

    def _send(self, message: dict[str, Any]) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def _finish(self) -> None:
        process = self.process
        if process is None:
            return
        if process.stdin is not None and not process.stdin.closed:
            try:
                process.stdin.close()
            except BrokenPipeError:
                pass
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def stderr_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
