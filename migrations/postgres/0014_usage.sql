-- Usage and budgets (issue 28): what each workspace spent, per UTC day and
-- model, and the monthly ceilings the operator sets.

CREATE TABLE usage_daily (
    -- Whose usage; it goes with its workspace when the sweeper purges it.
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    -- The UTC day, YYYY-MM-DD: text compares in date order, the same on
    -- both engines, and a month is a range of it.
    day           text NOT NULL CHECK (length(day) = 10),
    -- The model as the agent named it ('unknown' when it named none).
    model         text NOT NULL CHECK (length(model) BETWEEN 1 AND 200),
    -- Token sums of the day; never negative.
    input_tokens  bigint NOT NULL CHECK (input_tokens >= 0),
    output_tokens bigint NOT NULL CHECK (output_tokens >= 0),
    -- Reports summed into the row.
    calls         bigint NOT NULL CHECK (calls >= 0),
    -- Cost in millionths of a USD: integer, so sums are exact.
    cost_micros   bigint NOT NULL CHECK (cost_micros >= 0),
    -- One row per workspace, day and model: a report is an upsert into it.
    -- Also the index of a workspace's range reads (workspace_id, day).
    PRIMARY KEY (workspace_id, day, model)
);

-- The operator's reads across workspaces by day range.
CREATE INDEX idx_usage_daily_day ON usage_daily (day);

CREATE TABLE workspace_budgets (
    workspace_id   uuid PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    -- Monthly ceiling in cents for the workspace and its subtree; NULL: none.
    budget_limit   bigint CHECK (budget_limit >= 0),
    -- What the agent's heartbeat last said it spent this month, in cents
    -- (Molecule's `monthly_spend`), and the UTC month (YYYY-MM) it was
    -- said in: a figure of an earlier month counts for nothing.
    reported_spend bigint CHECK (reported_spend >= 0),
    reported_month text,
    -- The UTC month the 80 % warning of this budget was raised in, so it
    -- is raised once a month, not on every report after the mark.
    warned_month   text
);
