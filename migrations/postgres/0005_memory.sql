-- Agent memory: scoped facts with full-text (and, when an embedder is
-- configured, vector) recall, and a per-workspace key/value memory.

-- Scoped facts an agent commits and recalls.
CREATE TABLE memories (
    -- Mirrors SQLite's integer key (its FTS5 index needs one); here it
    -- only orders the back-fill.
    seq             bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    id              uuid PRIMARY KEY,
    -- The owner: the workspace that committed it. No foreign key, like
    -- activity_logs: a removed workspace keeps its memories while it is
    -- remembered; the sweeper deletes them when it purges the workspace.
    workspace_id    uuid NOT NULL,
    -- Who may read it: LOCAL (the owner), TEAM (the owner's parent,
    -- children and siblings too), GLOBAL (every workspace).
    scope           text NOT NULL CHECK (scope IN ('LOCAL', 'TEAM', 'GLOBAL')),
    -- A free label to group facts ("general", "decisions", …).
    namespace       text NOT NULL CHECK (length(namespace) BETWEEN 1 AND 100),
    -- At most 64 KiB (in bytes, as the API checks it).
    content         text NOT NULL CHECK (octet_length(content) BETWEEN 1 AND 65536),
    -- Little-endian float32 vector from the embedder, compared in the
    -- server (portable: no extension needed); NULL until the embedder
    -- answered (the sweeper back-fills it).
    embedding       bytea,
    -- The model that produced `embedding`: vectors of different models are
    -- never compared.
    embedding_model text,
    created_at      timestamptz NOT NULL,
    -- The full-text document. The 'simple' configuration lowercases and
    -- splits without a language's stemmer or stop words, so text in any
    -- language is indexed the same way; unaccent is not immutable, so
    -- accents are kept (SQLite folds them).
    content_tsv     tsvector GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED
);
-- Listing a workspace's memories newest first, and the readable-set filter.
CREATE INDEX idx_memories_workspace_created ON memories (workspace_id, created_at);
-- GLOBAL memories are read by everyone: find them without a scan.
CREATE INDEX idx_memories_scope_created ON memories (scope, created_at);
-- The back-fill finds rows without a vector.
CREATE INDEX idx_memories_missing_embedding ON memories (seq) WHERE embedding IS NULL;
-- Full-text matches without a scan.
CREATE INDEX idx_memories_content_tsv ON memories USING gin (content_tsv);

-- The key/value memory of a workspace (the canvas Memory tab).
CREATE TABLE memory_kv (
    workspace_id uuid NOT NULL,
    key          text NOT NULL CHECK (length(key) BETWEEN 1 AND 256),
    -- Any JSON value.
    value        jsonb NOT NULL,
    -- Incremented by every write: the optimistic-concurrency token.
    version      bigint NOT NULL CHECK (version >= 1),
    -- NULL: kept until deleted. Past it the key reads as absent at once and
    -- the sweeper deletes the row.
    expires_at   timestamptz,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, key)
);
-- The sweep finds expired keys without a scan.
CREATE INDEX idx_memory_kv_expires ON memory_kv (expires_at) WHERE expires_at IS NOT NULL;
