"""Server launchers: how the bench starts each server it measures, one fresh process per run.

A `Launcher` knows how to install (reference servers go into `.bench/`, never into the product),
start and describe one server; `start()` gives a `Server`: its processes (CPU and memory are
read from their pids), the WebSocket URL(s) clients use, a restart (for servers that keep
documents across one) and a stop. A multi-replica launcher returns several pids and one URL per
replica; the load generator spreads clients over the URLs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from .machine import (
    BENCH_DIR,
    OURS_SOURCE,
    ROOT,
    node_package_versions,
    postgres_pids,
    redis_server_pids,
)

SERVERS_SOURCE = ROOT / "bench" / "servers"
NODE_SERVERS = BENCH_DIR / "servers"
PYCRDT_VENV = BENCH_DIR / "pycrdt-websocket"
PYCRDT_REQUIREMENTS = SERVERS_SOURCE / "pycrdt-websocket-requirements.txt"
START_TIMEOUT = 30.0
BENCH_SECRET = "bench-secret-of-at-least-thirty-two-bytes!!"  # JWT_SECRET_KEY of our servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _digest(*paths: Path) -> str:
    hasher = hashlib.sha256()
    for path in paths:
        hasher.update(path.read_bytes())
    return hasher.hexdigest()


def _run(args: list[str], **kwargs: Any) -> None:
    print(f"[bench] $ {' '.join(args)}", file=sys.stderr, flush=True)
    subprocess.run(args, check=True, **kwargs)


class Server:
    """A running server: one or more processes on loopback ports."""

    def __init__(
        self,
        name: str,
        args: list[str],
        *,
        env: dict[str, str],
        cwd: Path,
        workdir: Path,
        ports: list[int],
        ws_path: str,
        http_ready: str | None = None,
        cleanup: Callable[[], None] | None = None,
        services: dict[str, Callable[[], list[int]]] | None = None,
    ) -> None:
        self.name = name
        self.cleanup = cleanup  # after the last stop (not a restart's)
        # Processes the server relies on but did not start (Redis, PostgreSQL), by name: their
        # pids, looked up at each reading; the workloads report their CPU next to the server's.
        self.services = services or {}
        self.args = args
        self.env = env
        self.cwd = cwd
        self.workdir = workdir
        self.ports = ports
        self.ws_path = ws_path
        self.http_ready = http_ready
        self.processes: list[subprocess.Popen[bytes]] = []
        self.log_path = workdir / f"{name}.log"

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    def urls(self, workspace: str) -> list[str]:
        """The URL(s) a client gives its provider; the room (panel) name is passed separately."""
        return [
            f"ws://127.0.0.1:{port}{self.ws_path.format(workspace=workspace)}"
            for port in self.ports
        ]

    def start(self) -> Server:
        with open(self.log_path, "ab") as log:
            for port in self.ports:
                args = [a.replace("{port}", str(port)) for a in self.args]
                env = {k: v.replace("{port}", str(port)) for k, v in self.env.items()}
                self.processes.append(
                    subprocess.Popen(
                        args, env=env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT
                    )
                )
        for port in self.ports:
            self._wait_ready(port)
        return self

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            if self._answers(port):
                return
            time.sleep(0.05)  # polling a child's readiness: there is no event to wait on
        raise RuntimeError(f"{self.name} did not become ready:\n{self.log_tail()}")

    def _answers(self, port: int) -> bool:
        if self.http_ready is not None:
            try:
                url = f"http://127.0.0.1:{port}{self.http_ready}"
                with urllib.request.urlopen(url, timeout=0.5) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, OSError):
                return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self, timeout: float = 20.0, *, final: bool = True) -> None:
        """SIGTERM (a graceful stop: our server flushes its log), SIGKILL after `timeout`."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []
        if final and self.cleanup is not None:
            cleanup, self.cleanup = self.cleanup, None
            cleanup()

    def restart(self) -> None:
        self.stop(final=False)
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class Launcher(ABC):
    """One kind of server the bench can run."""

    name: ClassVar[str]
    title: ClassVar[str]
    client: ClassVar[str] = "y-websocket"  # which client stack the load generator uses
    document_prefix: ClassVar[str] = ""  # before each room's name (Hocuspocus: the document)
    persistent: ClassVar[bool] = False  # documents survive a restart
    skips: ClassVar[frozenset[str]] = frozenset()  # workloads this server cannot run
    storage: ClassVar[str] = "in memory"
    replicable: ClassVar[bool] = False  # can run as several processes sharing state (replicas-N)

    def with_replicas(self, replicas: int) -> Launcher:
        """The same server as `replicas` processes sharing their state (replicas-N workloads)."""
        raise NotImplementedError(f"{self.name} does not run as replicas")

    def install(self) -> None:  # noqa: B027 - most launchers have nothing to install
        """Make sure the server can start (the bench installs reference servers itself)."""

    @abstractmethod
    def server(self, workdir: Path) -> Server: ...

    @abstractmethod
    def versions(self) -> dict[str, Any]: ...

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "client": self.client,
            "storage": self.storage,
            "versions": self.versions(),
            **self.settings(),
        }

    def settings(self) -> dict[str, Any]:
        return {}


