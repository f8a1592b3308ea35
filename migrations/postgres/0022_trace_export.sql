-- OTLP export of the span store (issue 28, `--otlp-endpoint`): which spans
-- the exporter has taken. A span is exported once it has ended; the
-- exporter claims a batch by setting the flag (so two replicas never send
-- the same span), sends it, and clears the flag again when the endpoint
-- refused or was unreachable, so the batch is retried rather than lost.
-- Rows written before this migration start unexported: turning export on
-- later sends what the retention still holds.
ALTER TABLE trace_spans ADD COLUMN exported boolean NOT NULL DEFAULT false;

-- The exporter's scan: ended spans not yet taken, oldest end first.
CREATE INDEX idx_trace_spans_unexported ON trace_spans (end_at)
    WHERE NOT exported AND end_at IS NOT NULL;
