-- The remote-agent surface: encrypted secrets and the plugin registry.

-- Proof of which server key encrypted the secrets: one row holding a fixed
-- canary sealed under the key (XChaCha20-Poly1305, nonce prepended). At
-- start-up the server opens it; a different key fails there, with a clear
-- error, instead of returning garbage or failing on the first secret read.
CREATE TABLE secrets_key_check (
    -- At most one row.
    id         smallint PRIMARY KEY CHECK (id = 1),
    sealed     bytea NOT NULL,
    created_at timestamptz NOT NULL
);

-- Secrets every workspace inherits (a workspace's own key of the same name
-- wins). `sealed` is nonce || ciphertext || tag; the additional data binds
-- it to its name, so a row copied under another name does not open.
CREATE TABLE global_secrets (
    -- [A-Z_][A-Z0-9_]{0,127}: agents export secrets as environment variables.
    name       text PRIMARY KEY CHECK (name ~ '^[A-Z_][A-Z0-9_]{0,127}$'),
    sealed     bytea NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

-- A workspace's own secrets. They go with the workspace (a secret is not
-- evidence worth keeping); the additional data binds each to its workspace
-- and name.
CREATE TABLE workspace_secrets (
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (name ~ '^[A-Z_][A-Z0-9_]{0,127}$'),
    sealed       bytea NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    -- One value per key; also the index of "this workspace's secrets".
    PRIMARY KEY (workspace_id, name)
);

-- Plugins the operator published: a .tar.gz in the blob store, checked
-- while it streamed in. Publishing a name again replaces the row; the old
-- blob is deleted after the new row is committed.
CREATE TABLE plugins (
    name       text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,99}$'),
    -- Unique: two plugins never share (and so never double-delete) a blob;
    -- the orphan reaper keeps every blob named here.
    blob_key   text NOT NULL UNIQUE,
    -- The 100 MiB cap of the publish route.
    size_bytes bigint NOT NULL CHECK (size_bytes > 0 AND size_bytes <= 104857600),
    -- Hex SHA-256 of the tarball: the download's ETag, and what an agent
    -- can verify.
    sha256     text NOT NULL CHECK (length(sha256) = 64),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

-- What a workspace reports it installed. Not a foreign key to plugins: the
-- agent may install from another source, and the record outlives a plugin
-- the operator later deletes.
CREATE TABLE workspace_plugins (
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- Where it came from, as the agent says (`local://NAME`, a URL, …).
    source       text NOT NULL CHECK (length(source) BETWEEN 1 AND 2048),
    -- A re-install moves this forward.
    installed_at timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
