-- Retention and compaction (docs/RETENTION.md).
-- `compacted_through`: the fold point. The Yjs updates of versions up to it may have been
-- folded into the checkpoint at that version (their rows keep patch, attribution and time);
-- loading a version before it answers 410 `version_compacted`. NULL: never compacted.
-- `history_through`: history rows up to this version were removed (past the retention
-- window); history counts and pages the rows after it. NULL: none removed.
ALTER TABLE panels ADD COLUMN compacted_through INTEGER;
ALTER TABLE panels ADD COLUMN history_through INTEGER;
