"""The `crdt-state` command: serve, token, migrate, compact, export, import."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from .asgi_socket import UVICORN_WS
from .config import Settings, environment_help

if TYPE_CHECKING:
    from .compaction import CompactionReport, Progress
    from .ports import LogTransfer, StateCache, Store
    from .retention import RetentionPolicy

WS_MAX_SIZE_MARGIN = 1024 * 1024
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crdt-state", description="Collaborative state server.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the server",
        epilog=environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind [127.0.0.1]")
    serve.add_argument("--port", type=int, default=8001, help="port [8001]")
    serve.add_argument(
        "--dev", action="store_true", help="no authentication (loopback only, for local use)"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="replica processes behind the one port (needs REDIS_URL when more than 1) [1]",
    )
    serve.add_argument("--log-level", default="info")

    token = commands.add_parser(
        "token",
        help="mint a bearer token for local use (signed with JWT_SECRET_KEY; it expires)",
    )
    token.add_argument("--sub", required=True, help="the subject (user or service)")
    token.add_argument(
        "--workspace",
        action="append",
        default=[],
        metavar="WS=ROLE",
        help="a role in a workspace: read, write or admin ('*' for every workspace)",
    )
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires [3600]")
    token.add_argument(
        "--admin",
        action="store_true",
        help='a server admin (claim "admin": true): may revoke tokens (/api/admin/revocations)',
    )
    token.add_argument("--jti", help="the token id (revocable alone) [a random one]")

    commands.add_parser(
        "migrate",
        help="bring the database schema (DATABASE_URL) up to date",
        epilog=environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    compact = commands.add_parser(
        "compact",
        help="fold old Yjs updates into checkpoints, remove history past the retention window, "
        "prune checkpoints (docs/RETENTION.md); safe while servers run",
        epilog=environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compact.add_argument("--workspace", help="only this workspace")
    compact.add_argument("--panel", help="only this panel (with --workspace)")
    compact.add_argument("--dry-run", action="store_true", help="plan and measure; change nothing")
    compact.add_argument(
        "--json", action="store_true", help="print JSON (the default when stdout is not a terminal)"
    )
    compact.add_argument(
        "--vacuum",
        action="store_true",
        help="give the freed space back afterwards (SQLite: VACUUM, which rewrites the file and "
        "makes writers wait meanwhile; PostgreSQL: VACUUM)",
    )
    compact.add_argument(
        "--history-days", type=float, help="instead of CRDT_STATE_HISTORY_DAYS [forever]"
    )
    compact.add_argument(
        "--time-travel-days",
        type=float,
        help="instead of CRDT_STATE_TIME_TRAVEL_DAYS [as history]",
    )

    export = commands.add_parser(
        "export",
        help="write a workspace (every version: Yjs state, patches, views) to a file, to back "
        "it up or move it to another store (docs/OPERATIONS.md)",
        epilog=environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("--workspace", required=True, help="the workspace to export")
    export.add_argument("--output", help="the file to write, - for stdout [stdout when piped]")
    load = commands.add_parser(
        "import",
        help="read an export into the store the settings name, in one transaction",
        epilog=environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    load.add_argument("--input", default="-", help="the export to read, - for stdin [-]")
    load.add_argument("--workspace", help="import it as this workspace [the exported one]")
    load.add_argument("--replace", action="store_true", help="replace the workspace's panels")
    for command in (export, load):
        command.add_argument("--json", action="store_true", help="print the summary as JSON")

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "migrate":
        return _migrate()
    if args.command == "compact":
        return _compact(args)
    if args.command in ("export", "import"):
        return _transfer(args)
    return _token(args)


def _migrate() -> int:
    import asyncio

    settings = Settings.from_env()
    if not settings.database_url:
        print("DATABASE_URL is not set; the embedded SQLite store migrates itself on start.")
        return 0
    from adapters.postgres import migrate

    applied = asyncio.run(migrate(settings.database_url))
    print("\n".join(f"applied {name}" for name in applied) or "schema is up to date")
    return 0


class ProgressLine:
    """One status line, rewritten in place, on a terminal's stderr; nothing at all when stderr
    is not a terminal, so that piped and logged runs stay quiet and machine-readable."""

    def __init__(self, stream: TextIO, interval: float = 0.1) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.interval = interval
        self._shown = 0.0

    def show(self, text: str) -> None:
        now = time.monotonic()
        if not self.live or now - self._shown < self.interval:
            return
        self._shown = now
        width = shutil.get_terminal_size().columns - 1
        self.stream.write("\r\x1b[2K" + text[:width])
        self.stream.flush()

    def clear(self) -> None:
        if self.live and self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


def _compact(args: argparse.Namespace) -> int:
    import asyncio

    import orjson

    from .errors import Unavailable
    from .retention import RetentionPolicy

    settings = Settings.from_env()
    if args.panel and not args.workspace:
        print("--panel needs --workspace.", file=sys.stderr)
        return 2
    history = settings.history_days if args.history_days is None else args.history_days
    travel = settings.time_travel_days if args.time_travel_days is None else args.time_travel_days
    try:
        policy = RetentionPolicy.of_days(history, travel)
    except ValueError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    line = ProgressLine(sys.stderr)

    def progress(step: Progress) -> None:
        versions = f", versions {step.done:,}/{step.total:,}" if step.total else ""
        line.show(f"compacting {step.key} (panel {step.panel:,}/{step.panels:,}{versions})")

    try:
        report = asyncio.run(_run_compaction(settings, policy, args, progress))
    except (Unavailable, _StoreMissing, RuntimeError) as exc:
        line.clear()
        print(f"crdt-state compact: {exc}", file=sys.stderr)
        return 2
    line.clear()
    if args.json or not sys.stdout.isatty():
        print(orjson.dumps(report.to_json()).decode())
    else:
        print(report.summary())
    return 1 if report.errors else 0


class _StoreMissing(Exception):
    pass


async def _run_compaction(
    settings: Settings,
    policy: RetentionPolicy,
    args: argparse.Namespace,
    progress: Callable[[Progress], None],
) -> CompactionReport:
    from .compaction import Compactor, maintenance_of

    store = await _open_store(settings)
    try:
        maintenance = maintenance_of(store)
        assert maintenance is not None, "both log adapters implement LogMaintenance"
        compactor = Compactor(maintenance, store, policy)
        return await compactor.run(
            workspace_id=args.workspace,
            panel_id=args.panel,
            dry_run=args.dry_run,
            vacuum=args.vacuum,
            progress=progress,
        )
    finally:
        await store.close()


async def _open_store(settings: Settings) -> Store:
    """The log the server would open (as app.open_adapters does), never a new one."""
    if settings.database_url:
        from adapters.postgres import PostgresUpdateLog

        return await PostgresUpdateLog.open(settings.database_url, max_size=2)
    from adapters.sqlite import SqliteUpdateLog

    path = settings.data_dir / "crdt-state.sqlite3"
    if not path.exists():
        raise _StoreMissing(f"no database at {path} (CRDT_STATE_DATA_DIR)")
    return await SqliteUpdateLog.open(path)


def _transfer(args: argparse.Namespace) -> int:
    from .transfer import run_command

    settings = Settings.from_env()

    async def open_transfer(create: bool) -> LogTransfer:
        """The log the server would open; an import may create the SQLite file."""
        if settings.database_url:
            from adapters.postgres_transfer import PostgresTransfer

            return await PostgresTransfer.open(settings.database_url)
        from adapters.sqlite_transfer import SqliteTransfer

        path = settings.data_dir / "crdt-state.sqlite3"
        if not create and not path.exists():
            raise RuntimeError(f"no database at {path} (CRDT_STATE_DATA_DIR)")
        return await SqliteTransfer.open(path)

    async def open_cache() -> StateCache | None:
        from adapters.redis import RedisStateCache

        return await RedisStateCache.open(settings.redis_url) if settings.redis_url else None

    return run_command(args, open_transfer, open_cache, ProgressLine(sys.stderr))


def tune_runtime() -> None:
    """Interpreter settings for a latency-bound server (measured in docs/BENCHMARKS.md)."""
    # The log's worker thread runs Python between its SQLite calls; with the default 5 ms
    # switch interval the event loop can wait that long for the GIL at each hand-over.
    sys.setswitchinterval(0.0005)
    # Everything imported so far lives as long as the process: keep it out of the
    # collector's full passes, which otherwise walk it every time.
    gc.collect()
    gc.freeze()


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    import uvicorn.config

    from . import log_format, log_redaction
    from .app import create_app
    from .auth import is_loopback_host

    settings = Settings.from_env()
    if settings.log_format not in ("text", "json"):
        print("CRDT_STATE_LOG_FORMAT must be text or json.", file=sys.stderr)
        return 2
    json_logs = settings.log_format == "json"
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    log_redaction.install()  # no token in any log line (uvicorn's: log_config below)
    if json_logs:
        log_format.use_json()
    settings.dev = args.dev
    if settings.dev:
        if not is_loopback_host(args.host):
            print("--dev runs without authentication and only binds to loopback.", file=sys.stderr)
            return 2
        banner = (
            "*** DEV MODE: authentication is OFF. Anyone on this machine can read and write. ***"
        )
        if json_logs:
            logging.getLogger(__name__).warning(banner)
        else:
            print(banner, file=sys.stderr)
    elif not (settings.jwt_secret_key or settings.jwks_url or settings.jwks_file):
        print(
            "No way to check tokens: set JWT_SECRET_KEY (32+ bytes) or CRDT_STATE_JWKS_URL / "
            "CRDT_STATE_JWKS_FILE, or use --dev on loopback.",
            file=sys.stderr,
        )
        return 2
    if args.workers > 1 and not settings.redis_url:
        print(
            "--workers > 1 runs several replicas: set REDIS_URL so they share changes live.",
            file=sys.stderr,
        )
        return 2
    try:
        app = create_app(settings)
    except ValueError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.workers > 1:
        # Each worker is a replica: it builds its own app (and replica id) from the environment.
        os.environ["CRDT_STATE_DEV"] = "1" if settings.dev else ""
        target: object = "crdt_state.app:app_from_environment"
    else:
        target = app
    tune_runtime()
    log_config = log_redaction.uvicorn_log_config(
        uvicorn.config.LOGGING_CONFIG, args.log_level, LOG_FORMAT
    )
    if json_logs:
        log_config = log_format.json_log_config(log_config)
    options = dict(
        factory=args.workers > 1,
        workers=args.workers if args.workers > 1 else None,
        host=args.host,
        port=args.port,
        ws=UVICORN_WS,  # frames written straight to the transport (asgi_socket.py)
        # Off by default: a compressor per connection costs 2.3x the memory of an idle
        # client and 1.8x the latency, for frames that are mostly small Yjs updates
        # (docs/BENCHMARKS.md). Large initial syncs then travel uncompressed.
        ws_per_message_deflate=settings.ws_deflate,
        ws_max_size=settings.max_message_bytes + WS_MAX_SIZE_MARGIN,
        log_level=args.log_level,
        log_config=log_config,
        lifespan="on",
        timeout_graceful_shutdown=max(1, round(settings.shutdown_seconds)),
    )
    if args.workers > 1:
        uvicorn.run(target, **options)  # type: ignore[arg-type]
    else:
        from .draining import DrainingServer

        DrainingServer(uvicorn.Config(target, **options)).run()  # type: ignore[arg-type]
    return 0


def _token(args: argparse.Namespace) -> int:
    from .auth import mint_token

    secret = os.environ.get("JWT_SECRET_KEY")
    if not secret:
        print("JWT_SECRET_KEY is not set.", file=sys.stderr)
        return 2
    limit = Settings.from_env().max_token_lifetime_seconds
    if args.ttl <= 0 or (limit and args.ttl > limit):
        print(
            f"--ttl must be between 1 and {limit:.0f} seconds "
            "(CRDT_STATE_MAX_TOKEN_LIFETIME_SECONDS): the server refuses other tokens.",
            file=sys.stderr,
        )
        return 2
    workspaces = {}
    for item in args.workspace:
        name, sep, role = item.partition("=")
        if not sep:
            print(f"--workspace {item!r}: expected WS=ROLE", file=sys.stderr)
            return 2
        workspaces[name] = role
    try:
        print(
            mint_token(
                secret,
                args.sub,
                workspaces,
                ttl_seconds=args.ttl,
                admin=args.admin,
                token_id=args.jti,
            )
        )
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