# Where the replica runs find PostgreSQL and Redis (the machine's own, as the tests use them).
PG_ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_address() -> tuple[str, int, int]:
    """(host, port, database number) of REDIS_URL."""
    url = urllib.parse.urlsplit(REDIS_URL)
    db = url.path.strip("/")
    return url.hostname or "127.0.0.1", url.port or 6379, int(db) if db.isdigit() else 0


def _redis_pids() -> list[int]:
    """The local redis-server of REDIS_URL (none when Redis runs elsewhere)."""
    return redis_server_pids(_redis_address()[1])


def _database_dsn(name: str) -> str:
    base, _, _ = PG_ADMIN_DSN.rpartition("/")
    return f"{base}/{name}"


def _admin(statement: str) -> None:
    """Run one statement on the PostgreSQL server as its admin (CREATE/DROP DATABASE)."""
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def _create_database(name: str) -> str:
    _admin(f'CREATE DATABASE "{name}"')
    dsn = _database_dsn(name)
    _run(
        [sys.executable, "-m", "crdt_state", "migrate"],
        env={**os.environ, "DATABASE_URL": dsn},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    return dsn


def _drop_database(name: str) -> None:
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Ours(Launcher):
    """`crdt-state serve` on the embedded default (SQLite log, in-process fan-out), or as
    `replicas` processes sharing a fresh PostgreSQL database and Redis (`shared`)."""

    name = "crdt-state"
    title = "crdt-state (this repository)"
    persistent = True
    replicable = True
    storage = "SQLite log, WAL, synchronous=FULL, group commit; every update durable"

    def __init__(
        self,
        *,
        dev: bool = True,
        replicas: int = 1,
        shared: bool = False,
        secret: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        if replicas > 1 and not shared:
            raise ValueError("several replicas share PostgreSQL and Redis: pass shared=True")
        self.dev = dev
        self.replicas = replicas
        self.shared = shared
        self.secret = secret or BENCH_SECRET
        self.env_overrides = {
            k: v
            for k, v in os.environ.items()
            if k.startswith("CRDT_STATE_") and k != "CRDT_STATE_DATA_DIR"
        } | (env or {})

    def with_replicas(self, replicas: int) -> Launcher:
        return type(self)(
            dev=self.dev, replicas=replicas, shared=True, secret=self.secret, env=self.env_overrides
        )

    def server(self, workdir: Path) -> Server:
        data = workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "crdt_state", "serve", "--port", "{port}"]
        args += ["--log-level", "warning"]
        if self.dev:
            args.append("--dev")
        env = {
            **os.environ,
            **self.env_overrides,
            "CRDT_STATE_DATA_DIR": str(data),
            "JWT_SECRET_KEY": self.secret,
        }
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        cleanup = None
        services: dict[str, Callable[[], list[int]]] = {}
        if self.shared:
            database = f"crdt_bench_{os.getpid()}_{int(time.time() * 1000)}"
            env["DATABASE_URL"] = _create_database(database)
            env["REDIS_URL"] = REDIS_URL
            cleanup = functools.partial(_drop_database, database)
            services = {
                "redis": _redis_pids,
                "postgres": functools.partial(postgres_pids, database),
            }
        return Server(
            self.name,
            args,
            env=env,
            cwd=OURS_SOURCE,
            workdir=workdir,
            ports=[free_port() for _ in range(self.replicas)],
            ws_path="/ws/yjs/{workspace}",
            http_ready="/health",
            cleanup=cleanup,
            services=services,
        )

    def token(self, workspaces: dict[str, str]) -> str:
        from crdt_state.auth import mint_token

        return mint_token(self.secret, "bench", workspaces, ttl_seconds=6 * 3600)

    def versions(self) -> dict[str, Any]:
        from .machine import our_versions

        versions = our_versions()
        versions.pop("client_packages", None)
        return versions

    def settings(self) -> dict[str, Any]:
        return {
            "auth": "off (--dev)" if self.dev else "JWT (HS256)",
            "log_level": "warning",
            "replicas": self.replicas,
            "storage": "PostgreSQL + Redis fan-out" if self.shared else "SQLite, in-process",
            "env_overrides": self.env_overrides,
        }


class OursHocuspocus(Ours):
    """Our server again, its clients on `/ws/hocuspocus` with the HocuspocusProvider (the
    provider the Hocuspocus server is measured with): a document is `{workspace}/{room}`."""

    name = "crdt-state-hocuspocus"
    title = "crdt-state, /ws/hocuspocus (Hocuspocus protocol, same server)"
    client = "hocuspocus"
    document_prefix = "{workspace}/"

    def server(self, workdir: Path) -> Server:
        server = super().server(workdir)
        server.ws_path = "/ws/hocuspocus"
        return server


def _install_node_servers() -> None:
    """npm ci of bench/servers/package-lock.json into .bench/servers (when the lock changed)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RuntimeError("node and npm are needed for the reference servers")
    NODE_SERVERS.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json", "hocuspocus.mjs"):
        shutil.copyfile(SERVERS_SOURCE / name, NODE_SERVERS / name)
    stamp = NODE_SERVERS / "node_modules" / ".installed"
    want = _digest(SERVERS_SOURCE / "package-lock.json")
    if stamp.exists() and stamp.read_text() == want:
        return
    # --ignore-scripts: @y/websocket-server's optional LevelDB persistence has a native build
    # step; the bench runs it in memory, as its README starts it.
    _run(
        ["npm", "ci", "--prefix", str(NODE_SERVERS), "--ignore-scripts", "--no-audit", "--no-fund"]
    )
    stamp.write_text(want)


class YWebsocketServer(Launcher):
    """The reference server of the y-websocket protocol, `@y/websocket-server`'s bin as shipped."""

    name = "y-websocket"
    title = "@y/websocket-server (reference y-websocket server)"

    def install(self) -> None:
        _install_node_servers()

    def server(self, workdir: Path) -> Server:
        script = NODE_SERVERS / "node_modules" / "@y" / "websocket-server" / "src" / "server.js"
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": "{port}"}
        env.pop("YPERSISTENCE", None)
        return Server(
            self.name,
            ["node", str(script)],
            env=env,
            cwd=NODE_SERVERS,
            workdir=workdir,
            ports=[free_port()],
            ws_path="/{workspace}",
        )

    def versions(self) -> dict[str, Any]:
        return node_package_versions(
            NODE_SERVERS, ["@y/websocket-server", "yjs", "y-protocols"]
        ) | {"ws": _nested_version(NODE_SERVERS, "@y/websocket-server", "ws")}


def _nested_version(folder: Path, package: str, dependency: str) -> str | None:
    for candidate in (
        folder / "node_modules" / package / "node_modules" / dependency,
        folder / "node_modules" / dependency,
    ):
        try:
            return str(json.loads((candidate / "package.json").read_text())["version"])
        except (OSError, ValueError, KeyError):
            continue
    return None


class Hocuspocus(Launcher):
    """Hocuspocus with no extensions (documents in memory); clients use its own provider."""

    name = "hocuspocus"
    title = "Hocuspocus (@hocuspocus/server, no extensions)"
    client = "hocuspocus"

    def install(self) -> None:
        _install_node_servers()

    def server(self, workdir: Path) -> Server:
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": "{port}", "NODE_ENV": "production"}
        return Server(
            self.name,
            ["node", str(NODE_SERVERS / "hocuspocus.mjs")],
            env=env,
            cwd=NODE_SERVERS,
            workdir=workdir,
            ports=[free_port()],
            ws_path="/{workspace}",  # unused by its provider: the document name carries the room
        )

    def versions(self) -> dict[str, Any]:
        return node_package_versions(NODE_SERVERS, ["@hocuspocus/server", "yjs", "ws"])


def _delete_redis_keys(prefix: str) -> None:
    """Remove what a run left under its key prefix (the extension's document locks)."""
    try:
        import redis
    except ImportError:
        return
    try:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
    except redis.RedisError:
        pass


def _redis_version() -> str | None:
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()
    except Exception:  # a version for the record only: never fail the run for it
        return None


class HocuspocusRedis(Hocuspocus):
    """Hocuspocus with `@hocuspocus/extension-redis`: `replicas` instances sharing the
    machine's Redis (REDIS_URL), as Hocuspocus runs on several hosts. Each run gets a key and
    channel prefix of its own; documents stay in memory (no storage extension)."""

    name = "hocuspocus-redis"
    title = "Hocuspocus + @hocuspocus/extension-redis (instances sharing Redis)"
    storage = "in memory; instances relay changes through Redis pub/sub"
    replicable = True

    def __init__(self, *, replicas: int = 1) -> None:
        self.replicas = replicas

    def with_replicas(self, replicas: int) -> Launcher:
        return type(self)(replicas=replicas)

    def server(self, workdir: Path) -> Server:
        host, port, db = _redis_address()
        prefix = f"hocuspocus-bench-{os.getpid()}-{int(time.time() * 1000)}"
        env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": "{port}",
            "NODE_ENV": "production",
            "REDIS_HOST": host,
            "REDIS_PORT": str(port),
            "REDIS_DB": str(db),
            "REDIS_PREFIX": prefix,
        }
        return Server(
            self.name,
            ["node", str(NODE_SERVERS / "hocuspocus.mjs")],
            env=env,
            cwd=NODE_SERVERS,
            workdir=workdir,
            ports=[free_port() for _ in range(self.replicas)],
            ws_path="/{workspace}",
            cleanup=functools.partial(_delete_redis_keys, prefix),
            services={"redis": _redis_pids},
        )

    def versions(self) -> dict[str, Any]:
        return node_package_versions(
            NODE_SERVERS, ["@hocuspocus/server", "@hocuspocus/extension-redis", "ioredis", "yjs"]
        ) | {"redis-server": _redis_version()}

    def settings(self) -> dict[str, Any]:
        return {
            "replicas": self.replicas,
            "redis": REDIS_URL,
            "key_prefix": "hocuspocus-bench-<pid>-<ms>, one per run",
        }


