-- Recall's vector half first lists the ids of the readable memories with
-- a vector of the query's model (the vectors themselves come from the
-- server's cache). Without this index that list scans the table, reading
-- every row's vector from disk; with it the list is read from the index
-- alone (every column the readable filter and the list use is here).
-- Partial: rows without a vector are never candidates.
CREATE INDEX idx_memories_vector_ids
    ON memories (embedding_model, scope, workspace_id, namespace, id)
    WHERE embedding IS NOT NULL;
