-- The remote-agent surface, SQLite flavour: the same tables and rules as
-- migrations/postgres/0003_agent.sql (read the comments there); ids are
-- text, timestamps integer microseconds, sealed values blobs.

-- One canary sealed under the server key, opened at start-up: a wrong key
-- is found there, not as garbage later.
CREATE TABLE secrets_key_check (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    sealed     BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

-- Secrets every workspace inherits; sealed = nonce || ciphertext || tag.
CREATE TABLE global_secrets (
    name       TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 128),
    sealed     BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- A workspace's own secrets; they go with the workspace.
CREATE TABLE workspace_secrets (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    sealed       BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, name)
);

-- Published plugins; the orphan reaper keeps every blob named here.
CREATE TABLE plugins (
    name       TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 100),
    blob_key   TEXT NOT NULL UNIQUE,
    size_bytes INTEGER NOT NULL CHECK (size_bytes > 0 AND size_bytes <= 104857600),
    sha256     TEXT NOT NULL CHECK (length(sha256) = 64),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- What a workspace reports it installed (not a foreign key to plugins).
CREATE TABLE workspace_plugins (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    source       TEXT NOT NULL CHECK (length(source) BETWEEN 1 AND 2048),
    installed_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
