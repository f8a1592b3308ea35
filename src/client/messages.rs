//! Messages and the inbox: A2A `message/send`, the agent's replies
//! (`/notify`), the long-polled activity log, and the text of an A2A
//! answer.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::{ActivityView, Client, Result, REQUEST_TIMEOUT};
use crate::domain::inbox;
use crate::domain::WorkspaceId;

/// Query of `GET /workspaces/:id/activity`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ActivityQuery {
    /// Only rows of this type.
    pub activity_type: Option<String>,
    /// Only rows after this id.
    pub since_id: Option<i64>,
    /// At most this many rows.
    pub limit: Option<u32>,
    /// Long-poll for this many seconds when nothing matches.
    pub wait: Option<u64>,
}

impl Client {
    /// `POST /workspaces/:id/a2a` with a JSON-RPC `message/send` body;
    /// returns the server's answer (`{queued, activity_id}` for a poll
    /// workspace, the workspace's JSON-RPC answer for a push one).
    pub(crate) async fn send_a2a(&self, id: &str, rpc: &Value) -> Result<Value> {
        self.json(
            self.request(Method::POST, &format!("workspaces/{id}/a2a"))
                .json(rpc)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// Sends one text message as the operator (see [`Client::send_a2a`]).
    pub(crate) async fn send_text(&self, id: &str, text: &str) -> Result<Value> {
        let rpc = inbox::message_send_rpc(
            json!(uuid::Uuid::new_v4().to_string()),
            json!({"message": {
                "role": "user",
                "messageId": uuid::Uuid::new_v4().to_string(),
                "parts": [{"kind": "text", "text": text}],
            }}),
        );
        self.send_a2a(id, &rpc).await
    }

    /// `POST /workspaces/:id/notify`: the agent's message to the operator.
    pub(crate) async fn notify(
        &self,
        id: WorkspaceId,
        message: &str,
        attachments: &[Value],
    ) -> Result<Value> {
        let body = json!({"message": message, "attachments": attachments});
        self.json(
            self.request(Method::POST, &format!("workspaces/{id}/notify"))
                .json(&body)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `POST /workspaces/:id/activity`: the agent reports a row (`body` is
    /// `{activity_type, method?, summary?, status?, request_body?, …}`).
    pub(crate) async fn report_activity(&self, id: WorkspaceId, body: &Value) -> Result<Value> {
        self.json(
            self.request(Method::POST, &format!("workspaces/{id}/activity"))
                .json(body)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `GET /workspaces/:id/activity`, a long poll when `query.wait` is set.
    pub(crate) async fn list_activity(
        &self,
        id: WorkspaceId,
        query: &ActivityQuery,
    ) -> Result<Vec<ActivityView>> {
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(t) = &query.activity_type {
            params.push(("type", t.clone()));
        }
        if let Some(s) = query.since_id {
            params.push(("since_id", s.to_string()));
        }
        if let Some(l) = query.limit {
            params.push(("limit", l.to_string()));
        }
        if let Some(w) = query.wait {
            params.push(("wait", w.to_string()));
        }
        let wait = query.wait.unwrap_or(0);
        let http = if wait > 0 {
            &self.long_poll
        } else {
            &self.http
        };
        self.json(
            self.request_with(http, Method::GET, &format!("workspaces/{id}/activity"))
                .query(&params)
                .timeout(REQUEST_TIMEOUT + Duration::from_secs(wait)),
        )
        .await
    }
}
