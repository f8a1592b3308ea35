-- Agent memory, SQLite flavour. Same tables and rules as
-- migrations/postgres/0005_memory.sql (read the comments there); here ids
-- are text, timestamps integer microseconds, JSON text, and full-text
-- search is an FTS5 index over the content.

-- Scoped facts an agent commits and recalls. `seq` exists only because an
-- external-content FTS5 table is keyed by an integer rowid; the API names a
-- memory by `id`.
CREATE TABLE memories (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    -- The owner: the workspace that committed it. No foreign key, like
    -- activity_logs: a removed workspace keeps its memories while it is
    -- remembered; the sweeper deletes them when it purges the workspace.
    workspace_id    TEXT NOT NULL,
    -- Who may read it: LOCAL (the owner), TEAM (the owner's parent,
    -- children and siblings too), GLOBAL (every workspace).
    scope           TEXT NOT NULL CHECK (scope IN ('LOCAL', 'TEAM', 'GLOBAL')),
    -- A free label to group facts ("general", "decisions", …).
    namespace       TEXT NOT NULL CHECK (length(namespace) BETWEEN 1 AND 100),
    -- At most 64 KiB (counted in bytes, as the API checks it).
    content         TEXT NOT NULL CHECK (length(CAST(content AS BLOB)) BETWEEN 1 AND 65536),
    -- Little-endian float32 vector from the embedder; NULL until the
    -- embedder answered (the sweeper back-fills it).
    embedding       BLOB,
    -- The model that produced `embedding`: vectors of different models are
    -- never compared.
    embedding_model TEXT,
    created_at      INTEGER NOT NULL
);
-- Listing a workspace's memories newest first, and the readable-set filter.
CREATE INDEX idx_memories_workspace_created ON memories (workspace_id, created_at);
-- GLOBAL memories are read by everyone: find them without a scan.
CREATE INDEX idx_memories_scope_created ON memories (scope, created_at);
-- The back-fill finds rows without a vector.
CREATE INDEX idx_memories_missing_embedding ON memories (seq) WHERE embedding IS NULL;

-- The full-text index. External content: the text is stored once (in
-- memories), the index only holds tokens. unicode61 with
-- remove_diacritics 2 folds case and accents in every script, so "Café"
-- matches "cafe".
CREATE VIRTUAL TABLE memories_fts USING fts5 (
    content,
    content = 'memories',
    content_rowid = 'seq',
    tokenize = 'unicode61 remove_diacritics 2'
);

-- The triggers keep the index in step with the table in the same
-- transaction. Content never changes after commit, but the update trigger
-- keeps the index right should it ever.
CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts (rowid, content) VALUES (new.seq, new.content);
END;
CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content) VALUES ('delete', old.seq, old.content);
END;
CREATE TRIGGER memories_fts_update AFTER UPDATE OF content ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content) VALUES ('delete', old.seq, old.content);
    INSERT INTO memories_fts (rowid, content) VALUES (new.seq, new.content);
END;

-- The key/value memory of a workspace (the canvas Memory tab).
CREATE TABLE memory_kv (
    workspace_id TEXT NOT NULL,
    key          TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 256),
    -- Any JSON value, as text.
    value        TEXT NOT NULL,
    -- Incremented by every write: the optimistic-concurrency token.
    version      INTEGER NOT NULL CHECK (version >= 1),
    -- NULL: kept until deleted. Past it the key reads as absent at once and
    -- the sweeper deletes the row.
    expires_at   INTEGER,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, key)
);
-- The sweep finds expired keys without a scan.
CREATE INDEX idx_memory_kv_expires ON memory_kv (expires_at) WHERE expires_at IS NOT NULL;
