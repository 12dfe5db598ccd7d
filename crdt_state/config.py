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
    "GIT_WORKSPACE_ROOT": ("git_workspace_root", "Git snapshot repositories [DATA_DIR/git]"),
    "JWT_SECRET_KEY": ("jwt_secret_key", "HS256 secret for bearer tokens (>= 32 bytes)"),
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
    "CRDT_STATE_MAX_AWARENESS_BYTES": (
        "max_awareness_bytes",
        "largest awareness update accepted [65536]",
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
    git_workspace_root: Path | None = None
    jwt_secret_key: str | None = None
    git_push_url: str | None = None
    snapshot_interval_seconds: float = 300.0
    allowed_origins: list[str] = field(default_factory=list)
    checkpoint_every: int = 1000
    commit_window_ms: float = 10.0
    ws_deflate: bool = False
    max_message_bytes: int = 32 * 1024 * 1024
    max_awareness_bytes: int = 64 * 1024
    max_body_bytes: int = 8 * 1024 * 1024
    send_queue_messages: int = 4096
    send_queue_bytes: int = 64 * 1024 * 1024
    room_idle_seconds: float = 30.0
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
                elif kind == "float":
                    value = float(raw)
                elif kind == "bool":
                    if raw.lower() not in _BOOLEANS:
                        raise ValueError(raw)
                    value = _BOOLEANS[raw.lower()]
                else:
                    value = raw
            except ValueError:
                raise SystemExit(f"{name}={raw!r} is not a valid {kind}") from None
            setattr(settings, attribute, value)
        return settings

    @property
    def git_root(self) -> Path:
        return self.git_workspace_root or self.data_dir / "git"


def environment_help() -> str:
    lines = ["environment variables:"]
    for name, (_, text) in ENVIRONMENT.items():
        lines.append(f"  {name:32} {text}")
    return "\n".join(lines)
