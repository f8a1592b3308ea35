-- Named, listable, revocable credentials (issue 32), SQLite flavour: the
-- same columns and rules as migrations/postgres/0013_tokens.sql (read the
-- comments there); ids are text, timestamps integer microseconds.

-- The token's id; existing tokens get a random one below.
ALTER TABLE workspace_auth_tokens ADD COLUMN id TEXT;
-- A label for humans; NULL when none was given.
ALTER TABLE workspace_auth_tokens ADD COLUMN name TEXT
    CHECK (name IS NULL OR length(name) BETWEEN 1 AND 100);
-- 'mol_' and the first characters of the secret ('mol_' for old tokens).
ALTER TABLE workspace_auth_tokens ADD COLUMN prefix TEXT NOT NULL DEFAULT 'mol_'
    CHECK (length(prefix) BETWEEN 4 AND 16);
-- Past this instant the token no longer authenticates; NULL: never.
ALTER TABLE workspace_auth_tokens ADD COLUMN expires_at INTEGER;
-- Written in batches, never one write per request.
ALTER TABLE workspace_auth_tokens ADD COLUMN last_used_at INTEGER;

-- A random id in the canonical UUID text shape for the tokens minted
-- before this migration (new ones get theirs from the server).
UPDATE workspace_auth_tokens SET id = lower(
    hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-' || hex(randomblob(2)) || '-' ||
    hex(randomblob(2)) || '-' || hex(randomblob(6)));

-- The id is what routes name a token by.
CREATE UNIQUE INDEX idx_workspace_auth_tokens_id ON workspace_auth_tokens (id);

-- Operator tokens (see the PostgreSQL file).
CREATE TABLE operator_tokens (
    id           TEXT PRIMARY KEY,
    -- Looked up by the SHA-256 of the secret; the secret is never stored.
    token_hash   BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    -- A label for humans; NULL when none was given.
    name         TEXT CHECK (name IS NULL OR length(name) BETWEEN 1 AND 100),
    -- admin, operator or viewer.
    role         TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    -- When set, the token reaches only this workspace and its descendants.
    team_root    TEXT REFERENCES workspaces (id) ON DELETE CASCADE,
    -- 'mol_' and the first characters of the secret.
    prefix       TEXT NOT NULL CHECK (length(prefix) BETWEEN 4 AND 16),
    created_at   INTEGER NOT NULL,
    -- Past this instant the token no longer authenticates; NULL: never.
    expires_at   INTEGER,
    -- Written in batches.
    last_used_at INTEGER,
    -- Set once by DELETE /org/tokens/:id; the row is kept.
    revoked_at   INTEGER
);

-- The list shows live tokens, newest first.
CREATE INDEX idx_operator_tokens_live ON operator_tokens (created_at) WHERE revoked_at IS NULL;
