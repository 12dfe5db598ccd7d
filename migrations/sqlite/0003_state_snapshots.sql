-- Named points in time of a whole workspace (manual, periodic, before an AI edit), as the
-- PostgreSQL schema has them. `panel_versions` is JSON text {"panel id": version, ...};
-- `git_commit_hash` is NULL for a snapshot kept in this table only (commitToGit false).
CREATE TABLE state_snapshots (
    id               TEXT    PRIMARY KEY,
    workspace_id     TEXT    NOT NULL,
    snapshot_type    TEXT    NOT NULL CHECK (snapshot_type IN ('manual', 'auto', 'pre_ai_edit')),
    description      TEXT,
    panel_count      INTEGER NOT NULL,
    total_size_bytes INTEGER NOT NULL,
    git_commit_hash  TEXT,
    panel_versions   TEXT    NOT NULL,
    created_by       TEXT,
    created_at       INTEGER NOT NULL
) STRICT;

CREATE INDEX state_snapshots_workspace_time ON state_snapshots (workspace_id, created_at);
