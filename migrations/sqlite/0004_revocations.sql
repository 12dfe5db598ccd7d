-- Revoked subjects and token ids (docs/SECURITY.md, "Revocation"). Every replica polls this
-- table for ids above the largest it has seen: AUTOINCREMENT, so that an id is never reused
-- after the newest row was purged (a replica would miss the row that reused it).
CREATE TABLE revocations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT    NOT NULL CHECK (kind IN ('subject', 'token')),
    value       TEXT    NOT NULL,
    revoked_at  INTEGER NOT NULL,  -- microseconds since the epoch
    expires_at  INTEGER,           -- NULL: kept until deleted by hand
    revoked_by  TEXT    NOT NULL,
    reason      TEXT
) STRICT;

CREATE INDEX revocations_expiry ON revocations (expires_at);
