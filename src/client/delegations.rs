//! Delegations: create one, the callee's status reports and heartbeats,
//! and the operator's listing and figures.

use reqwest::Method;
use serde_json::json;

use super::{
    Client, DelegationCreated, DelegationStatsView, DelegationView, Result, REQUEST_TIMEOUT,
};
use crate::domain::{DelegationId, DelegationStatus, WorkspaceId};

impl Client {
    /// `POST /workspaces/:to/delegate`, as the workspace `from` names
    /// (`X-Workspace-ID`; `None` or `operator` for the operator itself).
    pub(crate) async fn delegate(
        &self,
        from: Option<&str>,
        to: &str,
        task: &str,
        idempotency_key: Option<&str>,
        deadline_s: Option<i64>,
    ) -> Result<DelegationCreated> {
        let mut req = self
            .request(Method::POST, &format!("workspaces/{to}/delegate"))
            .json(&json!({"task": task, "idempotency_key": idempotency_key, "deadline_s": deadline_s}))
            .timeout(REQUEST_TIMEOUT);
        if let Some(from) = from {
            req = req.header("X-Workspace-ID", from);
        }
        // An agent delegating inside a task (its `TRACEPARENT` set by
        // `molecule connect`) keeps the new delegation in that task's trace.
        let trace = std::env::var(crate::domain::trace::TRACEPARENT_ENV).ok();
        if let Some(p) = trace.as_deref().and_then(crate::domain::TraceParent::parse) {
            req = req.header(crate::domain::trace::TRACEPARENT, p.header());
        }
        self.json(req).await
    }

    /// `POST /workspaces/:callee/delegations/:did/status`.
    pub(crate) async fn report_delegation(
        &self,
        callee: WorkspaceId,
        delegation_id: DelegationId,
        status: DelegationStatus,
        result_preview: Option<&str>,
        error_detail: Option<&str>,
    ) -> Result<DelegationView> {
        self.json(
            self.request(
                Method::POST,
                &format!("workspaces/{callee}/delegations/{delegation_id}/status"),
            )
            .json(&json!({"status": status, "result_preview": result_preview, "error_detail": error_detail}))
            .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `POST /workspaces/:callee/delegations/:did/heartbeat`.
    pub(crate) async fn heartbeat_delegation(
        &self,
        callee: WorkspaceId,
        delegation_id: DelegationId,
    ) -> Result<DelegationView> {
        self.json(
            self.request(
                Method::POST,
                &format!("workspaces/{callee}/delegations/{delegation_id}/heartbeat"),
            )
            .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `GET /admin/delegations?status=&limit=`.
    pub(crate) async fn list_delegations(
        &self,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DelegationView>> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(s) = status {
            query.push(("status", s.to_owned()));
        }
        self.json(
            self.request(Method::GET, "admin/delegations")
                .query(&query)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `GET /admin/delegations/stats`.
    pub(crate) async fn delegation_stats(&self) -> Result<DelegationStatsView> {
        self.json(
            self.request(Method::GET, "admin/delegations/stats")
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }
}
