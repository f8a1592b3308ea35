-- Traces (issue 28): the W3C trace context each delegation carries, and the
-- built-in span store the trace view reads.

-- The delegation's own `traceparent` (W3C, `00-<trace>-<span>-<flags>`): the
-- context its callee was handed (inbox row, forwarded request), so the
-- callee's work and nested delegations hang under the delegation's span.
-- NULL on rows written before traces existed.
ALTER TABLE delegations ADD COLUMN traceparent text;

CREATE TABLE trace_spans (
    -- The trace, 32 lowercase hex digits (W3C trace-id).
    trace_id       text NOT NULL CHECK (length(trace_id) = 32),
    -- The span, 16 lowercase hex digits (W3C parent-id of its children).
    span_id        text NOT NULL CHECK (length(span_id) = 16),
    -- The span it hangs under; NULL at the root. Not a foreign key: a
    -- parent may live outside this store (a caller's own tracer), and
    -- spans arrive in any order.
    parent_span_id text CHECK (length(parent_span_id) = 16),
    -- Whose work it is: the callee of a server span, the reporter of an
    -- agent's. No foreign key: a trace outlives a removed workspace, and
    -- the sweep's retention prunes it with the rest.
    workspace_id   uuid NOT NULL,
    -- Who started the hop of a server span (a workspace id, `operator` or
    -- `schedule:<id>`), so the caller's side of a trace finds it too.
    caller_id      text,
    -- The ledger row of a delegation's server span; its moves update the
    -- span in the move's transaction. No foreign key: finished delegations
    -- are purged before their spans.
    delegation_id  uuid,
    -- What it was: `delegate`, `message`, a tool's or a model's name.
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- The server's hop, the agent's work, a tool call or a model call.
    kind           text NOT NULL CHECK (kind IN ('server', 'agent', 'tool', 'llm')),
    -- A server span's current status (the delegation's); NULL for agents'.
    status         text,
    -- When it started and ended; end NULL while a hop is in flight.
    start_at       timestamptz NOT NULL,
    end_at         timestamptz,
    -- Tokens and cost of this node alone (the tree view sums subtrees):
    -- a model call's, or the usage a callee reported on its delegation.
    input_tokens   bigint NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens  bigint NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    -- Millionths of a USD, as usage_daily.
    cost_micros    bigint NOT NULL DEFAULT 0 CHECK (cost_micros >= 0),
    model          text,
    -- The agent's attributes, as sent (at most 16 KiB).
    attributes     jsonb NOT NULL DEFAULT '{}',
    -- A server span's moments, oldest first: [{name, at}] (queued,
    -- dispatched = picked up or forwarded, in_progress, completed, failed).
    events         jsonb NOT NULL DEFAULT '[]',
    -- One row per span; a re-sent span (an agent retrying) is absorbed.
    PRIMARY KEY (trace_id, span_id)
);

-- A delegation's moves find its span.
CREATE UNIQUE INDEX idx_trace_spans_delegation ON trace_spans (delegation_id)
    WHERE delegation_id IS NOT NULL;
-- The last traces a workspace took part in, as callee/reporter or caller.
CREATE INDEX idx_trace_spans_workspace ON trace_spans (workspace_id, start_at);
CREATE INDEX idx_trace_spans_caller ON trace_spans (caller_id, start_at)
    WHERE caller_id IS NOT NULL;
-- The sweep's retention prune, oldest first.
CREATE INDEX idx_trace_spans_start ON trace_spans (start_at);
