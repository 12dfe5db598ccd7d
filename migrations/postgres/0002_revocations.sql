-- Revoked subjects and token ids (docs/SECURITY.md, "Revocation"). Every replica polls this
-- table for ids above the largest it has seen. An insert takes a lock that other inserts wait
-- for, so ids become visible in the order they are given: a poller never passes an id whose
-- row commits later.
CREATE TABLE revocations (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('subject', 'token')),
    value       text        NOT NULL,
    revoked_at  timestamptz NOT NULL,
    expires_at  timestamptz,           -- NULL: kept until deleted by hand
    revoked_by  text        NOT NULL,
    reason      text
);

CREATE INDEX revocations_expiry ON revocations (expires_at);
