from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crdt_state.auth import mint_token

from .pg import clean_pg, cluster, pg_dsn  # noqa: F401  (fixtures)
from .server import SECRET, ServerProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real server with authentication on, over an embedded store in a temp folder."""
    process = ServerProcess(tmp_path / "data").start()
    yield process
    process.stop()


def token(subject: str = "alice", workspaces: dict[str, str] | None = None, ttl: int = 3600) -> str:
    """A token signed with the test server's secret (default: write in workspace 'ws')."""
    return mint_token(SECRET, subject, workspaces or {"ws": "write"}, ttl_seconds=ttl)
