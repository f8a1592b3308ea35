-- Inbox pick-up: the highest activity id the workspace's own inbox poll
-- has handed to it. A queued message with an id at or below it was picked
-- up by the agent, which the canvas shows without waiting for an answer.
-- NULL: the agent never polled. Only ever raised (the update is guarded
-- by `< new`), so a late, slower poll cannot move it back.
ALTER TABLE workspaces ADD COLUMN inbox_picked_up_through BIGINT
    CHECK (inbox_picked_up_through IS NULL OR inbox_picked_up_through > 0);
