-- A2A push notifications: the webhooks a task's caller registered
-- (Create/Get/List/DeleteTaskPushNotificationConfig) and the durable outbox
-- of the notifications owed to them. An outbox row is written in the same
-- transaction as the ledger move it reports, so a move is never committed
-- without its notifications (nor they without it); a background job sends
-- them, retrying with backoff, and a server restart loses none.
CREATE TABLE a2a_push_configs (
    -- The task (an A2A task row, so a ledger row); the configs go with it
    -- when the ledger row is purged.
    task_id         uuid NOT NULL REFERENCES a2a_tasks (id) ON DELETE CASCADE,
    -- The config's id: the client's, else one the server chose. Unique per
    -- task (A2A names a config by task and id).
    id              text NOT NULL CHECK (length(id) BETWEEN 1 AND 200),
    -- Where notifications are POSTed: checked like a push workspace's URL
    -- when set (no internal addresses), and called through the same
    -- SSRF-guarded client.
    url             text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    -- The client's token, sent back as `X-A2A-Notification-Token` so its
    -- receiver can tell our calls from others.
    token           text CHECK (length(token) <= 1000),
    -- AuthenticationInfo: the scheme (e.g. `Bearer`) and credentials sent
    -- as `Authorization: <scheme> <credentials>` on every notification.
    auth_scheme     text CHECK (length(auth_scheme) BETWEEN 1 AND 100),
    auth_credentials text CHECK (length(auth_credentials) <= 4000),
    -- The A2A version the config was made in ('1.0' or '0.3'): the body of
    -- a notification is the task in that version's JSON.
    dialect         text NOT NULL CHECK (dialect IN ('1.0', '0.3')),
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (task_id, id)
);

CREATE TABLE a2a_push_outbox (
    -- Also the order notifications to one config are sent in.
    id              bigserial PRIMARY KEY,
    -- The config owed the notification; deleting the config (or purging
    -- its task) drops what was not sent yet.
    task_id         uuid NOT NULL,
    config_id       text NOT NULL,
    -- The ledger status the move reached: the task is sent as it was then.
    status          text NOT NULL,
    -- When the move happened (the status' timestamp in the body).
    moved_at        timestamptz NOT NULL,
    -- Sends tried so far; past the job's bound the row gives up.
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Not sent before this: the backoff after a failure, or the lease of
    -- a sender that claimed the row (so two never send it at once).
    next_at         timestamptz NOT NULL,
    -- Why the last try failed.
    last_error      text,
    -- Set when the job stopped trying: the row is kept as the record of a
    -- notification never delivered, until the activity retention passes.
    gave_up_at      timestamptz,
    FOREIGN KEY (task_id, config_id) REFERENCES a2a_push_configs (task_id, id)
        ON DELETE CASCADE
);

-- The job's claim: rows still owed, by when they are due.
CREATE INDEX idx_a2a_push_outbox_due ON a2a_push_outbox (next_at) WHERE gave_up_at IS NULL;
-- One config's rows in order (only its oldest owed row is sent), and the
-- foreign key's cascade.
CREATE INDEX idx_a2a_push_outbox_config ON a2a_push_outbox (task_id, config_id, id);
