-- Named, listable, revocable credentials (issue 32): several tokens per
-- workspace, and operator tokens with a role.

-- Workspace tokens get an id (what the list shows and DELETE names: the
-- hash is never shown), an optional name, the first characters of the
-- secret (so a holder can tell which token is which without the list
-- showing the secret), an optional expiry and the last-used stamp.
-- Tokens minted before this migration get a random id; their prefix is
-- not known any more, so it is the bare scheme 'mol_'.
ALTER TABLE workspace_auth_tokens
    ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid(),
    -- A label for humans; NULL when none was given.
    ADD COLUMN name text CHECK (name IS NULL OR length(name) BETWEEN 1 AND 100),
    -- 'mol_' and the first characters of the secret: identifies, never
    -- authenticates (far too short to guess the rest from).
    ADD COLUMN prefix text NOT NULL DEFAULT 'mol_' CHECK (length(prefix) BETWEEN 4 AND 16),
    -- Past this instant the token no longer authenticates; NULL: never.
    ADD COLUMN expires_at timestamptz,
    -- When the token last authenticated a request, written in batches
    -- (a few seconds late at most), never one write per request.
    ADD COLUMN last_used_at timestamptz;

-- The id is what routes name a token by.
CREATE UNIQUE INDEX idx_workspace_auth_tokens_id ON workspace_auth_tokens (id);

-- Operator tokens: credentials for people and jobs that run the org, each
-- with a role and optionally confined to one team subtree. The first-start
-- admin token is not a row: it stays in the configuration.
CREATE TABLE operator_tokens (
    id           uuid PRIMARY KEY,
    -- Looked up by the SHA-256 of the secret; the secret is never stored.
    token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    -- A label for humans; NULL when none was given.
    name         text CHECK (name IS NULL OR length(name) BETWEEN 1 AND 100),
    -- admin: everything; operator: everything but tokens and global
    -- secrets; viewer: reads only.
    role         text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    -- When set, the token reaches only this workspace and its descendants.
    -- The token goes with its root when the sweeper purges a removed one.
    team_root    uuid REFERENCES workspaces (id) ON DELETE CASCADE,
    -- As for workspace tokens.
    prefix       text NOT NULL CHECK (length(prefix) BETWEEN 4 AND 16),
    created_at   timestamptz NOT NULL,
    -- Past this instant the token no longer authenticates; NULL: never.
    expires_at   timestamptz,
    -- Written in batches, as for workspace tokens.
    last_used_at timestamptz,
    -- Set once by DELETE /org/tokens/:id; a revoked row is kept (its id
    -- stays meaningful in logs) but never authenticates again.
    revoked_at   timestamptz
);

-- The list shows live tokens, newest first.
CREATE INDEX idx_operator_tokens_live ON operator_tokens (created_at) WHERE revoked_at IS NULL;
