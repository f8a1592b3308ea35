-- Read state kept by the server (issue 30, defect 10): how far each
-- reader has read each workspace's chat, so two browsers of the same
-- reader agree on what is unread and "mark all read" is one request.

CREATE TABLE read_positions (
    -- Who read: 'admin' for the admin token of the configuration, or
    -- 'token:<id>' for an operator token (each operator token reads for
    -- itself; a viewer's reading never marks the admin's chats read).
    reader       text NOT NULL CHECK (length(reader) BETWEEN 1 AND 64),
    -- The workspace whose chat was read; its positions go with it.
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    -- The newest activity row id the reader has seen in that chat: rows
    -- after it that are the agent speaking count as unread. Only grows.
    last_read_id bigint NOT NULL CHECK (last_read_id >= 0),
    -- When it last moved (for support questions: "when did I read this?").
    updated_at   timestamptz NOT NULL,
    -- One position per reader and workspace; also the index that reads
    -- a reader's positions (its first column).
    PRIMARY KEY (reader, workspace_id)
);
