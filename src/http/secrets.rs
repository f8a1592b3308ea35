//! Secrets: the operator sets and deletes them (per workspace, or global
//! for every workspace) and lists their keys; only the workspace itself
//! reads values, merged (its own over the global ones). Values are sealed
//! before they reach the store (see `crate::secrets`) and never logged,
//! listed or shown back.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{KnownWorkspace, Operator, WorkspaceItself};
use super::extract::WorkspacePath;
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::{self, SecretName, WorkspaceId};
use crate::store::{SecretMeta, SecretScope};

/// Largest accepted secret value, in bytes.
pub(super) const MAX_SECRET_VALUE: usize = 64 * 1024;

/// `PUT …/secrets/:KEY` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct NewSecret {
    /// The value (at most 64 KiB). Stored encrypted, never shown back.
    pub value: String,
}

/// A secret as listed: its key and when it was last set, never its value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct SecretView {
    /// The key.
    pub key: String,
    /// Last set.
    pub updated_at: DateTime<Utc>,
}

impl From<SecretMeta> for SecretView {
    fn from(m: SecretMeta) -> Self {
        Self {
            key: m.name.as_str().to_owned(),
            updated_at: m.updated_at,
        }
    }
}

fn parse_key(raw: &str) -> Result<SecretName> {
    SecretName::parse(raw).map_err(|e| Error::BadRequest(e.to_string()))
}

fn parse_workspace(raw: &str) -> Result<WorkspaceId> {
    raw.parse()
        .map_err(|e: domain::IdError| Error::BadRequest(e.to_string()))
}

async fn put_secret(
    state: &AppState,
    scope: SecretScope,
    key: &str,
    body: NewSecret,
) -> Result<Json<SecretView>> {
    let name = parse_key(key)?;
    if body.value.len() > MAX_SECRET_VALUE {
        return Err(Error::PayloadTooLarge(format!(
            "the value of secret {name} is {} bytes; the limit is {MAX_SECRET_VALUE} bytes (64 KiB)",
            body.value.len()
        )));
    }
    let sealed = state.sealer.seal(scope, name.as_str(), &body.value);
    let now = domain::now();
    if !state.store.put_secret(scope, &name, &sealed, now).await? {
        return Err(Error::workspace_not_found());
    }
    // The key only: a value never reaches a log.
    tracing::info!(secret = %name, scope = ?scope, "secret set");
    Ok(Json(SecretView {
        key: name.as_str().to_owned(),
        updated_at: now,
    }))
}

async fn delete_secret(state: &AppState, scope: SecretScope, key: &str) -> Result<StatusCode> {
    let name = parse_key(key)?;
    if !state.store.delete_secret(scope, &name).await? {
        return Err(Error::NotFound(format!("no secret named {name}")));
    }
    tracing::info!(secret = %name, scope = ?scope, "secret deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Sets a workspace's secret.
#[utoipa::path(put, path = "/workspaces/{id}/secrets/{key}", tag = "secrets",
    params(("id" = String, Path, description = "workspace id"), ("key" = String, Path, description = "[A-Z_][A-Z0-9_]{0,127}")),
    request_body = NewSecret,
    responses((status = 200, body = SecretView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub(super) async fn set_workspace_secret(
    State(state): State<AppState>,
    _: Operator,
    Path((id, key)): Path<(String, String)>,
    Json(body): Json<NewSecret>,
) -> Result<Json<SecretView>> {
    let id = parse_workspace(&id)?;
    put_secret(&state, SecretScope::Workspace(id), &key, body).await
}

/// Deletes a workspace's secret.
#[utoipa::path(delete, path = "/workspaces/{id}/secrets/{key}", tag = "secrets",
    params(("id" = String, Path, description = "workspace id"), ("key" = String, Path, description = "the secret's key")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_workspace_secret(
    State(state): State<AppState>,
    _: Operator,
    Path((id, key)): Path<(String, String)>,
) -> Result<StatusCode> {
    let id = parse_workspace(&id)?;
    delete_secret(&state, SecretScope::Workspace(id), &key).await
}

/// Lists a workspace's own secret keys (never values).
#[utoipa::path(get, path = "/workspaces/{id}/secrets", tag = "secrets",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = [SecretView]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn list_workspace_secrets(
    State(state): State<AppState>,
    KnownWorkspace {
        rule: Operator(WorkspacePath(id), _),
        ..
    }: KnownWorkspace<Operator<WorkspacePath>>,
) -> Result<Json<Vec<SecretView>>> {
    let keys = state.store.list_secrets(SecretScope::Workspace(id)).await?;
    Ok(Json(keys.into_iter().map(SecretView::from).collect()))
}

/// The workspace reads its secrets: global ones merged under its own (its
/// own win), as `{"KEY": "value"}`.
#[utoipa::path(get, path = "/workspaces/{id}/secrets/values", tag = "secrets",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = BTreeMap<String, String>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_secret_values(
    State(state): State<AppState>,
    KnownWorkspace {
        rule: WorkspaceItself(WorkspacePath(id), _),
        ..
    }: KnownWorkspace<WorkspaceItself>,
) -> Result<Json<BTreeMap<String, String>>> {
    let sealed = state.store.sealed_secrets(id).await?;
    let mut values = BTreeMap::new();
    // Globals first, so the workspace's own value of a key replaces them.
    let (globals, own): (Vec<_>, Vec<_>) = sealed
        .into_iter()
        .partition(|s| s.scope == SecretScope::Global);
    for secret in globals.into_iter().chain(own) {
        let value = state
            .sealer
            .open(secret.scope, secret.name.as_str(), &secret.sealed)
            .map_err(|e| {
                Error::Internal(anyhow::Error::new(e).context(format!(
                    "secret {} of workspace {id} does not open",
                    secret.name
                )))
            })?;
        values.insert(secret.name.as_str().to_owned(), value);
    }
    Ok(Json(values))
}

/// Sets a global secret (inherited by every workspace).
#[utoipa::path(put, path = "/admin/secrets/{key}", tag = "secrets",
    params(("key" = String, Path, description = "[A-Z_][A-Z0-9_]{0,127}")),
    request_body = NewSecret,
    responses((status = 200, body = SecretView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub(super) async fn set_global_secret(
    State(state): State<AppState>,
    _: Operator,
    Path(key): Path<String>,
    Json(body): Json<NewSecret>,
) -> Result<Json<SecretView>> {
    put_secret(&state, SecretScope::Global, &key, body).await
}

/// Deletes a global secret.
#[utoipa::path(delete, path = "/admin/secrets/{key}", tag = "secrets",
    params(("key" = String, Path, description = "the secret's key")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_global_secret(
    State(state): State<AppState>,
    _: Operator,
    Path(key): Path<String>,
) -> Result<StatusCode> {
    delete_secret(&state, SecretScope::Global, &key).await
}

/// Lists the global secret keys (never values).
#[utoipa::path(get, path = "/admin/secrets", tag = "secrets",
    responses((status = 200, body = [SecretView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_global_secrets(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<Vec<SecretView>>> {
    let keys = state.store.list_secrets(SecretScope::Global).await?;
    Ok(Json(keys.into_iter().map(SecretView::from).collect()))
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(set_workspace_secret, delete_workspace_secret))
        .routes(routes!(list_workspace_secrets))
        .routes(routes!(get_secret_values))
        .routes(routes!(set_global_secret, delete_global_secret))
        .routes(routes!(list_global_secrets))
}
