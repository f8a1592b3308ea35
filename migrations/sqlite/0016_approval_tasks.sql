-- Approvals and A2A tasks (issue 27): an A2A task reads `input-required`
-- while its callee has a pending approval request naming the task's id
-- (the delegation id) as `task_id`.

-- Every read of a task asks whether such a request exists (a subquery per
-- task row): by workspace and task id, over pending requests only, so
-- decided ones cost it nothing and a workspace's long history is not
-- scanned.
CREATE INDEX idx_approvals_pending_task ON approvals (workspace_id, task_id)
    WHERE status = 'pending' AND task_id IS NOT NULL;
