-- Platform instructions (issue 27), SQLite flavour: the same table and
-- rules as migrations/postgres/0011_instructions.sql (read the comments
-- there); ids are text, timestamps integer microseconds, booleans 0/1.

CREATE TABLE instructions (
    id           TEXT PRIMARY KEY,
    -- global, team (the subtree under scope_target) or workspace.
    scope        TEXT NOT NULL CHECK (scope IN ('global', 'team', 'workspace')),
    -- The team's lead or the workspace; NULL for global.
    scope_target TEXT REFERENCES workspaces (id) ON DELETE CASCADE,
    -- The `## ` heading of the resolved text.
    title        TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    -- Markdown, 8 KiB at most (length of the blob: bytes).
    content      TEXT NOT NULL CHECK (length(CAST(content AS BLOB)) <= 8192),
    -- Within its group, higher first.
    priority     INTEGER NOT NULL,
    -- A disabled rule is left out of every resolution.
    enabled      BOOLEAN NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    -- A global rule names no workspace; the others name one.
    CONSTRAINT instructions_target_matches_scope
        CHECK ((scope = 'global') = (scope_target IS NULL))
);

-- Resolution: rules by target.
CREATE INDEX idx_instructions_target ON instructions (scope_target);
