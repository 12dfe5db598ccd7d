"""The test Redis: its URL, and stopping and starting it for fault tests.

Tests use the server named by CRDT_STATE_TEST_REDIS (default: the local one). Fault tests stop
it for real (SHUTDOWN NOSAVE) and start it again with `redis-server`, which needs a Redis on
this machine that the tests may restart: `stopped()` skips the test otherwise, and always
starts Redis again, waiting until it answers PING, however the test ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

URL_VARIABLE = "CRDT_STATE_TEST_REDIS"
DEFAULT_URL = "redis://127.0.0.1:6379/0"
# Where the restarted server keeps its files (none: no persistence) and its log; the
# machine's usual places unless told otherwise.
DATA_DIR_VARIABLE = "CRDT_STATE_TEST_REDIS_DIR"
LOG_FILE_VARIABLE = "CRDT_STATE_TEST_REDIS_LOG"
DEFAULT_DATA_DIR = "/var/lib/redis"
DEFAULT_LOG_FILE = "/var/log/redis/ci.log"
START_SECONDS = 10.0  # the longest a start or a stop may take


def url() -> str:
    return os.environ.get(URL_VARIABLE, DEFAULT_URL)


def _address() -> tuple[str, int]:
    parts = urlsplit(url())
    return parts.hostname or "127.0.0.1", parts.port or 6379


def answers() -> bool:
    """Whether Redis answers PING now."""
    client = redis.Redis.from_url(url(), socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _wait_until(up: bool) -> None:
    deadline = time.monotonic() + START_SECONDS
    while answers() != up:
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis at {url()} did not {'start' if up else 'stop'}")
        time.sleep(0.05)


def stop() -> None:
    """Shut Redis down without saving, and wait until it no longer answers."""
    host, port = _address()
    # SHUTDOWN closes the connection before it can answer: the exit status means nothing.
    subprocess.run(
        ["redis-cli", "-h", host, "-p", str(port), "shutdown", "nosave"],
        capture_output=True,
        timeout=START_SECONDS,
        check=False,
    )
    _wait_until(up=False)


def start() -> None:
    """Start Redis as the machine runs it (no persistence), and wait until it answers."""
    if answers():
        return
    host, port = _address()
    data_dir = Path(os.environ.get(DATA_DIR_VARIABLE, DEFAULT_DATA_DIR))
    log_file = Path(os.environ.get(LOG_FILE_VARIABLE, DEFAULT_LOG_FILE))
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [
        *("redis-server", "--daemonize", "yes", "--bind", host, "-::1", "--port", str(port)),
        *("--save", "", "--appendonly", "no", "--dir", str(data_dir), "--logfile", str(log_file)),
    ]
    subprocess.run(command, check=True, timeout=START_SECONDS)
    _wait_until(up=True)


def can_restart() -> str | None:
    """Why this machine's Redis cannot be restarted by the tests, or None if it can."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        return "redis-server and redis-cli are not installed"
    if _address()[0] != "127.0.0.1":
        return f"Redis at {url()} is not on this machine"
    if not answers():
        return f"Redis at {url()} does not answer"
    return None


@contextmanager
def stopped() -> Iterator[None]:
    """Redis stopped for the block's duration, then started again whatever happened."""
    reason = can_restart()
    if reason is not None:
        pytest.skip(f"cannot restart Redis: {reason}")
    stop()
    try:
        yield
    finally:
        start()
