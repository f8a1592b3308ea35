-- The reach cache (issue 25), SQLite flavour: the same table and triggers as
-- migrations/postgres/0023_reach_generation.sql (read the comments there).
-- SQLite has row triggers only, so each created or purged workspace counts.
CREATE TABLE reach_generation (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    tree INTEGER NOT NULL
);
INSERT INTO reach_generation (id, tree) VALUES (1, 0);

CREATE TRIGGER reach_generation_insert AFTER INSERT ON workspaces BEGIN
    UPDATE reach_generation SET tree = tree + 1;
END;
CREATE TRIGGER reach_generation_delete AFTER DELETE ON workspaces BEGIN
    UPDATE reach_generation SET tree = tree + 1;
END;
CREATE TRIGGER reach_generation_update AFTER UPDATE OF parent_id, removed_at, created_at
    ON workspaces
    WHEN old.parent_id IS NOT new.parent_id OR old.removed_at IS NOT new.removed_at
      OR old.created_at IS NOT new.created_at
BEGIN
    UPDATE reach_generation SET tree = tree + 1;
END;
