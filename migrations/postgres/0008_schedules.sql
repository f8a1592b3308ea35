-- Schedules: work on a clock. A schedule names a cron expression read in
-- an IANA zone and a prompt; each due instant becomes, in one transaction,
-- a schedule_fires row and (when delivered) a delegation ledger row whose
-- caller is 'schedule:<id>' plus the callee's inbox row.
CREATE TABLE schedules (
    id           uuid PRIMARY KEY,
    -- The workspace the prompt is delivered to. Its schedules go with its
    -- row when the sweeper purges a removed workspace.
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- Five-field cron or a macro, checked by the server (src/domain/schedule.rs).
    cron_expr    text NOT NULL CHECK (length(cron_expr) BETWEEN 1 AND 200),
    -- An IANA zone name; the expression is read in it.
    timezone     text NOT NULL CHECK (length(timezone) BETWEEN 1 AND 100),
    prompt       text NOT NULL CHECK (length(prompt) >= 1),
    enabled      boolean NOT NULL,
    -- What a fire does while an earlier one is still in flight.
    overlap      text NOT NULL CHECK (overlap IN ('skip', 'buffer_one', 'allow_all')),
    -- Seconds: a fire due longer ago than this is recorded missed, not made.
    catch_up_s   bigint NOT NULL CHECK (catch_up_s >= 0),
    -- The latest fire that was delivered (not skipped or missed).
    last_run_at  timestamptz,
    -- The next due instant; the scheduler fires rows with next_run_at <= now.
    -- Advanced in the same transaction as the fire it made.
    next_run_at  timestamptz NOT NULL,
    -- Fires delivered.
    run_count    bigint NOT NULL DEFAULT 0,
    -- The status and detail of the latest fire of any kind.
    last_status  text,
    last_error   text,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    -- Names are how people and the CLI tell a workspace's schedules apart.
    CONSTRAINT schedules_workspace_name_unique UNIQUE (workspace_id, name)
);

-- The scheduler's tick: enabled schedules in due order. Partial, so
-- disabled schedules cost the tick nothing.
CREATE INDEX idx_schedules_due ON schedules (next_run_at) WHERE enabled;

-- What became of each due instant of a schedule, and of each manual run.
CREATE TABLE schedule_fires (
    id            uuid PRIMARY KEY,
    schedule_id   uuid NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    -- The instant the cron expression named (a manual run: the request's time).
    due_at        timestamptz NOT NULL,
    -- When the scheduler (or the run request) handled it.
    fired_at      timestamptz NOT NULL,
    -- delivered (a delegation was made; answered and failed are read from
    -- it), skipped (overlap policy) or missed (outside the catch-up window).
    status        text NOT NULL CHECK (status IN ('delivered', 'skipped', 'missed')),
    -- The delegation a delivered fire made. Not a foreign key: the ledger's
    -- retention purge may remove it before the fire row goes.
    delegation_id uuid,
    -- Why: the overlap or the window, in a sentence.
    detail        text,
    CHECK ((status = 'delivered') = (delegation_id IS NOT NULL)),
    -- Exactly once per due instant: however many scheduler replicas race,
    -- the database accepts one row for (schedule, due_at).
    CONSTRAINT schedule_fires_once UNIQUE (schedule_id, due_at)
);

-- History, newest first.
CREATE INDEX idx_schedule_fires_history ON schedule_fires (schedule_id, fired_at DESC);
-- The overlap check: a schedule's delivered fires, to find one in flight.
CREATE INDEX idx_schedule_fires_delegation ON schedule_fires (delegation_id)
    WHERE delegation_id IS NOT NULL;
