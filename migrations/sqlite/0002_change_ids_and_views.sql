-- Exactly-once appends: a retried batch finds its changes by id and gets their versions back.
-- Rows logged before this migration have no id (NULL); a unique index allows many NULLs.
ALTER TABLE state_history ADD COLUMN change_id TEXT;
CREATE UNIQUE INDEX state_history_change_id ON state_history (change_id);

-- The panel's current JSON view as of `state_version`: a query cache of the log (save_view).
-- `state` is the canonical JSON text (sorted keys); `checksum` its SHA-256, hex.
ALTER TABLE panels ADD COLUMN state TEXT;
ALTER TABLE panels ADD COLUMN state_version INTEGER;
ALTER TABLE panels ADD COLUMN checksum TEXT;
ALTER TABLE panels ADD COLUMN state_size_bytes INTEGER;
ALTER TABLE panels ADD COLUMN state_variable_count INTEGER;
