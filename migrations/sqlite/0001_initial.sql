-- Timestamps are unix microseconds (UTC): integers compare, index and round-trip exactly.

CREATE TABLE schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
) STRICT;

-- One row per panel; `version` is the newest version across all epochs, so a panel
-- re-created after a delete continues its numbering.
CREATE TABLE panels (
    workspace_id TEXT    NOT NULL,
    panel_id     TEXT    NOT NULL,
    epoch        TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    created_by   TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    deleted_at   INTEGER,
    PRIMARY KEY (workspace_id, panel_id)
) STRICT, WITHOUT ROWID;

-- The append-only log: one row per version. A rowid table because updates can be large.
CREATE TABLE state_history (
    workspace_id   TEXT    NOT NULL,
    panel_id       TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    epoch          TEXT    NOT NULL,
    "update"       BLOB    NOT NULL,
    patch          TEXT,
    change_type    TEXT    NOT NULL,
    triggered_by   TEXT    NOT NULL,
    trigger_source TEXT,
    subject        TEXT,
    size_bytes     INTEGER NOT NULL,
    occurred_at    INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, panel_id, version),
    FOREIGN KEY (workspace_id, panel_id) REFERENCES panels (workspace_id, panel_id)
) STRICT;

-- Audit and activity views ask "what changed in this workspace between t1 and t2".
CREATE INDEX state_history_workspace_time ON state_history (workspace_id, occurred_at);

-- Full encoded states; load() starts from the newest one instead of replaying from 1.
CREATE TABLE state_checkpoints (
    workspace_id TEXT    NOT NULL,
    panel_id     TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    epoch        TEXT    NOT NULL,
    state        BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, panel_id, version),
    FOREIGN KEY (workspace_id, panel_id) REFERENCES panels (workspace_id, panel_id)
) STRICT;
