//! Secrets, global (`/admin/secrets`) or per workspace: keys only are
//! ever read back.

use reqwest::Method;
use serde_json::json;

use super::{Client, Result, SecretView, REQUEST_TIMEOUT};

impl Client {
    /// The path of a secret scope: `admin/secrets` (global) or
    /// `workspaces/:id/secrets`.
    fn secrets_path(workspace: Option<&str>) -> String {
        match workspace {
            Some(id) => format!("workspaces/{id}/secrets"),
            None => "admin/secrets".to_owned(),
        }
    }

    /// `PUT /workspaces/:id/secrets/:KEY` or `PUT /admin/secrets/:KEY`.
    pub(crate) async fn set_secret(
        &self,
        workspace: Option<&str>,
        key: &str,
        value: &str,
    ) -> Result<SecretView> {
        let path = format!("{}/{key}", Self::secrets_path(workspace));
        self.json(
            self.request(Method::PUT, &path)
                .json(&json!({"value": value}))
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `GET /workspaces/:id/secrets` or `GET /admin/secrets`: keys only.
    pub(crate) async fn list_secrets(&self, workspace: Option<&str>) -> Result<Vec<SecretView>> {
        self.json(
            self.request(Method::GET, &Self::secrets_path(workspace))
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `DELETE /workspaces/:id/secrets/:KEY` or `DELETE /admin/secrets/:KEY`.
    pub(crate) async fn delete_secret(&self, workspace: Option<&str>, key: &str) -> Result<()> {
        let path = format!("{}/{key}", Self::secrets_path(workspace));
        self.send(self.request(Method::DELETE, &path).timeout(REQUEST_TIMEOUT))
            .await
            .map(drop)
    }
}
