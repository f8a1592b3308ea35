-- A2A tasks, SQLite flavour: the same table as
-- migrations/postgres/0010_a2a_tasks.sql (read the comments there); ids are
-- text and timestamps integer microseconds since the Unix epoch.
CREATE TABLE a2a_tasks (
    -- The ledger row this task is; goes with it when purged.
    id          TEXT PRIMARY KEY REFERENCES delegations (id) ON DELETE CASCADE,
    -- The A2A contextId: the caller's, else the task id.
    context_id  TEXT NOT NULL CHECK (length(context_id) BETWEEN 1 AND 200),
    -- The caller's messageId of the message that made the task.
    message_id  TEXT NOT NULL CHECK (length(message_id) BETWEEN 1 AND 200),
    -- Set when the caller canceled (the ledger row is `failed` then).
    canceled_at INTEGER
);

-- ListTasks filtered by context.
CREATE INDEX idx_a2a_tasks_context ON a2a_tasks (context_id);