class PycrdtWebsocket(Launcher):
    """pycrdt-websocket's WebsocketServer on uvicorn, in its own venv under .bench/."""

    name = "pycrdt-websocket"
    title = "pycrdt-websocket (WebsocketServer + ASGIServer on uvicorn)"

    @property
    def python(self) -> Path:
        return PYCRDT_VENV / "bin" / "python"

    def install(self) -> None:
        stamp = PYCRDT_VENV / ".installed"
        want = _digest(PYCRDT_REQUIREMENTS)
        if not (stamp.exists() and stamp.read_text() == want and self.python.exists()):
            _run([sys.executable, "-m", "venv", "--clear", str(PYCRDT_VENV)])
            _run(
                [
                    str(self.python),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "-r",
                    str(PYCRDT_REQUIREMENTS),
                ]
            )
            stamp.write_text(want)
        NODE_SERVERS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(
            SERVERS_SOURCE / "pycrdt_websocket_server.py",
            NODE_SERVERS / "pycrdt_websocket_server.py",
        )

    def server(self, workdir: Path) -> Server:
        return Server(
            self.name,
            [
                str(self.python),
                str(NODE_SERVERS / "pycrdt_websocket_server.py"),
                "--port",
                "{port}",
            ],
            env={**os.environ},
            cwd=NODE_SERVERS,
            workdir=workdir,
            ports=[free_port()],
            ws_path="/{workspace}",
        )

    def versions(self) -> dict[str, Any]:
        script = (
            "import json, importlib.metadata as m; print(json.dumps({n: m.version(n) for n in "
            "['pycrdt-websocket', 'pycrdt', 'uvicorn', 'websockets', 'anyio']}))"
        )
        try:
            out = subprocess.run(
                [str(self.python), "-c", script], capture_output=True, text=True, check=True
            ).stdout
            return dict(json.loads(out))
        except (OSError, subprocess.CalledProcessError, ValueError):
            return {}


