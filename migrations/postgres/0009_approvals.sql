-- Approvals (issue 27): approval requests and their one decision.

-- An agent's request to act, decided once by the operator or by an
-- ancestor workspace (the parent first; escalation on expiry moves up the
-- tree, then to the operator).
CREATE TABLE approvals (
    id           uuid PRIMARY KEY,
    -- The requesting workspace: the decision goes to its inbox. Its
    -- requests go with its row when the sweeper purges a removed workspace.
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    -- What the agent wants to do, in a line (Molecule's `action`).
    action       text NOT NULL CHECK (length(action) BETWEEN 1 AND 200),
    -- Why, for the decider.
    reason       text,
    -- Anything the agent adds for the decider (shown as JSON).
    context      jsonb,
    -- The agent's own task the request belongs to, echoed back.
    task_id      text,
    -- pending until the one decision; approved and denied are final.
    status       text NOT NULL CHECK (status IN ('pending', 'approved', 'denied')),
    -- The workspace that may decide now besides the operator; NULL: the
    -- operator alone (a root workspace's request, or escalated past the
    -- root). SET NULL when that workspace is purged, which hands the
    -- request to the operator rather than to nobody.
    approver_id  uuid REFERENCES workspaces (id) ON DELETE SET NULL,
    -- What the expiry job does when nobody decided by expires_at.
    on_expiry    text NOT NULL CHECK (on_expiry IN ('deny', 'approve', 'escalate')),
    -- The window each decider gets, in seconds (re-armed by escalation).
    expires_in_s bigint NOT NULL CHECK (expires_in_s > 0),
    -- When the expiry job acts; NULL once decided, or while the operator
    -- holds an escalated request (they are the last resort).
    expires_at   timestamptz,
    -- How many times expiry handed the request up.
    escalations  integer NOT NULL DEFAULT 0 CHECK (escalations >= 0),
    -- 'operator', the deciding workspace's id, or 'expired'.
    decided_by   text,
    -- The decider's note to the agent.
    note         text,
    created_at   timestamptz NOT NULL,
    decided_at   timestamptz,
    -- A decision names who made it and when; a pending request neither.
    CONSTRAINT approvals_decided_has_decider
        CHECK ((status = 'pending') = (decided_by IS NULL)),
    CONSTRAINT approvals_decided_has_time
        CHECK ((status = 'pending') = (decided_at IS NULL))
);

-- GET /workspaces/:id/approvals: a workspace's requests, newest first.
CREATE INDEX idx_approvals_workspace ON approvals (workspace_id, created_at);
-- The expiry job: pending requests in due order. Partial, so decided rows
-- cost it nothing.
CREATE INDEX idx_approvals_due ON approvals (expires_at)
    WHERE status = 'pending' AND expires_at IS NOT NULL;
-- What a workspace (or, approver_id NULL, the operator) has to decide.
CREATE INDEX idx_approvals_approver ON approvals (approver_id, created_at)
    WHERE status = 'pending';
