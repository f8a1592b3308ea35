-- Inbox pick-up, SQLite flavour: the same column as
-- migrations/postgres/0006_inbox_pickup.sql (read the comment there).

ALTER TABLE workspaces ADD COLUMN inbox_picked_up_through INTEGER
    CHECK (inbox_picked_up_through IS NULL OR inbox_picked_up_through > 0);
