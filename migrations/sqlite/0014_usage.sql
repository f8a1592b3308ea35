-- Usage and budgets (issue 28), SQLite flavour: the same tables and rules
-- as migrations/postgres/0014_usage.sql (read the comments there); ids
-- are text.

CREATE TABLE usage_daily (
    workspace_id  TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    -- The UTC day, YYYY-MM-DD (text compares in date order).
    day           TEXT NOT NULL CHECK (length(day) = 10),
    -- The model as the agent named it ('unknown' when it named none).
    model         TEXT NOT NULL CHECK (length(model) BETWEEN 1 AND 200),
    input_tokens  INTEGER NOT NULL CHECK (input_tokens >= 0),
    output_tokens INTEGER NOT NULL CHECK (output_tokens >= 0),
    calls         INTEGER NOT NULL CHECK (calls >= 0),
    -- Millionths of a USD.
    cost_micros   INTEGER NOT NULL CHECK (cost_micros >= 0),
    -- One row per workspace, day and model; also the range index.
    PRIMARY KEY (workspace_id, day, model)
);

-- Reads across workspaces by day range.
CREATE INDEX idx_usage_daily_day ON usage_daily (day);

CREATE TABLE workspace_budgets (
    workspace_id   TEXT PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    -- Monthly ceiling in cents for the workspace and its subtree; NULL: none.
    budget_limit   INTEGER CHECK (budget_limit >= 0),
    -- The heartbeat's `monthly_spend` (cents) and its UTC month (YYYY-MM).
    reported_spend INTEGER CHECK (reported_spend >= 0),
    reported_month TEXT,
    -- The month the 80 % warning was raised in (once a month).
    warned_month   TEXT
);
