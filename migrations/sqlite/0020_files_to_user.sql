-- Files from the agent to the user (issue 30), SQLite flavour: the same
-- column as migrations/postgres/0020_files_to_user.sql (read the comment
-- there); booleans are integers.
ALTER TABLE pending_uploads ADD COLUMN to_user INTEGER NOT NULL DEFAULT 0;
