//! Approvals: the operator's pending list and decision (the CLI).

use reqwest::Method;
use serde_json::json;

use super::{ApprovalView, Client, Result, REQUEST_TIMEOUT};

impl Client {
    /// `GET /approvals/pending`: every pending request, oldest first.
    pub(crate) async fn pending_approvals(&self) -> Result<Vec<ApprovalView>> {
        self.json(
            self.request(Method::GET, "approvals/pending")
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `POST /workspaces/:id/approvals/:aid/decide`.
    pub(crate) async fn decide_approval(
        &self,
        workspace: &str,
        approval: &str,
        decision: &str,
        note: Option<&str>,
    ) -> Result<ApprovalView> {
        let path = format!("workspaces/{workspace}/approvals/{approval}/decide");
        self.json(
            self.request(Method::POST, &path)
                .json(&json!({"decision": decision, "note": note}))
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }
}
