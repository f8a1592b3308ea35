-- Approvals (issue 27), SQLite flavour: the same tables and rules
-- as migrations/postgres/0009_approvals.sql (read the
-- comments there); ids are text, timestamps integer microseconds since the
-- Unix epoch, JSON text.

-- Approval requests and their one decision.
CREATE TABLE approvals (
    id           TEXT PRIMARY KEY,
    -- The requesting workspace (its inbox gets the decision).
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    -- What the agent wants to do.
    action       TEXT NOT NULL CHECK (length(action) BETWEEN 1 AND 200),
    -- Why.
    reason       TEXT,
    -- JSON for the decider.
    context      TEXT,
    -- The agent's task, echoed back.
    task_id      TEXT,
    -- pending, then approved or denied for good.
    status       TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied')),
    -- Who may decide besides the operator; NULL: the operator alone.
    approver_id  TEXT REFERENCES workspaces (id) ON DELETE SET NULL,
    -- What expiry does.
    on_expiry    TEXT NOT NULL CHECK (on_expiry IN ('deny', 'approve', 'escalate')),
    -- Each decider's window, seconds.
    expires_in_s INTEGER NOT NULL CHECK (expires_in_s > 0),
    -- When the expiry job acts; NULL when decided or held by the operator.
    expires_at   INTEGER,
    -- Hand-ups so far.
    escalations  INTEGER NOT NULL DEFAULT 0 CHECK (escalations >= 0),
    -- 'operator', a workspace id, or 'expired'.
    decided_by   TEXT,
    -- The decider's note.
    note         TEXT,
    created_at   INTEGER NOT NULL,
    decided_at   INTEGER,
    -- A decision names who and when; a pending request neither.
    CONSTRAINT approvals_decided_has_decider
        CHECK ((status = 'pending') = (decided_by IS NULL)),
    CONSTRAINT approvals_decided_has_time
        CHECK ((status = 'pending') = (decided_at IS NULL))
);

-- A workspace's requests.
CREATE INDEX idx_approvals_workspace ON approvals (workspace_id, created_at);
-- The expiry job's due order.
CREATE INDEX idx_approvals_due ON approvals (expires_at)
    WHERE status = 'pending' AND expires_at IS NOT NULL;
-- What a decider has to decide.
CREATE INDEX idx_approvals_approver ON approvals (approver_id, created_at)
    WHERE status = 'pending';
