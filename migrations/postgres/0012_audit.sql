-- The audit trail (issue 27): one append-only row per security-relevant
-- change, chained by HMAC-SHA256 so a row edited or deleted in the database
-- directly is detected (`molecule audit verify`, `chain_valid`). The chain
-- rule lives in src/domain/audit.rs.

CREATE TABLE audit_events (
    -- The row's place in the chain: 1, 2, 3… without gaps, assigned under
    -- the head's row lock, so a gap means a deleted row.
    seq          bigint PRIMARY KEY,
    -- When it was recorded; covered by the hash at microsecond precision.
    at           timestamptz NOT NULL,
    -- `operator`, `workspace:<id>` or `system`.
    actor        text NOT NULL,
    -- What happened, e.g. `secret.set`, `approval.decided`, `tool_call`.
    action       text NOT NULL,
    -- The workspace the row concerns (its audit view filters on it); NULL
    -- for fleet-wide changes. No foreign key: the trail outlives a purged
    -- workspace, and a cascade would break the chain.
    workspace_id uuid,
    -- What was acted on, e.g. `secret:API_KEY`, `approval:<id>`.
    target       text,
    -- The details as the JSON text that was hashed: text, not jsonb, so
    -- the bytes read back are the bytes hashed. Names, never secret values.
    details      text NOT NULL,
    -- SHA-256 of `details` (hex).
    details_hash text NOT NULL,
    -- The previous row's `hash` (64 zeros for the first row).
    prev_hash    text NOT NULL,
    -- HMAC-SHA256(key, prev_hash ‖ row) (hex).
    hash         text NOT NULL
);

-- A workspace's trail, newest first.
CREATE INDEX idx_audit_events_workspace ON audit_events (workspace_id, seq);

-- The newest row's seq and hash, one row. Appends lock it (SELECT … FOR
-- UPDATE), so concurrent writers, on any replica, never fork the chain;
-- and verification compares it with the last row, so deleting the newest
-- rows is detected too.
CREATE TABLE audit_head (
    -- Always 1: the table has exactly one row.
    id   integer PRIMARY KEY CHECK (id = 1),
    -- The seq of the newest row (0 while the trail is empty).
    seq  bigint NOT NULL,
    -- The hash of the newest row (64 zeros while the trail is empty).
    hash text NOT NULL
);

INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, repeat('0', 64));
