-- A2A tasks: what the A2A view of a delegation adds to its ledger row. A
-- task sent through POST /workspaces/:id/a2a IS a delegation (task id =
-- delegation id, one row everywhere); this table holds only what the ledger
-- has no column for.
CREATE TABLE a2a_tasks (
    -- The ledger row this task is; the task goes with it when the ledger
    -- row is purged.
    id          uuid PRIMARY KEY REFERENCES delegations (id) ON DELETE CASCADE,
    -- The A2A contextId: the one the caller sent, else the task id.
    context_id  text NOT NULL CHECK (length(context_id) BETWEEN 1 AND 200),
    -- The caller's messageId of the message that made the task.
    message_id  text NOT NULL CHECK (length(message_id) BETWEEN 1 AND 200),
    -- Set when the caller canceled the task (CancelTask): the ledger row is
    -- `failed` then, and A2A shows the task `canceled`.
    canceled_at timestamptz
);

-- ListTasks filtered by context.
CREATE INDEX idx_a2a_tasks_context ON a2a_tasks (context_id);
