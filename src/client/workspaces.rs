//! Workspaces: create, list, read, delete, rotate a token, pause /
//! resume / restart, import an org template, and the workspace's own
//! registration and heartbeat.

use reqwest::{header, Method};
use serde_json::{json, Value};

use super::{
    Client, CreatedWorkspace, ImportReport, NewWorkspace, RegisteredWorkspace, Result,
    RotatedToken, WorkspaceView, REQUEST_TIMEOUT,
};
use crate::domain::WorkspaceId;

impl Client {
    /// `POST /workspaces`.
    pub(crate) async fn create_workspace(&self, new: &NewWorkspace) -> Result<CreatedWorkspace> {
        self.json(
            self.request(Method::POST, "workspaces")
                .json(new)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `GET /workspaces`.
    pub(crate) async fn list_workspaces(&self) -> Result<Vec<WorkspaceView>> {
        self.json(
            self.request(Method::GET, "workspaces")
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `GET /workspaces/:id`.
    pub(crate) async fn get_workspace(&self, id: &str) -> Result<WorkspaceView> {
        self.json(
            self.request(Method::GET, &format!("workspaces/{id}"))
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `POST /workspaces/:id/external/rotate`.
    pub(crate) async fn rotate_token(&self, id: &str) -> Result<RotatedToken> {
        self.json(
            self.request(Method::POST, &format!("workspaces/{id}/external/rotate"))
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `DELETE /workspaces/:id` (`?cascade=true` removes its subtree too).
    pub(crate) async fn delete_workspace(&self, id: &str, cascade: bool) -> Result<()> {
        let path = if cascade {
            format!("workspaces/{id}?cascade=true")
        } else {
            format!("workspaces/{id}")
        };
        self.send(self.request(Method::DELETE, &path).timeout(REQUEST_TIMEOUT))
            .await
            .map(drop)
    }

    /// `POST /workspaces/:id/{pause|resume|restart}`.
    pub(crate) async fn lifecycle(&self, id: &str, verb: &str) -> Result<WorkspaceView> {
        self.json(
            self.request(Method::POST, &format!("workspaces/{id}/{verb}"))
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `POST /org/import`: `template` is YAML or JSON, as `content_type` says.
    pub(crate) async fn import_org(
        &self,
        template: String,
        content_type: &str,
        dry_run: bool,
    ) -> Result<ImportReport> {
        let path = if dry_run {
            "org/import?dry_run=true"
        } else {
            "org/import"
        };
        self.json(
            self.request(Method::POST, path)
                .header(header::CONTENT_TYPE, content_type)
                .body(template)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `POST /registry/register` as the workspace itself, in `delivery_mode`.
    pub(crate) async fn register(
        &self,
        id: WorkspaceId,
        delivery_mode: &str,
        agent_card: Option<Value>,
    ) -> Result<RegisteredWorkspace> {
        let mut body = json!({"id": id, "delivery_mode": delivery_mode});
        if let Some(card) = agent_card {
            body["agent_card"] = card;
        }
        self.json(
            self.request(Method::POST, "registry/register")
                .json(&body)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `POST /registry/heartbeat`.
    pub(crate) async fn heartbeat(&self, id: WorkspaceId) -> Result<()> {
        let body = json!({"workspace_id": id});
        self.send(
            self.request(Method::POST, "registry/heartbeat")
                .json(&body)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
        .map(drop)
    }
}
