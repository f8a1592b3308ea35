-- molecule schema, SQLite flavour: the embedded default. Same tables and
-- rules as migrations/postgres/ (read the comments there); here ids are
-- lowercase hyphenated text, timestamps are integer microseconds since the
-- Unix epoch (so comparisons are exact), and JSON is text.

CREATE TABLE workspaces (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    delivery_mode     TEXT NOT NULL CHECK (delivery_mode IN ('push', 'poll')),
    url               TEXT,
    agent_card        TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    last_heartbeat_at INTEGER,
    activity_swept_through INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE workspace_auth_tokens (
    token_hash   BLOB PRIMARY KEY CHECK (length(token_hash) = 32),
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);
CREATE INDEX idx_workspace_auth_tokens_live
    ON workspace_auth_tokens (workspace_id) WHERE revoked_at IS NULL;

-- AUTOINCREMENT: an id is never reused after the retention sweep deletes
-- the newest rows, so a cursor can never point at a recycled id. SQLite
-- runs one writer at a time, so ids are in commit order.
CREATE TABLE activity_logs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id  TEXT NOT NULL,
    activity_type TEXT NOT NULL CHECK (length(activity_type) BETWEEN 1 AND 100),
    method        TEXT,
    source_id     TEXT,
    target_id     TEXT,
    summary       TEXT,
    request_body  TEXT,
    response_body TEXT,
    status        TEXT,
    error_detail  TEXT,
    data          TEXT,
    created_at    INTEGER NOT NULL
);
CREATE INDEX idx_activity_logs_workspace_type_id
    ON activity_logs (workspace_id, activity_type, id);
CREATE INDEX idx_activity_logs_workspace_id ON activity_logs (workspace_id, id);
CREATE INDEX idx_activity_logs_created_at ON activity_logs (created_at);

CREATE TABLE pending_uploads (
    file_id      TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    blob_key     TEXT NOT NULL UNIQUE,
    size_bytes   INTEGER NOT NULL CHECK (size_bytes > 0 AND size_bytes <= 26214400),
    sha256       TEXT NOT NULL CHECK (length(sha256) = 64),
    filename     TEXT NOT NULL CHECK (length(filename) BETWEEN 1 AND 100),
    mimetype     TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    fetched_at   INTEGER,
    acked_at     INTEGER,
    expires_at   INTEGER NOT NULL,
    CHECK (expires_at > created_at)
);
CREATE INDEX idx_pending_uploads_workspace_unacked
    ON pending_uploads (workspace_id, created_at) WHERE acked_at IS NULL;
CREATE INDEX idx_pending_uploads_expires
    ON pending_uploads (expires_at) WHERE acked_at IS NULL;
CREATE INDEX idx_pending_uploads_acked
    ON pending_uploads (acked_at) WHERE acked_at IS NOT NULL;

CREATE TABLE blob_chunks (
    blob_key   TEXT NOT NULL,
    seq        INTEGER NOT NULL CHECK (seq >= 0),
    content    BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (blob_key, seq)
);
