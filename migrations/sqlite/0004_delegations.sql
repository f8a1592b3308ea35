-- The delegation ledger, SQLite flavour: the same table and rules as
-- migrations/postgres/0004_delegations.sql (read the comments there); ids
-- are text and timestamps integer microseconds since the Unix epoch.
CREATE TABLE delegations (
    id                TEXT PRIMARY KEY,
    -- A workspace id, or 'operator'.
    caller_id         TEXT NOT NULL CHECK (length(caller_id) BETWEEN 1 AND 64),
    callee_id         TEXT NOT NULL,
    task_preview      TEXT NOT NULL,
    task              TEXT NOT NULL CHECK (length(task) >= 1),
    idempotency_key   TEXT NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    status            TEXT NOT NULL CHECK (status IN
                        ('queued', 'dispatched', 'in_progress', 'completed', 'failed', 'stuck')),
    result_preview    TEXT,
    error_detail      TEXT,
    deadline_at       INTEGER,
    last_heartbeat_at INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    completed_at      INTEGER,
    -- Exactly once per (caller, key), even for racing requests.
    CONSTRAINT delegations_caller_key_unique UNIQUE (caller_id, idempotency_key),
    CHECK ((status IN ('completed', 'failed')) = (completed_at IS NOT NULL))
);

-- The sweeper's two branches and the retention purge.
CREATE INDEX idx_delegations_deadline ON delegations (deadline_at)
    WHERE status IN ('queued', 'dispatched', 'in_progress', 'stuck') AND deadline_at IS NOT NULL;
CREATE INDEX idx_delegations_heartbeat ON delegations (last_heartbeat_at)
    WHERE status IN ('dispatched', 'in_progress');
CREATE INDEX idx_delegations_completed ON delegations (completed_at)
    WHERE completed_at IS NOT NULL;
-- Listings, newest first.
CREATE INDEX idx_delegations_caller ON delegations (caller_id, created_at);
CREATE INDEX idx_delegations_callee ON delegations (callee_id, created_at);
CREATE INDEX idx_delegations_status ON delegations (status, created_at);
CREATE INDEX idx_delegations_created ON delegations (created_at);
