-- Teams and lifecycle: workspaces form a tree, carry a tier, a runtime and
-- a model, can be paused, and are soft-deleted so their history and the
-- "deleted" answer of /workspaces/:id/state outlive the DELETE.

-- The parent in the team tree; NULL for a root. SET NULL rather than
-- CASCADE: the purge of a removed parent must never delete rows on its
-- own (a parent is only removed once its children are).
ALTER TABLE workspaces ADD COLUMN parent_id uuid
    REFERENCES workspaces (id) ON DELETE SET NULL;
-- The canvas's visual fold of this workspace's subtree; nothing else reads it.
ALTER TABLE workspaces ADD COLUMN collapsed boolean NOT NULL DEFAULT false;
-- Resource tier 1 (smallest) to 4. Existing rows get 3, the default tier.
ALTER TABLE workspaces ADD COLUMN tier smallint NOT NULL DEFAULT 3
    CHECK (tier BETWEEN 1 AND 4);
-- What runs the agent (free text: 'external', 'claude-code', …).
ALTER TABLE workspaces ADD COLUMN runtime text NOT NULL DEFAULT 'external'
    CHECK (length(runtime) BETWEEN 1 AND 100);
-- The model the agent runs; decided at create time when the request names
-- none. NULL only for workspaces created before this migration.
ALTER TABLE workspaces ADD COLUMN model text
    CHECK (model IS NULL OR length(model) BETWEEN 1 AND 100);
-- Set while the operator has the workspace paused.
ALTER TABLE workspaces ADD COLUMN paused_at timestamptz;
-- Set by DELETE (soft delete). The row stays for --activity-retention,
-- then the sweeper purges it.
ALTER TABLE workspaces ADD COLUMN removed_at timestamptz;
-- What the last heartbeat reported.
ALTER TABLE workspaces ADD COLUMN current_task text;
ALTER TABLE workspaces ADD COLUMN active_tasks integer NOT NULL DEFAULT 0
    CHECK (active_tasks >= 0);
ALTER TABLE workspaces ADD COLUMN error_rate double precision
    CHECK (error_rate IS NULL OR (error_rate >= 0 AND error_rate <= 1));
ALTER TABLE workspaces ADD COLUMN sample_error text;
ALTER TABLE workspaces ADD COLUMN uptime_seconds bigint
    CHECK (uptime_seconds IS NULL OR uptime_seconds >= 0);

-- Children of a workspace, and the org import's "(parent, name) already
-- exists?" lookup, both among live rows only.
CREATE INDEX idx_workspaces_parent_name_live
    ON workspaces (parent_id, name) WHERE removed_at IS NULL;
-- The purge of removed rows past retention.
CREATE INDEX idx_workspaces_removed_at
    ON workspaces (removed_at) WHERE removed_at IS NOT NULL;
-- The phantom-busy sweep: live rows claiming work.
CREATE INDEX idx_workspaces_busy
    ON workspaces (last_heartbeat_at) WHERE active_tasks > 0 AND removed_at IS NULL;
