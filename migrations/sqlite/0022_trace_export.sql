-- OTLP export (issue 28), SQLite flavour: the same column and index as
-- migrations/postgres/0027_trace_export.sql (read the comments there); the
-- flag is an integer, 0 or 1.
ALTER TABLE trace_spans ADD COLUMN exported INTEGER NOT NULL DEFAULT 0
    CHECK (exported IN (0, 1));

CREATE INDEX idx_trace_spans_unexported ON trace_spans (end_at)
    WHERE NOT exported AND end_at IS NOT NULL;
