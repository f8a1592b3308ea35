-- A2A push notifications, SQLite flavour: the same tables as
-- migrations/postgres/0018_a2a_push.sql (read the comments there); ids are
-- text and timestamps integer microseconds since the Unix epoch.
CREATE TABLE a2a_push_configs (
    -- The task; its configs go with it.
    task_id          TEXT NOT NULL REFERENCES a2a_tasks (id) ON DELETE CASCADE,
    -- The config's id, unique per task.
    id               TEXT NOT NULL CHECK (length(id) BETWEEN 1 AND 200),
    -- Where notifications are POSTed (checked, SSRF-guarded).
    url              TEXT NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    -- Sent back as `X-A2A-Notification-Token`.
    token            TEXT CHECK (length(token) <= 1000),
    -- Sent as `Authorization: <scheme> <credentials>`.
    auth_scheme      TEXT CHECK (length(auth_scheme) BETWEEN 1 AND 100),
    auth_credentials TEXT CHECK (length(auth_credentials) <= 4000),
    -- The A2A version of the notification body.
    dialect          TEXT NOT NULL CHECK (dialect IN ('1.0', '0.3')),
    created_at       INTEGER NOT NULL,
    PRIMARY KEY (task_id, id)
);

CREATE TABLE a2a_push_outbox (
    -- Also the order of one config's notifications.
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The config owed it; its removal drops what was not sent.
    task_id     TEXT NOT NULL,
    config_id   TEXT NOT NULL,
    -- The ledger status the move reached.
    status      TEXT NOT NULL,
    -- When the move happened.
    moved_at    INTEGER NOT NULL,
    -- Sends tried so far.
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Not sent before this (backoff, or a sender's lease).
    next_at     INTEGER NOT NULL,
    -- Why the last try failed.
    last_error  TEXT,
    -- Set when the job stopped trying (kept as the record).
    gave_up_at  INTEGER,
    FOREIGN KEY (task_id, config_id) REFERENCES a2a_push_configs (task_id, id)
        ON DELETE CASCADE
);

-- The job's claim: rows still owed, by when they are due.
CREATE INDEX idx_a2a_push_outbox_due ON a2a_push_outbox (next_at) WHERE gave_up_at IS NULL;
-- One config's rows in order, and the foreign key's cascade.
CREATE INDEX idx_a2a_push_outbox_config ON a2a_push_outbox (task_id, config_id, id);
