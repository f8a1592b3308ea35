//! Platform instructions: a workspace's resolved text (`molecule connect`).

use reqwest::Method;

use super::{Client, ResolvedInstructions, Result, REQUEST_TIMEOUT};
use crate::domain::WorkspaceId;

impl Client {
    /// `GET /workspaces/:id/instructions/resolve`.
    pub(crate) async fn resolve_instructions(
        &self,
        workspace: WorkspaceId,
    ) -> Result<ResolvedInstructions> {
        let path = format!("workspaces/{workspace}/instructions/resolve");
        self.json(self.request(Method::GET, &path).timeout(REQUEST_TIMEOUT))
            .await
    }
}
