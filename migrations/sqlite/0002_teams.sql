-- Teams and lifecycle, SQLite flavour: the same columns and rules as
-- migrations/postgres/0002_teams.sql (read the comments there); timestamps
-- are integer microseconds, booleans 0/1.

ALTER TABLE workspaces ADD COLUMN parent_id TEXT
    REFERENCES workspaces (id) ON DELETE SET NULL;
ALTER TABLE workspaces ADD COLUMN collapsed INTEGER NOT NULL DEFAULT 0
    CHECK (collapsed IN (0, 1));
ALTER TABLE workspaces ADD COLUMN tier INTEGER NOT NULL DEFAULT 3
    CHECK (tier BETWEEN 1 AND 4);
ALTER TABLE workspaces ADD COLUMN runtime TEXT NOT NULL DEFAULT 'external'
    CHECK (length(runtime) BETWEEN 1 AND 100);
ALTER TABLE workspaces ADD COLUMN model TEXT
    CHECK (model IS NULL OR length(model) BETWEEN 1 AND 100);
ALTER TABLE workspaces ADD COLUMN paused_at INTEGER;
ALTER TABLE workspaces ADD COLUMN removed_at INTEGER;
ALTER TABLE workspaces ADD COLUMN current_task TEXT;
ALTER TABLE workspaces ADD COLUMN active_tasks INTEGER NOT NULL DEFAULT 0
    CHECK (active_tasks >= 0);
ALTER TABLE workspaces ADD COLUMN error_rate REAL
    CHECK (error_rate IS NULL OR (error_rate >= 0 AND error_rate <= 1));
ALTER TABLE workspaces ADD COLUMN sample_error TEXT;
ALTER TABLE workspaces ADD COLUMN uptime_seconds INTEGER
    CHECK (uptime_seconds IS NULL OR uptime_seconds >= 0);

CREATE INDEX idx_workspaces_parent_name_live
    ON workspaces (parent_id, name) WHERE removed_at IS NULL;
CREATE INDEX idx_workspaces_removed_at
    ON workspaces (removed_at) WHERE removed_at IS NOT NULL;
CREATE INDEX idx_workspaces_busy
    ON workspaces (last_heartbeat_at) WHERE active_tasks > 0 AND removed_at IS NULL;
