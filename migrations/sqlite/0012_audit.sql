-- The audit trail (issue 27), SQLite flavour: the same tables and rules as
-- migrations/postgres/0012_audit.sql (read the comments there); ids are
-- text, timestamps integer microseconds. Appends are serialised by the
-- one-writer lock every write transaction takes.

CREATE TABLE audit_events (
    -- 1, 2, 3… without gaps; a gap means a deleted row.
    seq          INTEGER PRIMARY KEY,
    -- Covered by the hash.
    at           INTEGER NOT NULL,
    -- `operator`, `workspace:<id>` or `system`.
    actor        TEXT NOT NULL,
    -- What happened, e.g. `secret.set`.
    action       TEXT NOT NULL,
    -- The workspace it concerns; no foreign key (the trail outlives it).
    workspace_id TEXT,
    -- What was acted on.
    target       TEXT,
    -- The JSON text that was hashed, byte for byte.
    details      TEXT NOT NULL,
    -- SHA-256 of `details` (hex).
    details_hash TEXT NOT NULL,
    -- The previous row's hash (64 zeros for the first row).
    prev_hash    TEXT NOT NULL,
    -- HMAC-SHA256(key, prev_hash ‖ row) (hex).
    hash         TEXT NOT NULL
);

-- A workspace's trail, newest first.
CREATE INDEX idx_audit_events_workspace ON audit_events (workspace_id, seq);

-- The newest row's seq and hash (one row): deleting the newest rows is
-- detected against it.
CREATE TABLE audit_head (
    -- Always 1.
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    -- The newest seq (0 while empty).
    seq  INTEGER NOT NULL,
    -- The newest hash (64 zeros while empty).
    hash TEXT NOT NULL
);

INSERT INTO audit_head (id, seq, hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
