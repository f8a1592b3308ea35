//! The key/value memory of a workspace: any JSON under a key, a version
//! that every write increments (optimistic concurrency with `if_version`),
//! and an optional time to live after which the key reads as absent at
//! once and the sweeper deletes it. The workspace or the operator.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{known_workspace, ScopedPath, SelfOrOperator};
use super::extract::WorkspacePath;
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::memory::{check_value, Key};
use crate::domain::{self, WorkspaceId};
use crate::store::{KvEntry, KvWrite, KvWritten};

/// Longest accepted `ttl_s`: ten years.
const MAX_TTL_S: i64 = 10 * 365 * 24 * 3600;

/// A live key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct KvView {
    /// The key.
    pub key: String,
    /// Any JSON.
    #[schema(value_type = Object)]
    pub value: Value,
    /// Incremented by every write; name it in `if_version`.
    pub version: i64,
    /// When the key vanishes; null: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last write.
    pub updated_at: DateTime<Utc>,
}

impl From<KvEntry> for KvView {
    fn from(e: KvEntry) -> Self {
        Self {
            key: e.key,
            value: e.value,
            version: e.version,
            expires_at: e.expires_at,
            updated_at: e.updated_at,
        }
    }
}

/// `POST /workspaces/:id/memory` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct SetKey {
    /// The key (1–256 characters).
    pub key: String,
    /// Any JSON (at most 64 KiB serialized).
    #[schema(value_type = Object)]
    pub value: Value,
    /// Seconds until the key vanishes (1 to ten years); absent: never.
    pub ttl_s: Option<i64>,
    /// Write only if the key's version is this; 0: only if it is absent.
    /// A mismatch is a 409 carrying the current `version`.
    pub if_version: Option<i64>,
}

/// `/workspaces/{id}/memory/{key}`
#[derive(Debug, Clone)]
pub(super) struct KeyPath(pub WorkspaceId, pub Key);

impl<S: Send + Sync> FromRequestParts<S> for KeyPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let Path((ws, key)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::BadRequest(e.body_text()))?;
        Ok(KeyPath(
            ws.parse()
                .map_err(|e: domain::IdError| Error::BadRequest(e.to_string()))?,
            Key::parse(&key)?,
        ))
    }
}

impl ScopedPath for KeyPath {
    fn workspace_id(&self) -> WorkspaceId {
        self.0
    }
}

fn key_not_found() -> Error {
    Error::NotFound("key not found (absent or expired)".into())
}

/// Every live key of the workspace, by key.
#[utoipa::path(get, path = "/workspaces/{id}/memory", tag = "memory",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = [KvView]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn list_keys(
    State(state): State<AppState>,
    SelfOrOperator(WorkspacePath(id), _): SelfOrOperator,
) -> Result<Json<Vec<KvView>>> {
    let rows = state.store.kv_list(id, domain::now()).await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// One live key.
#[utoipa::path(get, path = "/workspaces/{id}/memory/{key}", tag = "memory",
    params(("id" = String, Path, description = "workspace id"), ("key" = String, Path, description = "the key")),
    responses((status = 200, body = KvView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn get_key(
    State(state): State<AppState>,
    SelfOrOperator(KeyPath(id, key), _): SelfOrOperator<KeyPath>,
) -> Result<Json<KvView>> {
    let entry = state
        .store
        .kv_get(id, key.as_str(), domain::now())
        .await?
        .ok_or_else(key_not_found)?;
    Ok(Json(entry.into()))
}

/// Writes a key: version + 1; with `if_version`, only if it still matches
/// (else 409 with the current version).
#[utoipa::path(post, path = "/workspaces/{id}/memory", tag = "memory",
    params(("id" = String, Path, description = "workspace id")),
    request_body = SetKey,
    responses((status = 200, body = KvView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub(super) async fn set_key(
    State(state): State<AppState>,
    SelfOrOperator(WorkspacePath(id), _): SelfOrOperator,
    Json(body): Json<SetKey>,
) -> Result<Json<KvView>> {
    let key = Key::parse(&body.key)?;
    check_value(&body.value)?;
    if let Some(ttl) = body.ttl_s {
        if !(1..=MAX_TTL_S).contains(&ttl) {
            return Err(Error::BadRequest(format!(
                "`ttl_s` must be between 1 and {MAX_TTL_S} seconds"
            )));
        }
    }
    if body.if_version.is_some_and(|v| v < 0) {
        return Err(Error::BadRequest(
            "`if_version` must be 0 (absent) or a version".into(),
        ));
    }
    known_workspace(&state, id).await?;
    let now = domain::now();
    let write = KvWrite {
        value: body.value,
        expires_at: body.ttl_s.map(|s| now + chrono::Duration::seconds(s)),
        if_version: body.if_version,
    };
    match state.store.kv_set(id, key.as_str(), &write, now).await? {
        KvWritten::Done(entry) => Ok(Json(entry.into())),
        KvWritten::Conflict { current } => Err(Error::VersionConflict {
            message: format!(
                "`if_version` {} does not match the key's current version {current}",
                body.if_version.unwrap_or_default()
            ),
            version: current,
        }),
    }
}

/// Deletes a live key.
#[utoipa::path(delete, path = "/workspaces/{id}/memory/{key}", tag = "memory",
    params(("id" = String, Path, description = "workspace id"), ("key" = String, Path, description = "the key")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn delete_key(
    State(state): State<AppState>,
    SelfOrOperator(KeyPath(id, key), _): SelfOrOperator<KeyPath>,
) -> Result<StatusCode> {
    if !state
        .store
        .kv_delete(id, key.as_str(), domain::now())
        .await?
    {
        return Err(key_not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, set_key))
        .routes(routes!(get_key, delete_key))
}
