-- Retention and compaction (docs/RETENTION.md).
-- `compacted_through`: the fold point. The Yjs updates of versions up to it may have been
-- folded into the checkpoint at that version (their rows keep patch, attribution and time);
-- loading a version before it answers 410 `version_compacted`. NULL: never compacted.
-- `history_through`: history rows up to this version were removed (past the retention
-- window); history counts and pages the rows after it. NULL: none removed.
-- Nullable columns without a default: added without rewriting the table.
ALTER TABLE panel_states
    ADD COLUMN compacted_through bigint,
    ADD COLUMN history_through   bigint;

-- A folded row also gives up its change id: exactly-once appends need the ids of recent rows
-- only (a retried batch comes back within seconds), and compaction never folds a row younger
-- than an hour. The unique constraint holds for the ids kept. (Metadata only: no rewrite.)
ALTER TABLE state_history ALTER COLUMN change_id DROP NOT NULL;
