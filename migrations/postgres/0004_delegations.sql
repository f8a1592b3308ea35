-- The delegation ledger: one row per task a caller hands to a callee
-- workspace, kept durably so that nothing is silently lost when a callee
-- restarts, hangs, or never reports back. The row moves forward only
-- (queued → dispatched → in_progress → completed | failed; the sweeper may
-- park a silent one as stuck, from which the callee can still finish it);
-- the status machine itself lives in src/domain/delegation.rs.
CREATE TABLE delegations (
    id                uuid PRIMARY KEY,
    -- The delegating workspace's id as text, or 'operator' when the
    -- operator delegated: text, not uuid, so both kinds of caller fit.
    -- Not a foreign key, like the activity log: the ledger is evidence and
    -- outlives a deleted workspace.
    caller_id         text NOT NULL CHECK (length(caller_id) BETWEEN 1 AND 64),
    callee_id         uuid NOT NULL,
    -- The first 200 characters of task, for listings and the admin views
    -- that must not ship whole tasks around.
    task_preview      text NOT NULL,
    task              text NOT NULL CHECK (length(task) >= 1),
    -- Chosen by the caller (the SDK derives it from the task and the
    -- minute); see the UNIQUE constraint below.
    idempotency_key   text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    status            text NOT NULL CHECK (status IN
                        ('queued', 'dispatched', 'in_progress', 'completed', 'failed', 'stuck')),
    -- The start of the callee's answer (completed) and why it failed or
    -- stalled (failed, stuck). A same-status repeat may still fill them.
    result_preview    text,
    error_detail      text,
    -- NULL: no deadline. Past it, the sweeper fails a non-terminal row.
    deadline_at       timestamptz,
    -- Bumped by every callee report and heartbeat; a dispatched or
    -- in-progress row silent for too long is marked stuck.
    last_heartbeat_at timestamptz,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    -- Set when the row reaches completed or failed; drives the retention
    -- purge and the completion-time figures.
    completed_at      timestamptz,
    -- Exactly once per (caller, key): the constraint, not a read-then-write
    -- in the handler, is what makes two racing identical requests produce
    -- one row (INSERT … ON CONFLICT DO NOTHING, then read the winner).
    CONSTRAINT delegations_caller_key_unique UNIQUE (caller_id, idempotency_key),
    CHECK ((status IN ('completed', 'failed')) = (completed_at IS NOT NULL))
);

-- The sweeper, deadline branch: non-terminal rows with a deadline, oldest
-- deadline first.
CREATE INDEX idx_delegations_deadline ON delegations (deadline_at)
    WHERE status IN ('queued', 'dispatched', 'in_progress', 'stuck') AND deadline_at IS NOT NULL;
-- The sweeper, stuck branch: rows a callee is working on, by last sign of life.
CREATE INDEX idx_delegations_heartbeat ON delegations (last_heartbeat_at)
    WHERE status IN ('dispatched', 'in_progress');
-- The retention purge and the 24 h completion figures: terminal rows by
-- completion time.
CREATE INDEX idx_delegations_completed ON delegations (completed_at)
    WHERE completed_at IS NOT NULL;
-- Listings, newest first: a workspace as caller, as callee, and the
-- operator's view by status or overall.
CREATE INDEX idx_delegations_caller ON delegations (caller_id, created_at);
CREATE INDEX idx_delegations_callee ON delegations (callee_id, created_at);
CREATE INDEX idx_delegations_status ON delegations (status, created_at);
CREATE INDEX idx_delegations_created ON delegations (created_at);
