-- Read state kept by the server (issue 30, defect 10), SQLite flavour: the
-- same columns and rules as migrations/postgres/0021_read_positions.sql
-- (read the comments there); ids are text, timestamps integer microseconds.

CREATE TABLE read_positions (
    -- 'admin' (the configuration's admin token) or 'token:<id>' (an
    -- operator token): each reads for itself.
    reader       TEXT NOT NULL CHECK (length(reader) BETWEEN 1 AND 64),
    -- The workspace whose chat was read; its positions go with it.
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    -- The newest activity row id seen in that chat; only grows.
    last_read_id INTEGER NOT NULL CHECK (last_read_id >= 0),
    -- When it last moved.
    updated_at   INTEGER NOT NULL,
    -- One position per reader and workspace (and the reader's index).
    PRIMARY KEY (reader, workspace_id)
);
