-- Files from the agent to the user (issue 30): a workspace uploads a file
-- to its own chat (POST /workspaces/:id/notify/uploads) and names it in a
-- /notify attachment; the operator downloads it through the same content
-- route as any staged file. Such a row is never in the workspace's own
-- list of files to fetch, and is never acked: it waits on the server until
-- it expires (--upload-ttl).
ALTER TABLE pending_uploads ADD COLUMN to_user boolean NOT NULL DEFAULT false;