class RelayFloor(Launcher):
    """bench/servers/relay_floor.py: the least a server on our Python stack can cost."""

    name = "relay-floor"
    title = "relay floor (bare ASGI relay, no document, on crdt-state's uvicorn stack)"
    storage = "nothing (relays frames, keeps no document)"
    skips = frozenset({"cold-sync", "cold-sync-log"})  # no document: no cold join to serve

    def server(self, workdir: Path) -> Server:
        script = SERVERS_SOURCE / "relay_floor.py"
        return Server(
            self.name,
            [sys.executable, str(script), "--port", "{port}"],
            env={**os.environ},
            cwd=ROOT,
            workdir=workdir,
            ports=[free_port()],
            ws_path="/{workspace}",
            http_ready="/",
        )

    def versions(self) -> dict[str, Any]:
        from importlib import metadata

        names = ["uvicorn", "websockets", "uvloop", "httptools"]
        return {name: metadata.version(name) for name in names}


LAUNCHERS: dict[str, type[Launcher]] = {
    launcher.name: launcher
    for launcher in (
        Ours,
        OursHocuspocus,
        YWebsocketServer,
        Hocuspocus,
        HocuspocusRedis,
        PycrdtWebsocket,
        RelayFloor,
    )
}


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"crdt-bench-{prefix}-"))
