-- Traces (issue 28), SQLite flavour: the same column and table as
-- migrations/postgres/0019_traces.sql (read the comments there); ids are
-- text, timestamps integer microseconds, JSON text.

-- The `traceparent` the delegation's callee was handed; NULL on older rows.
ALTER TABLE delegations ADD COLUMN traceparent TEXT;

CREATE TABLE trace_spans (
    -- W3C trace id (32 hex) and span id (16 hex).
    trace_id       TEXT NOT NULL CHECK (length(trace_id) = 32),
    span_id        TEXT NOT NULL CHECK (length(span_id) = 16),
    -- The parent span; NULL at the root; no foreign key (may be elsewhere).
    parent_span_id TEXT CHECK (length(parent_span_id) = 16),
    -- Whose work it is; no foreign key (a trace outlives its workspaces).
    workspace_id   TEXT NOT NULL,
    -- Who started a server span's hop (workspace id, operator, schedule:<id>).
    caller_id      TEXT,
    -- A delegation's server span; no foreign key (ledger rows are purged first).
    delegation_id  TEXT,
    name           TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind           TEXT NOT NULL CHECK (kind IN ('server', 'agent', 'tool', 'llm')),
    -- A server span's delegation status.
    status         TEXT,
    -- Start and end (NULL while in flight).
    start_at       INTEGER NOT NULL,
    end_at         INTEGER,
    -- This node's own tokens and cost (micro-USD).
    input_tokens   INTEGER NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens  INTEGER NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    cost_micros    INTEGER NOT NULL DEFAULT 0 CHECK (cost_micros >= 0),
    model          TEXT,
    -- The agent's attributes (JSON object) and a server span's moments
    -- (JSON list of {name, at}).
    attributes     TEXT NOT NULL DEFAULT '{}',
    events         TEXT NOT NULL DEFAULT '[]',
    -- One row per span; a re-sent span is absorbed.
    PRIMARY KEY (trace_id, span_id)
);

-- A delegation's moves find its span.
CREATE UNIQUE INDEX idx_trace_spans_delegation ON trace_spans (delegation_id)
    WHERE delegation_id IS NOT NULL;
-- A workspace's last traces, as callee/reporter or caller.
CREATE INDEX idx_trace_spans_workspace ON trace_spans (workspace_id, start_at);
CREATE INDEX idx_trace_spans_caller ON trace_spans (caller_id, start_at)
    WHERE caller_id IS NOT NULL;
-- The retention prune.
CREATE INDEX idx_trace_spans_start ON trace_spans (start_at);
