//! Memory: scoped memories (commit, recall, delete) and the key/value
//! memory of a workspace.

use reqwest::Method;
use serde_json::{json, Value};

use super::{segment, Client, Result, REQUEST_TIMEOUT};

impl Client {
    /// `POST /workspaces/:id/memories`.
    pub(crate) async fn commit_memory(
        &self,
        id: &str,
        content: &str,
        scope: &str,
        namespace: Option<&str>,
    ) -> Result<crate::http::CommittedMemory> {
        let mut body = json!({"content": content, "scope": scope});
        if let Some(ns) = namespace {
            body["namespace"] = json!(ns);
        }
        self.json(
            self.request(Method::POST, &format!("workspaces/{id}/memories"))
                .json(&body)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `GET /workspaces/:id/memories`, or the operator's `GET
    /// /admin/memories` when `id` is `None`. `query` holds `q`, `scope`,
    /// `namespace`, `limit` pairs.
    pub(crate) async fn recall_memories(
        &self,
        id: Option<&str>,
        query: &[(&str, String)],
    ) -> Result<Vec<crate::http::MemoryView>> {
        let path = match id {
            Some(id) => format!("workspaces/{id}/memories"),
            None => "admin/memories".to_owned(),
        };
        self.json(
            self.request(Method::GET, &path)
                .query(query)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `DELETE /workspaces/:id/memories/:mid`, or the operator's `DELETE
    /// /admin/memories/:mid` when `id` is `None`.
    pub(crate) async fn delete_memory(&self, id: Option<&str>, memory_id: &str) -> Result<()> {
        let memory_id = segment(memory_id);
        let path = match id {
            Some(id) => format!("workspaces/{id}/memories/{memory_id}"),
            None => format!("admin/memories/{memory_id}"),
        };
        self.send(self.request(Method::DELETE, &path).timeout(REQUEST_TIMEOUT))
            .await
            .map(drop)
    }

    /// `GET /workspaces/:id/memory`.
    pub(crate) async fn list_keys(&self, id: &str) -> Result<Vec<crate::http::KvView>> {
        self.json(
            self.request(Method::GET, &format!("workspaces/{id}/memory"))
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `GET /workspaces/:id/memory/:key`.
    pub(crate) async fn get_key(&self, id: &str, key: &str) -> Result<crate::http::KvView> {
        self.json(
            self.request(
                Method::GET,
                &format!("workspaces/{id}/memory/{}", segment(key)),
            )
            .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `POST /workspaces/:id/memory`.
    pub(crate) async fn set_key(
        &self,
        id: &str,
        key: &str,
        value: &Value,
        ttl_s: Option<i64>,
        if_version: Option<i64>,
    ) -> Result<crate::http::KvView> {
        let mut body = json!({"key": key, "value": value});
        if let Some(ttl) = ttl_s {
            body["ttl_s"] = json!(ttl);
        }
        if let Some(v) = if_version {
            body["if_version"] = json!(v);
        }
        self.json(
            self.request(Method::POST, &format!("workspaces/{id}/memory"))
                .json(&body)
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `DELETE /workspaces/:id/memory/:key`.
    pub(crate) async fn delete_key(&self, id: &str, key: &str) -> Result<()> {
        self.send(
            self.request(
                Method::DELETE,
                &format!("workspaces/{id}/memory/{}", segment(key)),
            )
            .timeout(REQUEST_TIMEOUT),
        )
        .await
        .map(drop)
    }
}
