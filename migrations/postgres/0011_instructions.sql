-- Platform instructions (issue 27): rules the operator writes once and the
-- agents they apply to read at start (GET /workspaces/:id/instructions/resolve).

CREATE TABLE instructions (
    id           uuid PRIMARY KEY,
    -- Whom it applies to: every workspace, a team (the subtree under
    -- scope_target, its lead), or the workspace scope_target alone.
    scope        text NOT NULL CHECK (scope IN ('global', 'team', 'workspace')),
    -- The team's lead or the workspace; NULL for global. The rule goes
    -- with its workspace when the sweeper purges a removed one.
    scope_target uuid REFERENCES workspaces (id) ON DELETE CASCADE,
    -- A heading for humans and the `## ` line of the resolved text.
    title        text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    -- The Markdown the agent reads; 8 KiB at most (octet_length: bytes).
    content      text NOT NULL CHECK (octet_length(content) <= 8192),
    -- Within its group, higher first.
    priority     integer NOT NULL,
    -- A disabled rule is kept but left out of every resolution.
    enabled      boolean NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    -- A global rule names no workspace; a team or workspace rule names one.
    CONSTRAINT instructions_target_matches_scope
        CHECK ((scope = 'global') = (scope_target IS NULL))
);

-- Resolution: the rules of a workspace and of its ancestors, by target.
CREATE INDEX idx_instructions_target ON instructions (scope_target);
