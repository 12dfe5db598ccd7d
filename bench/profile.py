"""Where our server's CPU goes under the fan-out workload: py-spy samples, summarized.

py-spy (installed by the bench into `.bench/py-spy`, not a product dependency) attaches to the
running server for the measured phase of one fan-out run and writes collapsed stacks. Each
sample is charged to:
- the innermost frame of our code (crdt_state/, adapters/) on its stack: what our code costs,
  libraries it calls included ("by our function");
- a component, from the frames on the stack (pycrdt, SQLite, WebSocket I/O, …): what kind of
  work it is ("by component");
- its leaf function (self time).
Idle time (the event loop waiting in select) is not sampled: shares are of busy CPU.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from .launchers import _digest, _run
from .machine import BENCH_DIR

PY_SPY_VERSION = "0.4.3"
PY_SPY_VENV = BENCH_DIR / "py-spy"
PY_SPY = PY_SPY_VENV / "bin" / "py-spy"
SAMPLE_RATE = 250
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
OURS = ("crdt_state/", "adapters/")

# (component, substrings of "func (file)"), tried on each frame from the leaf up: the first
# frame that matches a rule names the sample's component. Order matters: specific first.
COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    ("SQLite log (worker thread)", ("adapters/sqlite.py", "sqlite3")),
    (
        "thread hand-off (executor submit, loop wake-up)",
        (
            "concurrent/futures/",
            "adapters/sqlite_thread.py",
            "_write_to_self",
            "call_soon_threadsafe",
        ),
    ),
    ("socket writes (transport.write)", ("_SelectorSocketTransport.write",)),
    ("socket reads", ("_read_ready",)),
    ("pycrdt (apply update, encode)", ("pycrdt/",)),
    ("JSON view upkeep (patch replay)", ("crdt_state/jsonpatch.py",)),
    ("change events -> JSON Patch", ("crdt_state/changes.py",)),
    ("y-websocket codec", ("crdt_state/protocol.py",)),
    ("HTTP / WebSocket protocol (uvicorn, websockets)", ("websockets/", "uvicorn/protocols/")),
    ("ASGI / Starlette", ("starlette/", "uvicorn/")),
    ("orjson / logging", ("orjson", "logging/")),
    ("event loop scheduling (tasks, futures, queues)", ("asyncio/", "selectors.py")),
    ("rooms, connections, group commit (crdt_state)", ("crdt_state/",)),
]
# A leaf that only waits (a thread parked in a C call that py-spy still sampled): not CPU.
# `Runner.run` as the leaf: the main thread inside uvloop's C loop with no Python frame above,
# mostly waiting in epoll; py-spy cannot tell that from uvloop's own C work, so the per-thread
# CPU read from /proc (thread_cpu) is what gives the totals.
IDLE_LEAVES = (
    "EpollSelector.select (selectors.py)",
    "_worker (concurrent/futures/thread.py)",
    "_serve (adapters/sqlite_thread.py)",  # the SQLite thread waiting for its next call
    "Runner.run (asyncio/runners.py)",
)
ENTRY_FILES = ("crdt_state/cli.py", "crdt_state/__main__.py")
# Helpers charged to their caller in "by our function" (a COMMIT is charged to what commits).
HELPERS = ("_transaction", "_with_db", "<lambda>", "_run.<locals>.<lambda>")


def ensure_py_spy() -> Path:
    """Install py-spy into .bench/py-spy (a venv of its own) unless it is there."""
    stamp = PY_SPY_VENV / ".installed"
    if not (PY_SPY.exists() and stamp.exists() and stamp.read_text() == PY_SPY_VERSION):
        _run([sys.executable, "-m", "venv", "--clear", str(PY_SPY_VENV)])
        _run([str(PY_SPY_VENV / "bin" / "pip"), "install", "--quiet", f"py-spy=={PY_SPY_VERSION}"])
        stamp.write_text(PY_SPY_VERSION)
    return PY_SPY


class Recorder:
    """py-spy attached to one process from `start()` to `stop()`."""

    def __init__(self, pid: int, output: Path) -> None:
        self.pid = pid
        self.output = output
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                str(PY_SPY),
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                str(SAMPLE_RATE),
                "--format",
                "raw",
                "--output",
                str(self.output),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def _frames(stack: str) -> list[tuple[str, str]]:
    frames = []
    for raw in stack.split(";"):
        match = FRAME.match(raw.strip())
        if match:
            frames.append((match["func"], match["file"]))
        else:
            frames.append((raw.strip(), ""))
    return frames


def _component(frames: list[tuple[str, str]]) -> str:
    for func, file in reversed(frames):
        text = f"{func} ({file})"
        if any(text.endswith(f"({entry})") for entry in ENTRY_FILES):
            continue
        for name, needles in COMPONENTS:
            if any(needle in text for needle in needles):
                return name
    return "other Python"


def _is_ours(file: str) -> bool:
    if any(file.endswith(entry) for entry in ENTRY_FILES):
        return False  # the entry point sits under every stack of the main thread
    return file.startswith(OURS) or any(f"/{prefix}" in file for prefix in OURS)


def summarize(raw: Path, top: int = 12) -> dict[str, Any]:
    by_ours: Counter[str] = Counter()
    by_component: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    total = idle = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        if f"{frames[-1][0]} ({frames[-1][1]})" in IDLE_LEAVES:
            idle += count
            continue
        total += count
        ours = [
            f"{func} ({file})"
            for func, file in frames
            if _is_ours(file) and not func.endswith(HELPERS)
        ]
        by_ours[ours[-1] if ours else "(none: event loop, transport, framing)"] += count
        by_component[_component(frames)] += count
        leaf_func, leaf_file = frames[-1]
        by_leaf[f"{leaf_func} ({leaf_file})"] += count
        worker = any("thread.py" in file and func == "_worker" for func, file in frames)
        by_thread["log worker thread" if worker else "event loop thread"] += count

    def table(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"name": name, "samples": n, "share": n / total if total else 0.0}
            for name, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "idle_samples_left_out": idle,
        "by_component": table(by_component),
        "by_our_function": table(by_ours),
        "by_leaf_function": table(by_leaf),
        "by_thread": table(by_thread),
    }


def digest_file(path: Path) -> str:
    return _digest(path)
