"""Start the real server (`crdt-state serve`) as a child process, on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SECRET = "test-secret-of-at-least-thirty-two-bytes!"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    def __init__(
        self,
        data_dir: Path,
        *,
        dev: bool = False,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ):
        self.data_dir = data_dir
        self.dev = dev
        self.extra_args = args or []
        self.extra_env = env or {}
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"server-{self.port}.log"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def yjs_url(self, workspace: str) -> str:
        return f"{self.ws}/ws/yjs/{workspace}"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        env = {
            **os.environ,
            "CRDT_STATE_DATA_DIR": str(self.data_dir),
            "JWT_SECRET_KEY": SECRET,
            # The drain on SIGTERM waits for clients to answer what the rooms lack; test
            # clients that never answer (raw sockets) would hold every stop for the default
            # 5 s. tests/test_shutdown.py sets its own.
            "CRDT_STATE_DRAIN_SECONDS": "1",
            **self.extra_env,
        }
        args = [sys.executable, "-m", "crdt_state", "serve", "--port", str(self.port)]
        if self.dev:
            args.append("--dev")
        args.extend(self.extra_args)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.http}/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)  # polling readiness of a child process: there is no event to await
        raise AssertionError(f"server did not become healthy:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop (SIGTERM): rooms flush their log writes."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """kill -9: no chance to flush anything."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
