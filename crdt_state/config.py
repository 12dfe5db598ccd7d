"""Settings, read from environment variables (listed by `crdt-state serve --help`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

# name -> (attribute, help). The order is the order `--help` lists them in.
ENVIRONMENT = {
    "CRDT_STATE_DATA_DIR": (
        "data_dir",
        "embedded data folder (SQLite log, Git) [./crdt-state-data]",
    ),
    "DATABASE_URL": ("database_url", "PostgreSQL URL; unset: the embedded SQLite store"),
    "REDIS_URL": ("redis_url", "Redis URL for multi-replica fan-out; unset: in-process"),
    "REDIS_HOST": (
        "redis_host",
        "without REDIS_URL: Redis at this host (and REDIS_PORT [6379]), as the Nexus design's "
        "deployment sets it",
    ),
    "REDIS_PORT": ("redis_port", "with REDIS_HOST: its port [6379]"),
    "GIT_WORKSPACE_ROOT": ("git_workspace_root", "Git snapshot repositories [DATA_DIR/git]"),
    "JWT_SECRET_KEY": ("jwt_secret_key", "HS256 secret for bearer tokens (>= 32 bytes)"),
    "CRDT_STATE_JWKS_URL": (
        "jwks_url",
        "identity provider's JWKS URL: RS256/ES256/EdDSA tokens signed by its keys are accepted",
    ),
    "CRDT_STATE_JWKS_FILE": ("jwks_file", "a JWKS file, as CRDT_STATE_JWKS_URL (re-read alike)"),
    "CRDT_STATE_JWKS_CACHE_SECONDS": (
        "jwks_cache_seconds",
        "the JWKS is read again this often [300]",
    ),
    "CRDT_STATE_JWKS_MIN_REFRESH_SECONDS": (
        "jwks_min_refresh_seconds",
        "a token with an unknown key id re-reads the JWKS at most this often [10]",
    ),
    "CRDT_STATE_JWT_ALGORITHMS": (
        "jwt_algorithms",
        "comma-separated algorithms accepted [HS256 with a secret; RS256,ES256,EdDSA with a JWKS]",
    ),
    "CRDT_STATE_JWT_ISSUER": (
        "jwt_issuer",
        "comma-separated 'iss' values accepted; set: tokens without one of them are refused",
    ),
    "CRDT_STATE_JWT_AUDIENCE": (
        "jwt_audience",
        "comma-separated 'aud' values accepted; set: tokens not for one of them are refused "
        "(unset: tokens with 'aud' are refused)",
    ),
    "CRDT_STATE_JWT_LEEWAY_SECONDS": (
        "jwt_leeway_seconds",
        "clock skew tolerated on exp/nbf/iat, in seconds [0]",
    ),
    "CRDT_STATE_ALLOW_TOKENS_WITHOUT_EXP": (
        "allow_tokens_without_exp",
        "accept tokens that never expire (no 'exp'); revocations are then kept forever [0]",
    ),
    "CRDT_STATE_MAX_TOKEN_LIFETIME_SECONDS": (
        "max_token_lifetime_seconds",
        "tokens living longer (exp - iat) are refused; revocations are kept this long; "
        "0: no limit, revocations kept forever [86400]",
    ),
    "CRDT_STATE_REVOCATION_POLL_SECONDS": (
        "revocation_poll_seconds",
        "each replica reads new revocations from the store this often [0.25]",
    ),
    "CRDT_STATE_DRAIN_SECONDS": (
        "drain_seconds",
        "on SIGTERM, wait this long for Yjs clients to hand over what they sent before "
        "closing their sockets (1012) [5]",
    ),
    "CRDT_STATE_SHUTDOWN_SECONDS": (
        "shutdown_seconds",
        "on SIGTERM, requests still running after the drain get this long [10]",
    ),
    "CRDT_STATE_GIT_PUSH_URL": (
        "git_push_url",
        "push each workspace's snapshots to this URL template, e.g. /srv/git/{workspace}.git",
    ),
    "CRDT_STATE_SNAPSHOT_INTERVAL_SECONDS": (
        "snapshot_interval_seconds",
        "automatic snapshots of changed workspaces every so often; 0: off [300]",
    ),
    "CRDT_STATE_ALLOWED_ORIGINS": (
        "allowed_origins",
        "comma-separated Origins allowed to open WebSockets ('*' for any)",
    ),
    "CRDT_STATE_CHECKPOINT_EVERY": ("checkpoint_every", "versions between checkpoints [1000]"),
    "CRDT_STATE_HISTORY_DAYS": (
        "history_days",
        "history rows (patch, attribution, time) older than this are removed by compaction; "
        "unset: kept forever (docs/RETENTION.md)",
    ),
    "CRDT_STATE_TIME_TRAVEL_DAYS": (
        "time_travel_days",
        "?version=N, revert and stale patches reach versions this young; older Yjs updates are "
        "folded into a checkpoint by compaction; unset: as CRDT_STATE_HISTORY_DAYS",
    ),
    "CRDT_STATE_COMPACT_INTERVAL_SECONDS": (
        "compact_interval_seconds",
        "the server compacts the log (as `crdt-state compact`) this often; 0: never [86400]",
    ),
    "CRDT_STATE_COMMIT_WINDOW_MS": (
        "commit_window_ms",
        "group-commit window of live Yjs updates in ms (REST writes commit at once) [10]",
    ),
    "CRDT_STATE_WS_DEFLATE": (
        "ws_deflate",
        "accept permessage-deflate on WebSockets (2.3x memory per connection) [0]",
    ),
    "CRDT_STATE_MAX_MESSAGE_BYTES": (
        "max_message_bytes",
        "largest WebSocket message accepted [33554432]",
    ),
    "CRDT_STATE_MAX_BODY_BYTES": (
        "max_body_bytes",
        "largest REST request body accepted [8388608]",
    ),
    "CRDT_STATE_MAX_PATCH_BODY_BYTES": (
        "max_patch_body_bytes",
        "largest PATCH body accepted (parsing holds the process for ~15 ms per MiB) [1048576]",
    ),
    "CRDT_STATE_MAX_PATCH_OPERATIONS": (
        "max_patch_operations",
        "operations one JSON Patch may hold [1000]",
    ),
    "CRDT_STATE_MAX_PATCH_WRITE_BYTES": (
        "max_patch_write_bytes",
        "JSON bytes one patch may write, copies and moves counted each time [8388608]",
    ),
    "CRDT_STATE_MAX_WRITE_VALUES": (
        "max_write_values",
        "values one PATCH or PUT may write, an object or array counting 5 (~0.3-0.5 s of work "
        "at the limit) [100000]",
    ),
    "CRDT_STATE_MAX_DOC_BYTES": (
        "max_doc_bytes",
        "largest encoded Yjs document a panel may grow to (Yjs and REST alike) [16777216]",
    ),
    "CRDT_STATE_MAX_AWARENESS_BYTES": (
        "max_awareness_bytes",
        "largest awareness update accepted [65536]",
    ),
    "CRDT_STATE_SLOW_CLIENT_SECONDS": (
        "slow_client_seconds",
        "a JSON subscriber that reads nothing for this long is closed with 1013 [10]",
    ),
    "CRDT_STATE_RATE_REST": (
        "rate_rest",
        "REST requests a second per token subject, bursts of 5x; 0: no limit [1000]",
    ),
    "CRDT_STATE_RATE_YJS_UPDATES": (
        "rate_yjs_updates",
        "Yjs updates a second per connection (5x per subject), bursts of 10x [500]",
    ),
    "CRDT_STATE_RATE_YJS_BYTES": (
        "rate_yjs_bytes",
        "Yjs update bytes a second per connection, bursts of 16x [4194304]",
    ),
    "CRDT_STATE_RATE_AWARENESS": (
        "rate_awareness",
        "awareness messages a second per connection, bursts of 5x [60]",
    ),
    "CRDT_STATE_RATE_PANEL_CREATIONS": (
        "rate_panel_creations",
        "panels a token subject may create a minute, bursts of 2x [600]",
    ),
    "CRDT_STATE_SEND_QUEUE_MESSAGES": (
        "send_queue_messages",
        "frames queued for one client before it is dropped as too slow [4096]",
    ),
    "CRDT_STATE_SEND_QUEUE_BYTES": (
        "send_queue_bytes",
        "bytes queued for one client before it is dropped as too slow [67108864]",
    ),
    "CRDT_STATE_ROOM_IDLE_SECONDS": (
        "room_idle_seconds",
        "an unused room is unloaded after this long [30]",
    ),
    "CRDT_STATE_INSPECTOR": (
        "inspector",
        "serve the web inspector at /inspect (docs/INSPECTOR.md): 1 or 0 [on with --dev, else off]",
    ),
    "CRDT_STATE_LOG_FORMAT": (
        "log_format",
        "log lines: text (readable) or json (one object per line, with request, connection "
        "and panel ids) [text]",
    ),
}


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True} | {
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


@dataclass(slots=True)
class Settings:
    data_dir: Path = Path("crdt-state-data")
    database_url: str | None = None
    redis_url: str | None = None
    redis_host: str | None = None
    redis_port: int = 6379
    git_workspace_root: Path | None = None
    jwt_secret_key: str | None = None
    jwks_url: str | None = None
    jwks_file: Path | None = None
    jwks_cache_seconds: float = 300.0
    jwks_min_refresh_seconds: float = 10.0
    jwt_algorithms: list[str] = field(default_factory=list)
    jwt_issuer: list[str] = field(default_factory=list)
    jwt_audience: list[str] = field(default_factory=list)
    jwt_leeway_seconds: int = 0
    allow_tokens_without_exp: bool = False
    max_token_lifetime_seconds: float = 86400.0
    revocation_poll_seconds: float = 0.25
    drain_seconds: float = 5.0
    shutdown_seconds: float = 10.0
    git_push_url: str | None = None
    snapshot_interval_seconds: float = 300.0
    allowed_origins: list[str] = field(default_factory=list)
    checkpoint_every: int = 1000
    history_days: float | None = None  # None: forever
    time_travel_days: float | None = None  # None: as history_days
    compact_interval_seconds: float = 86400.0
    commit_window_ms: float = 10.0
    ws_deflate: bool = False
    max_message_bytes: int = 32 * 1024 * 1024
    max_awareness_bytes: int = 64 * 1024
    max_body_bytes: int = 8 * 1024 * 1024
    max_doc_bytes: int = 16 * 1024 * 1024
    max_patch_body_bytes: int = 1024 * 1024
    max_patch_operations: int = 1000
    max_patch_write_bytes: int = 8 * 1024 * 1024
    max_write_values: int = 100_000
    send_queue_messages: int = 4096
    send_queue_bytes: int = 64 * 1024 * 1024
    room_idle_seconds: float = 30.0
    slow_client_seconds: float = 10.0
    rate_rest: float = 1000.0
    rate_yjs_updates: float = 500.0
    rate_yjs_bytes: float = 4 * 1024 * 1024
    rate_awareness: float = 60.0
    rate_panel_creations: float = 600.0
    log_format: str = "text"  # or "json" (crdt_state/log_format.py)
    inspector: bool | None = None  # None: as `dev` (see inspector_enabled)
    dev: bool = False

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        settings = cls()
        types = {f.name: f.type for f in fields(cls)}
        for name, (attribute, _) in ENVIRONMENT.items():
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            kind = str(types[attribute])
            value: object
            try:
                if "Path" in kind:
                    value = Path(raw)
                elif "list" in kind:
                    value = [item.strip() for item in raw.split(",") if item.strip()]
                elif kind == "int":
                    value = int(raw)
                elif kind in ("float", "float | None"):
                    value = float(raw)
                elif kind in ("bool", "bool | None"):
                    if raw.lower() not in _BOOLEANS:
                        raise ValueError(raw)
                    value = _BOOLEANS[raw.lower()]
                else:
                    value = raw
            except ValueError:
                raise SystemExit(f"{name}={raw!r} is not a valid {kind}") from None
            setattr(settings, attribute, value)
        if not settings.redis_url and settings.redis_host:
            settings.redis_url = f"redis://{settings.redis_host}:{settings.redis_port}/0"
        return settings

    @property
    def git_root(self) -> Path:
        return self.git_workspace_root or self.data_dir / "git"

    @property
    def inspector_enabled(self) -> bool:
        """/inspect is served: CRDT_STATE_INSPECTOR when set, else in dev mode only."""
        return self.dev if self.inspector is None else self.inspector


def environment_help() -> str:
    lines = ["environment variables:"]
    for name, (_, text) in ENVIRONMENT.items():
        lines.append(f"  {name:32} {text}")
    return "\n".join(lines)
