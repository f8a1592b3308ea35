//! Schedules: list, create, delete, run now and history of a workspace's
//! schedules (`/workspaces/:id/schedules…`).

use reqwest::Method;
use serde_json::Value;

use super::{segment, Client, FireView, Result, ScheduleDeleted, ScheduleView, REQUEST_TIMEOUT};

impl Client {
    /// `GET /workspaces/:id/schedules`.
    pub(crate) async fn list_schedules(&self, workspace: &str) -> Result<Vec<ScheduleView>> {
        let path = format!("workspaces/{}/schedules", segment(workspace));
        self.json(self.request(Method::GET, &path).timeout(REQUEST_TIMEOUT))
            .await
    }

    /// `POST /workspaces/:id/schedules` with the request's JSON body
    /// (`name`, `cron_expr`, `timezone`, `prompt`, `enabled`, `overlap`,
    /// `catch_up`; absent fields take the server's defaults).
    pub(crate) async fn create_schedule(
        &self,
        workspace: &str,
        body: &Value,
    ) -> Result<ScheduleView> {
        let path = format!("workspaces/{}/schedules", segment(workspace));
        self.json(
            self.request(Method::POST, &path)
                .json(body)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `DELETE /workspaces/:id/schedules/:sid`.
    pub(crate) async fn delete_schedule(
        &self,
        workspace: &str,
        id: &str,
    ) -> Result<ScheduleDeleted> {
        let path = format!(
            "workspaces/{}/schedules/{}",
            segment(workspace),
            segment(id)
        );
        self.json(self.request(Method::DELETE, &path).timeout(REQUEST_TIMEOUT))
            .await
    }

    /// `POST /workspaces/:id/schedules/:sid/run`: the fire it made.
    pub(crate) async fn run_schedule(&self, workspace: &str, id: &str) -> Result<FireView> {
        let path = format!(
            "workspaces/{}/schedules/{}/run",
            segment(workspace),
            segment(id)
        );
        self.json(self.request(Method::POST, &path).timeout(REQUEST_TIMEOUT))
            .await
    }

    /// `GET /workspaces/:id/schedules/:sid/history?limit=`, newest first.
    pub(crate) async fn schedule_history(
        &self,
        workspace: &str,
        id: &str,
        limit: i64,
    ) -> Result<Vec<FireView>> {
        let path = format!(
            "workspaces/{}/schedules/{}/history",
            segment(workspace),
            segment(id)
        );
        self.json(
            self.request(Method::GET, &path)
                .query(&[("limit", limit)])
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }
}
