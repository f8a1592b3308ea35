-- The reach cache (issue 25): a counter of the team tree's changes, moved in
-- the same transaction as the change itself by the triggers below, so a
-- statement that reads it sees the tree it counts. A replica keeps the
-- answers of the reach query (`store::fleet`) with the counter read in the
-- same statement, and uses one again only while the counter still reads the
-- same: every replica on this database sees every change, whichever replica
-- (or tool) made it, with no event to wait for.
--
-- What the reach rule reads of a workspace row: whether it exists, its
-- parent, whether it is removed, and its creation time (the order of the
-- answer). Any other column may change without a count (status, name,
-- card: the peer listing reads those afresh on every call).
CREATE TABLE reach_generation (
    id   smallint PRIMARY KEY CHECK (id = 1),
    tree bigint NOT NULL
);
INSERT INTO reach_generation (id, tree) VALUES (1, 0);

CREATE FUNCTION bump_reach_generation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE reach_generation SET tree = tree + 1;
    RETURN NULL;
END
$$;

-- Once a statement: an import of a thousand workspaces counts once.
CREATE TRIGGER reach_generation_rows AFTER INSERT OR DELETE OR TRUNCATE ON workspaces
    FOR EACH STATEMENT EXECUTE FUNCTION bump_reach_generation();
CREATE TRIGGER reach_generation_update AFTER UPDATE OF parent_id, removed_at, created_at
    ON workspaces FOR EACH ROW
    WHEN (old.parent_id IS DISTINCT FROM new.parent_id
          OR old.removed_at IS DISTINCT FROM new.removed_at
          OR old.created_at IS DISTINCT FROM new.created_at)
    EXECUTE FUNCTION bump_reach_generation();
