-- Schedules, SQLite flavour: the same tables and rules as
-- migrations/postgres/0008_schedules.sql (read the comments there); ids
-- are text, timestamps integer microseconds since the Unix epoch, and
-- booleans 0/1.
CREATE TABLE schedules (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    cron_expr    TEXT NOT NULL CHECK (length(cron_expr) BETWEEN 1 AND 200),
    timezone     TEXT NOT NULL CHECK (length(timezone) BETWEEN 1 AND 100),
    prompt       TEXT NOT NULL CHECK (length(prompt) >= 1),
    enabled      BOOLEAN NOT NULL,
    overlap      TEXT NOT NULL CHECK (overlap IN ('skip', 'buffer_one', 'allow_all')),
    catch_up_s   INTEGER NOT NULL CHECK (catch_up_s >= 0),
    last_run_at  INTEGER,
    next_run_at  INTEGER NOT NULL,
    run_count    INTEGER NOT NULL DEFAULT 0,
    last_status  TEXT,
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    -- Names are unique per workspace.
    CONSTRAINT schedules_workspace_name_unique UNIQUE (workspace_id, name)
);

-- The scheduler's tick: enabled schedules in due order.
CREATE INDEX idx_schedules_due ON schedules (next_run_at) WHERE enabled;

CREATE TABLE schedule_fires (
    id            TEXT PRIMARY KEY,
    schedule_id   TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    due_at        INTEGER NOT NULL,
    fired_at      INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('delivered', 'skipped', 'missed')),
    delegation_id TEXT,
    detail        TEXT,
    CHECK ((status = 'delivered') = (delegation_id IS NOT NULL)),
    -- Exactly once per due instant.
    CONSTRAINT schedule_fires_once UNIQUE (schedule_id, due_at)
);

-- History, newest first.
CREATE INDEX idx_schedule_fires_history ON schedule_fires (schedule_id, fired_at DESC);
-- The overlap check.
CREATE INDEX idx_schedule_fires_delegation ON schedule_fires (delegation_id)
    WHERE delegation_id IS NOT NULL;
